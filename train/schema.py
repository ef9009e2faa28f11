"""The keys of the training slices: train (common and per stage), tokenize, deepspeed and
launcher. `train.common.extra` is the one pass-through: any LLaMA-Factory key, verbatim."""

from stagekit.schema import ANY, EACH, keys
from train.launch import LAUNCH_DEFAULTS
from train.render import _COMMON_KEYS, FREEZE_KEYS

COMMON = keys(*_COMMON_KEYS, "gradient_checkpointing", "pretokenize", "packing", extra=ANY)
# A stage may set its own packing; everything else per stage is what differs between stages.
STAGE = keys("data", "learning_rate", "global_batch_size", "trainable", "packing", *FREEZE_KEYS)
TRAIN = keys(common=COMMON, stages={EACH: STAGE}, freezes={EACH: keys(*(k.removeprefix("freeze_") for k in FREEZE_KEYS))})

LAUNCHER = keys("name", "nnodes", "nproc_per_node", "node_rank", "master_addr", "master_port",
                "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "partition", "max_num_timeout",
                "signal_delay_s", *LAUNCH_DEFAULTS)
TOKENIZE = keys("name", "partition", "cpus_per_task", "mem_gb", "timeout_min", "max_parallel")
# `config` is DeepSpeed's own JSON, passed to it as written (DeepSpeed checks its keys).
DEEPSPEED = keys("name", config=ANY)

SCHEMA = {"train": TRAIN, "tokenize": TOKENIZE, "deepspeed": DEEPSPEED, "launcher": LAUNCHER}
