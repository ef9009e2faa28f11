"""The `recaption` stage kind: new captions for an existing image set from a captioner endpoint,
written as a caption source the data_prep readers accept (paper Table 2: the same images, only
the captioner differs).

    caption source with `recaption: {images: <source> | <list file>}`
      -> data_prep.recaption_images (when the images come from a source: its checks reject
         broken images before any request is paid for)
      -> recaption: journal.jsonl (one line per finished image, fsynced as it goes)
                    -> captions.jsonl ({"image", "caption"}, caprl_jsonl format, image-set order)
      -> data_prep.captions (reads recaption://captions.jsonl) -> train -> evaluate

What decides the output: the captioner's identity, prompt and sampling (recaption/endpoint.py
OUTPUT_KEYS), the image set (its data_prep fingerprint, or the list file's path) and its root.
Run-only: URL, key variable, concurrency, time-outs, retries, failure budget. A killed or failed
run is resumed by running again: the journal says which images are done, and only the others
are requested."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

from recaption.endpoint import CAPTIONER_DEFAULTS
from stagekit import StageRun, write_json_atomic

KIND = "recaption"
VERSION = 1
# a captioner's optional keys, offered to the captioner YAMLs (`- /captioner_defaults@_here_`)
CONFIG_DEFAULTS = {"captioner_defaults": dict(CAPTIONER_DEFAULTS)}
PREFIX = "recaption://"
IMAGES_STAGE = "data_prep.recaption_images"
JOURNAL, CAPTIONS, FAILURES, RUNS = "journal.jsonl", "captions.jsonl", "failures.jsonl", "runs.jsonl"


def block(source: Mapping) -> Mapping | None:
    """The caption source's `recaption` block, or None for an ordinary source."""
    return source.get("recaption") or None


def images_from_source(rc: Mapping) -> bool:
    return isinstance(rc.get("images"), Mapping)


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    from recaption.endpoint import output_config, run_settings

    rc = block(cfg["captions"])
    if rc is None:
        return []
    cap = cfg["captioner"]
    from_source = images_from_source(rc)
    config = {"captioner": output_config(cap), "image_root": _image_root(cfg["captions"], rc),
              "image_list": None if from_source else rc["images"]}
    inputs = {"images": IMAGES_STAGE} if from_source else {}
    what = rc["images"]["label"] if from_source else rc["images"]
    return [{"name": "recaption", "config": config, "inputs": inputs, "resumable": True,
             "settings": {"captioner": run_settings(cap)},
             "summary": f"re-caption the images of {what} with {cap.get('label') or cap['name']} ({cap['model']})"}]


def _image_root(source: Mapping, rc: Mapping) -> str:
    return rc["images"]["image_root"] if images_from_source(rc) else source["image_root"]


def problems(cfg: Mapping) -> list[str]:
    from recaption.endpoint import EndpointConfigError, parse_endpoint

    rc = block(cfg["captions"])
    if rc is None:
        return []
    out = []
    try:
        parse_endpoint(cfg["captioner"])
    except EndpointConfigError as exc:
        out.append(str(exc))
    images = rc.get("images")
    if not images:
        out.append("captions.recaption.images: name a caption source (its images) or an image list file")
    unknown = sorted(set(rc) - {"images"})
    if unknown:
        out.append(f"captions.recaption: unknown keys {', '.join(unknown)}; valid keys: images")
    if PREFIX not in " ".join(map(str, cfg["captions"].get("paths") or [])):
        out.append(f"captions.paths must read the recaption output ({PREFIX}{CAPTIONS})")
    return out


def describe(view) -> list[str]:
    """plan's lines: what the stage will cost (recaption/cost.py)."""
    from recaption.cost import recaption_cost

    return recaption_cost(view)


def run(job: StageRun) -> dict:
    from recaption.endpoint import endpoint_from
    from recaption.images import listed_images, prepared_images

    c = job.config
    ep = endpoint_from(c["captioner"], job.settings["captioner"])
    keys = (prepared_images(job.inputs["images"], c["image_root"]) if "images" in job.inputs
            else listed_images(c["image_list"], c["image_root"]))
    where = f"{len(ep.urls)} endpoints" if len(ep.urls) > 1 else "endpoint"
    job.log(f"{len(keys)} images under {c['image_root']}; captioner {ep.name} ({ep.model}), "
            f"concurrency {ep.concurrency} per {where}")
    out = caption_job(job, ep, keys, Path(c["image_root"]))
    return write_source(job.out_dir, keys, out, ep, job.log)


