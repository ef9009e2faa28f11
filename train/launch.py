"""How a training stage is launched: one process, torchrun on one node, or many nodes.

LLaMA-Factory's own launcher reads NNODES / NODE_RANK / NPROC_PER_NODE / MASTER_ADDR /
MASTER_PORT and starts torchrun; every node's values are derived here from one launcher config
so the nodes cannot disagree on ranks or addresses, and `plan` prints them per node before anything runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping

# What `plan` prints for master_addr=auto: the shell expression a node of the job evaluates to
# the same host slurm_master_addr() finds at run time (plan itself runs outside SLURM).
SLURM_MASTER_EXPR = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'

# How long the nodes of one job wait for each other, offered to every launcher YAML as the base
# config `launcher_defaults`. A node that dies must fail the others' training in bounded time,
# never leave them hanging in a collective for a cluster allocation's lifetime.
LAUNCH_DEFAULTS = {
    # A rank waits this long for the others to join (init) and in every collective, then the
    # stage fails: LLaMA-Factory's ddp_timeout. Long enough for a slow checkpoint save by rank 0.
    "timeout_s": 1800,
    # Every node touches a heartbeat file this often while it trains; one silent for 3 beats is
    # named as lost in the failure message (train/nodes.py).
    "heartbeat_s": 10,
    # A node > 0 waits at most this long for node 0 to finish a stage it does not take part in
    # (data preparation and evaluation of a full-size run take hours), then fails.
    "follower_wait_s": 86400,
}


def slurm_master_addr() -> str:
    """The first host of the SLURM allocation: the same answer on every node."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise RuntimeError("launcher.master_addr=auto needs SLURM_JOB_NODELIST (run inside a SLURM job) "
                           "or set launcher.master_addr explicitly")
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def node_rank(launcher: Mapping) -> int:
    """This process's node in a multi-node job (0 for a single node, and for node 0)."""
    return int(launcher.get("node_rank", 0) or 0)


def node_timeout(launcher: Mapping) -> int:
    """Seconds the ranks wait for each other (rendezvous, collectives); the default for a launcher
    config built outside Hydra (benchmarks) that lacks the key."""
    return int(launcher.get("timeout_s", LAUNCH_DEFAULTS["timeout_s"]))


def world_size(launcher: Mapping) -> int:
    """Processes of a job: a launcher config, or a training stage's `world_size` slice."""
    return int(launcher["nnodes"]) * int(launcher["nproc_per_node"])


def node_env(launcher: Mapping, *, node_rank: int | None = None, deepspeed: bool = False,
             resolve: bool = True) -> dict[str, str]:
    """The environment of one node's launch (empty: a plain single process). resolve=False
    (plan) leaves master_addr=auto as SLURM_MASTER_EXPR instead of asking SLURM."""
    if world_size(launcher) == 1 and not deepspeed:
        return {}
    rank = launcher["node_rank"] if node_rank is None else node_rank
    return {
        "FORCE_TORCHRUN": "1",   # DeepSpeed needs torchrun even for one process
        "NNODES": str(launcher["nnodes"]),
        "NODE_RANK": str(rank),
        "NPROC_PER_NODE": str(launcher["nproc_per_node"]),
        "MASTER_ADDR": master_addr(launcher, resolve=resolve),
        "MASTER_PORT": str(launcher["master_port"]),
        # torchrun reads its options from PET_* too (LLaMA-Factory's command line has no room for
        # them): a node that never joins fails the others' rendezvous after timeout_s, not 600 s.
        "PET_RDZV_CONF": f"timeout={node_timeout(launcher)}",
    }


def master_addr(launcher: Mapping, *, resolve: bool = True) -> str:
    if launcher["master_addr"] != "auto":
        return str(launcher["master_addr"])
    return slurm_master_addr() if resolve else SLURM_MASTER_EXPR


def all_node_envs(launcher: Mapping, *, deepspeed: bool = False, resolve: bool = True) -> list[dict[str, str]]:
    return [node_env(launcher, node_rank=r, deepspeed=deepspeed, resolve=resolve)
            for r in range(int(launcher["nnodes"]))]


def train_command(yaml_path: Path, *, projector_parts: bool = False) -> list[str]:
    """LLaMA-Factory's command; projector_parts: through train/lf_train.py, which first registers
    the parts of a new projector that LLaMA-Factory files under the vision tower (Qwen3-VL)."""
    if projector_parts:
        return ["python", "-m", "train.lf_train", "train", str(yaml_path)]
    return ["llamafactory-cli", "train", str(yaml_path)]
