"""From a composed config to the ordered chain of stages of one run.

    world (embedded only) -> init_vlm -> data_prep.{align_data,captions,sft_data}
      -> train.alignment -> train.further_pretrain (not for vanilla) -> train.sft
      -> evaluate -> report

Each stage's config holds only what decides its output, so stages that do not depend on the
caption source (world, init_vlm, alignment data and training, SFT data) fingerprint the same in
every job of a caption-source sweep and are computed once.
"""

from __future__ import annotations

from typing import Any, Mapping

from harness.stage import Stage
from train.render import fingerprinted

WORLD_PREFIX = "world://"
TRAIN_STAGES = ("alignment", "further_pretrain", "sft")
DATA_ROLES = ("align_data", "captions", "sft_data")
# Keys of a source config that do not change what data_prep writes (how many processes, what plan
# estimates, where prefetch downloads from): kept out of the fingerprint, so changing them reruns
# nothing. The data_prep step reads `workers` from the run config.
SOURCE_RUN_ONLY = ("workers", "expected_rows", "hub")


def uses_world(node: Any) -> bool:
    if isinstance(node, str):
        return node.startswith(WORLD_PREFIX)
    if isinstance(node, Mapping):
        return any(uses_world(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(uses_world(v) for v in node)
    return False


def resolve_world(node: Any, world_dir: str | None) -> Any:
    """Replace world://x by <world_dir>/x everywhere in a config node."""
    if isinstance(node, str) and node.startswith(WORLD_PREFIX):
        if world_dir is None:
            raise ValueError(f"{node!r} needs the embedded world, but world.enabled is false")
        return f"{world_dir}/{node[len(WORLD_PREFIX):]}"
    if isinstance(node, Mapping):
        return {k: resolve_world(v, world_dir) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_world(v, world_dir) for v in node]
    return node


def _with_world(inputs: dict[str, str], config: Any) -> dict[str, str]:
    return {**inputs, "world": "world"} if uses_world(config) else inputs


def _stage(name, kind, config, inputs=None, **kw) -> Stage:
    return Stage(name=name, kind=kind, config=config, inputs=_with_world(inputs or {}, config), **kw)


def has_further_pretraining(cfg: Mapping) -> bool:
    return cfg["captions"].get("reader") is not None


def build_chain(cfg: Mapping) -> list[Stage]:
    stages: list[Stage] = []
    if cfg["world"]["enabled"]:
        stages.append(Stage("world", "world", config=dict(cfg["world"]), summary="build the embedded offline world"))
    stages.append(_init_vlm(cfg))
    stages += _data_prep(cfg)
    stages += _training(cfg)
    stages.append(_evaluate(cfg, model_from=stages[-1].name))
    # The report reads the scores and, for the loss plot, each training stage's trainer state.
    report_inputs = {"results": "evaluate", **{s.name: s.name for s in stages if s.kind == "train"}}
    if cfg["eval"].get("reference_model"):
        stages.append(_reference(cfg))
        report_inputs["reference"] = "evaluate.reference"
    stages.append(Stage("report", "report", config={"run": run_label(cfg)}, inputs=report_inputs,
                        summary="ablation table of this run"))
    return _until(stages, cfg.get("until"))


def run_label(cfg: Mapping) -> str:
    return f"{cfg['experiment_name']}/{cfg['backbone']['name']}-{cfg['captions']['name']}"


def _init_vlm(cfg: Mapping) -> Stage:
    bb = cfg["backbone"]
    keys = ("vit_source", "llm_source", "vit_revision", "llm_revision", "projector_init", "dtype")
    config = {k: bb[k] for k in keys} | {"seed": cfg["seed"]}
    return _stage("init_vlm", "init_vlm", config,
                  summary=f"ViT of {bb['vit_source']} + LLM {bb['llm_source']} + new projector ({bb['projector_init']})")


def _data_prep(cfg: Mapping) -> list[Stage]:
    out = []
    for role in DATA_ROLES:
        source = cfg[role]
        if source.get("reader") is None:
            continue  # vanilla: no caption data
        config = {
            "source": {k: v for k, v in source.items() if k not in SOURCE_RUN_ONLY},
            "pixels": dict(cfg["pixels"]),
            "cutoff_len": cfg["train"]["common"]["cutoff_len"],
        }
        out.append(_stage(f"data_prep.{role}", "data_prep", config, {"model": "init_vlm"},
                          summary=f"{source['label']} ({source['reader']}) -> LLaMA-Factory sharegpt shards"))
    return out


def _training(cfg: Mapping) -> list[Stage]:
    out, prev = [], "init_vlm"
    launcher = cfg["launcher"]
    for name in TRAIN_STAGES:
        spec = dict(cfg["train"]["stages"][name])
        if name == "further_pretrain" and not has_further_pretraining(cfg):
            continue
        config = {
            "name": name,
            "stage": spec,
            "common": fingerprinted(cfg["train"]["common"]),  # retention/logging do not change the weights
            "deepspeed": cfg["deepspeed"],
            # Only the world size decides the output; addresses and ranks do not.
            "world_size": {"nnodes": int(launcher["nnodes"]), "nproc_per_node": int(launcher["nproc_per_node"])},
            "pixels": dict(cfg["pixels"]),
            "seed": cfg["seed"],
        }
        data_label = cfg[spec["data"]]["label"]
        out.append(Stage(f"train.{name}", "train", config, {"model": prev, "data": f"data_prep.{spec['data']}"},
                         resumable=True,
                         summary=f"{data_label}, trains {spec['trainable']}, lr {spec['learning_rate']:g}, "
                                 f"global batch {spec['global_batch_size']}"))
        prev = f"train.{name}"
    return out


def _eval_settings(cfg: Mapping) -> dict:
    # The reference model is its own stage; it must not change the trained model's fingerprint.
    return {k: v for k, v in cfg["eval"].items() if k != "reference_model"}


def _reference(cfg: Mapping) -> Stage:
    """A stock model evaluated with the same settings: a calibration row (pain point 14).
    Independent of the caption source, so one evaluation serves a whole sweep."""
    ref = cfg["eval"]["reference_model"]
    config = {
        "model": ref,
        "benchmarks": dict(cfg["benchmarks"]),
        "eval": _eval_settings(cfg),
        "pixels": dict(cfg["pixels"]),
        "meta": {"run": f"reference/{ref}", "backbone": cfg["backbone"]["label"],
                 "caption_source": f"reference: {ref}"},
    }
    return _stage("evaluate.reference", "evaluate", config, summary=f"lmms-eval on the stock model {ref}")


def _evaluate(cfg: Mapping, model_from: str) -> Stage:
    config = {
        "benchmarks": dict(cfg["benchmarks"]),
        "eval": _eval_settings(cfg),
        "pixels": dict(cfg["pixels"]),
        "meta": {"run": run_label(cfg), "backbone": cfg["backbone"]["label"],
                 "caption_source": cfg["captions"]["label"]},
    }
    names = ", ".join(t["benchmark"] for t in cfg["benchmarks"]["tasks"])
    return _stage("evaluate", "evaluate", config, {"model": model_from}, summary=f"lmms-eval: {names}")


def _until(stages: list[Stage], until: str | None) -> list[Stage]:
    if until is None:
        return stages
    names = [s.name for s in stages]
    if until not in names:
        raise ValueError(f"until={until!r} is not a stage of this run; stages: {', '.join(names)}")
    return stages[: names.index(until) + 1]