def caption_job(job: StageRun, ep, keys: list[str], image_root: Path, samples: int = 1, empty_ok: bool = False):
    """The stage's images captioned where the captioner says: here, or as a SLURM array
    (`captioner.slurm`: one task per replica, each serving its own)."""
    if not ep.slurm:
        return asyncio.run(caption_images(ep, keys, image_root, job.out_dir, job.log, samples, empty_ok))
    from recaption.slurm import caption_on_slurm

    values = {**{k: v for k, v in job.config["captioner"].items() if k != "served"}, **job.settings["captioner"]}
    return caption_on_slurm(values, ep.slurm, keys, image_root, job.out_dir, job.log, samples, empty_ok)


async def caption_images(ep, keys: list[str], image_root: Path, out_dir: Path, log, samples: int = 1,
                         empty_ok: bool = False):
    """Caption every image of `keys` that the journal in out_dir lacks; the engine's account.
    empty_ok: an empty caption is the captioner's answer (Prism scores it, as the reference does);
    else it is asked again, then a failure (a training caption source has no use for it)."""
    from recaption.client import image_messages, image_url
    from recaption.engine import Item, run_on_endpoints

    def make(key: str) -> Item:
        return Item(key, image_messages(ep, image_url(image_root / key)), n=samples, empty_ok=empty_ok)

    return await run_on_endpoints(ep, keys, make, out_dir, log=log, what="images", journal=JOURNAL, runs=RUNS)


def progress(out_dir: Path, config: Mapping) -> dict | None:
    """How far the requests are, from the engine's progress.json (any process can read it):
    done/total, images/s, tokens/s, ETA and per endpoint answered and failed."""
    from recaption.engine import PROGRESS

    try:
        return json.loads((Path(out_dir) / PROGRESS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# Above this share of captions cut off at max_tokens the stage warns: a few long captions are normal,
# many mean the budget is too small for this captioner (its captions end mid-sentence).
CUT_WARN_FRACTION = 0.05


def write_source(out_dir: Path, keys: list[str], out, ep, log=print) -> dict:
    """captions.jsonl in image-set order (not completion order: the same captions give the same
    file), failures.jsonl, and the stage's summary; raises when too many images failed."""
    from recaption.engine import check_failures
    from recaption.journal import offsets_in_order

    journal = out_dir / JOURNAL
    tmp = out_dir / f".{CAPTIONS}.tmp"
    written, cut = 0, 0
    with open(journal, "rb") as src, open(tmp, "w", encoding="utf-8") as dst:
        for offset in offsets_in_order(journal, keys):
            src.seek(offset)
            record = json.loads(src.readline())
            dst.write(json.dumps({"image": record["key"], "caption": record["texts"][0]}, ensure_ascii=False) + "\n")
            written += 1
            cut += (record.get("finish_reasons") or [None])[0] == "length"
    tmp.replace(out_dir / CAPTIONS)
    problem = check_failures(out, ep.max_failed_fraction, out_dir / FAILURES, "images")
    summary = {"images": len(keys), "captioned": written, "failed": len(out.failed), "cut_at_max_tokens": cut,
               "requested_this_run": out.total - out.done_before, "seconds": round(out.seconds, 1),
               "images_per_s": round(out.succeeded / out.seconds, 3) if out.seconds else None,
               "tokens_per_s": round(out.tokens / out.seconds, 1) if out.seconds else None}
    write_json_atomic(out_dir / "summary.json", summary)
    if written and cut / written > CUT_WARN_FRACTION:
        log(f"warning: {cut} of {written} captions stopped at max_tokens={ep.sampling['max_tokens']} "
            "(finish_reason 'length'): they end mid-sentence; raise max_tokens or check the captioner")
    if problem:
        raise RuntimeError(problem)
    return summary
