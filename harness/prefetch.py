"""`python -m harness prefetch [overrides]`: download what a config needs while online, so the
run itself can go offline (a cluster's compute nodes often have no network): the two backbone checkpoints, the caption/SFT
datasets (into paths.data_root/<folder of the configured paths>), their images (each source's
`layout`: fetched and unpacked by data_prep/unpack.py, then counted by the coverage check), and
the benchmark datasets."""

from __future__ import annotations

import sys
from pathlib import Path

from data_prep.stage import ROLES
from harness.chain import uses_world


class PrefetchError(RuntimeError):
    pass


def dataset_target(source: dict) -> Path:
    """The folder a hub dataset is downloaded into: the parent of its first configured path."""
    return Path(source["paths"][0]).parent


def download_dataset(source: dict, log=print) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    hub, target = source["hub"], dataset_target(source)
    log(f"{source['label']}: {hub['repo_id']} -> {target}")
    try:
        snapshot_download(repo_id=hub["repo_id"], repo_type=hub.get("repo_type", "dataset"), local_dir=target,
                          ignore_patterns=image_archives(source, hub["repo_id"]) or None)
    except (LocalEntryNotFoundError, OSError) as exc:
        raise PrefetchError(f"cannot download {hub['repo_id']} for captions/{source['name']} "
                            f"(offline? HF_HUB_OFFLINE={__import__('os').environ.get('HF_HUB_OFFLINE', '0')}): {exc}")
    return target


def image_archives(source: dict, repo_id: str) -> list[str]:
    """The patterns of the source's image archives in its own dataset repo: its layout fetches
    and unpacks them (into .downloads), so the caption download leaves them out."""
    origins = ((source.get("layout") or {}).get("origins") or {}).values()
    return [p for o in origins if (o.get("hub") or {}).get("repo_id") == repo_id for p in o.get("files") or []]


def prefetch(cfg: dict, log=print) -> int:
    """Download what the composed, checked run config `cfg` needs; 0 when all of it arrived. Each
    part is tried even when one before it failed (an unreachable benchmark dataset does not keep
    the images from being fetched); every failure is named at the end."""
    problems = []
    for part in (_backbone, _datasets, _reference_model, _benchmarks, _images):
        try:
            problems += part(cfg, log) or []
        except Exception as exc:  # noqa: BLE001 - one line for the user, whatever failed
            problems.append(str(exc))
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


def _backbone(cfg: dict, log) -> None:
    if not uses_world(cfg["backbone"]):
        from init_vlm.sources import VISION_PREFIXES, resolve_source

        bb = cfg["backbone"]
        # the ViT source gives only its vision tower: fetch only the shards that hold it
        log(f"backbone vit_source: {resolve_source(bb['vit_source'], bb['vit_revision'], only_prefixes=VISION_PREFIXES)}")
        log(f"backbone llm_source: {resolve_source(bb['llm_source'], bb['llm_revision'])}")


def _datasets(cfg: dict, log) -> None:
    for role in ROLES:
        source = cfg[role]
        if source.get("hub") and not uses_world(source):
            download_dataset(source, log)


def _reference_model(cfg: dict, log) -> None:
    reference = cfg["eval"].get("reference_model")
    if reference:  # the calibration row's stock model, read by lmms-eval from the HF cache
        from huggingface_hub import snapshot_download

        log(f"reference model: {snapshot_download(repo_id=reference)}")


def _benchmarks(cfg: dict, log) -> None:
    from evaluation import prefetch as prefetch_benchmarks

    prefetch_benchmarks(cfg["benchmarks"], log=log)


def _images(cfg: dict, log) -> list[str]:
    """Last: the images are the largest part, and their coverage table ends the output."""
    from data_prep.coverage import run_sources
    from data_prep.unpack import fill_sources

    return fill_sources(run_sources(cfg), cfg["paths"]["data_root"], log)
