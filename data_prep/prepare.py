"""The data_prep stage: one caption or SFT source -> LLaMA-Factory dataset known to load, plus an
exact account of what was dropped and why.

    prepare_dataset(source, out_dir, dataset_name=..., pixels=..., cutoff_len=...) writes
      out_dir/<dataset_name>/shard-00000.jsonl ...   sharegpt rows (the only files in that folder)
      out_dir/dataset_info.json                      the LLaMA-Factory entry
      out_dir/rejects.jsonl                          file, line, index, id, reason, detail per dropped row
      out_dir/manifest.json                          counts, reasons, shard hashes, tokens, config; written last
    One dataset per out_dir (outdir.py says why).

Flow: resolve files and field names -> [pass 1: subset threshold] -> pass 2: batches of rows go to
worker processes (convert.Converter) and come back in order to the writers -> floor check ->
publish by renaming the staging folder. A crash leaves only the staging folder, which the next
run deletes first; the same inputs and config give byte-identical outputs whatever `workers` is."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

from data_prep import outdir
from data_prep.convert import Plan
from data_prep.tokens import DEFAULT_GRID, DEFAULT_SYSTEM, VisualGrid
from data_prep.errors import DataPrepError
from data_prep.manifest import Totals, build_manifest, floor_error
from data_prep.readers import READERS, resolve_fields
from data_prep.source import DEFAULT_PROMPTS, SourceSpec, input_files, parse_source, plain
from data_prep.stream_json import is_json_array, iter_batches
from data_prep.subset import BottomN
from data_prep.workers import Workers, worker_count
from data_prep.writer import RejectsWriter, ShardWriter

# JSONL batch sizes: 512 KiB stays in the CPU caches while converted (measured faster than 4 MiB);
# with image checks a row costs ~10x more, and smaller batches spread a short listing over the workers.
CHUNK_BYTES = 512 << 10
CHECKED_CHUNK_BYTES = 64 << 10


def prepare_dataset(source: Mapping, out_dir: Path, *, dataset_name: str, pixels: Mapping, cutoff_len: int,
                    tokenizer_dir: str | Path | None = None, seed: int = 0, workers: int | None = None,
                    log=print) -> dict:
    """Convert, validate and account for one source; returns the manifest (also in out_dir/manifest.json).

    `seed` is used unless the source sets its own `seed`; `workers` (a count) overrides the
    source's `workers`. Raises DataPrepError on a bad config, when out_dir holds another dataset,
    or when the kept fraction falls below the source's min_kept_fraction."""
    spec = parse_source(source)
    out_dir = Path(os.path.abspath(out_dir))
    if spec.image_root is None:
        raise DataPrepError(f"source {spec.name!r}: key 'image_root' is required (image paths resolve against it)")
    files = input_files(spec)
    reader = READERS[spec.reader]
    fields = [resolve_fields(reader, f, spec.field_map) for f in files]
    tokenizer_json, token_info = load_tokenizer(tokenizer_dir, spec.check_images)
    grid = load_grid(tokenizer_dir, token_info)
    system = default_system(tokenizer_dir, token_info)
    seed = int(spec.seed if spec.seed is not None else seed)
    plan = _plan(spec, files, fields, pixels, cutoff_len, seed, tokenizer_json, grid, system)
    total_bytes = sum(f.stat().st_size for f in files)
    n_workers = worker_count(spec.workers if workers is None else workers, files, total_bytes,
                             check_images=spec.check_images, exact_tokens=tokenizer_json is not None)
    log(f"data_prep {spec.name}: {len(files)} file(s), {total_bytes / 2**20:,.1f} MiB, reader {spec.reader}, "
        f"{n_workers} worker(s), text tokens by {token_info['text']}")

    staging = outdir.start(out_dir, dataset_name)
    chunk = CHECKED_CHUNK_BYTES if spec.check_images else CHUNK_BYTES

    def batches():  # one pass over every file; called once per pass
        return (b for idx, path in enumerate(files) for b in iter_batches(path, idx, chunk_bytes=chunk))

    with Workers(plan, n_workers) as pool:
        threshold, subset = None, None
        if spec.subset_size:
            threshold, subset = _select_subset(pool, batches(), spec, total_bytes, log)
        totals, shards = _convert(pool, batches(), files, spec, dataset_name, staging, threshold, total_bytes, log)
    if subset is not None:
        subset["rows_outside_subset"] = totals.outside
    config = {"source": spec.as_dict(), "pixels": dict(plain(pixels)), "cutoff_len": int(cutoff_len), "seed": seed,
              "tokenizer_dir": None if tokenizer_dir is None else str(tokenizer_dir)}
    inputs = [{"path": str(f), "bytes": f.stat().st_size, "format": "json array" if is_json_array(f) else "jsonl",
               "fields": fl} for f, fl in zip(files, fields)]
    error = floor_error(spec, totals, out_dir / outdir.REJECTS)
    manifest = build_manifest(spec=spec, name=dataset_name, out_dir=out_dir, totals=totals, shards=shards,
                              inputs=inputs, config=config, token_info=token_info, subset=subset,
                              status="failed" if error else "complete")
    outdir.publish(staging, out_dir, dataset_name, manifest, ok=error is None)
    if error:
        raise DataPrepError(error)
    log(f"data_prep {spec.name}: kept {totals.kept:,} of {totals.rows:,} rows; rejected "
        f"{dict(manifest['rejected']) or 'none'}; {len(shards)} shard(s) in {out_dir / dataset_name}")
    return manifest


def load_tokenizer(tokenizer_dir, images_checked: bool) -> tuple[str | None, dict]:
    """The fast tokenizer's JSON (workers rebuild it without importing transformers) and how tokens are counted."""
    visual = "from image headers" if images_checked else "upper bound (max_pixels): images not checked"
    if tokenizer_dir is None:
        return None, {"text": "estimate: ceil(utf-8 bytes / 4) per text piece, 1 per special token",
                      "visual": visual, "tokenizer_sha256": None}
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as exc:  # transformers raises many types for a folder without a tokenizer
        raise DataPrepError(f"tokenizer_dir {tokenizer_dir}: cannot load a tokenizer ({exc})") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise DataPrepError(f"tokenizer_dir {tokenizer_dir}: a fast (tokenizers) tokenizer is needed")
    text = backend.to_str()
    return text, {"text": "tokenizer: qwen2_vl template pieces counted exactly", "visual": visual,
                  "tokenizer_sha256": hashlib.sha256(text.encode()).hexdigest()}


def load_grid(model_dir, token_info: dict) -> VisualGrid:
    """The model's visual unit from its processor config (Qwen2.5-VL 28 px, Qwen3-VL 32 px); noted in token_info."""
    names = ("preprocessor_config.json", "processor_config.json")
    if model_dir is None or not any((Path(model_dir) / n).is_file() for n in names):
        return DEFAULT_GRID  # a tokenizer-only folder: Qwen2.5-VL's grid within the pixel budget
    try:
        grid = VisualGrid.from_model_dir(model_dir)
    except ValueError as err:
        raise DataPrepError(f"tokenizer_dir {model_dir}: {err}") from None
    if grid.unit != DEFAULT_GRID.unit:  # Qwen2.5-VL manifests keep their wording
        token_info["visual_unit_px"] = grid.unit
    return grid


def default_system(model_dir, token_info: dict) -> str | None:
    """The system turn the model's training template adds to rows without one. Qwen3-VL models train with
    LLaMA-Factory's qwen3_vl_nothink template (as their chat template renders prompts), which adds none."""
    path = None if model_dir is None else Path(model_dir) / "config.json"
    if path is None or not path.is_file():
        return DEFAULT_SYSTEM
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise DataPrepError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if model_type != "qwen3_vl":
        return DEFAULT_SYSTEM
    token_info["template"] = "qwen3_vl_nothink: no default system turn"
    return None


def _plan(spec: SourceSpec, files, fields, pixels, cutoff_len, seed, tokenizer_json, grid, system) -> Plan:
    prompts = None if spec.prompts == "source" else tuple(spec.prompts or DEFAULT_PROMPTS)
    return Plan(reader=spec.reader, files=tuple(str(f) for f in files), fields=tuple(fields),
                image_root=os.path.normpath(os.path.abspath(spec.image_root)),
                relative_paths=spec.image_paths == "relative", check_images=spec.check_images,
                full_decode=spec.full_decode, min_image_side=spec.min_image_side,
                max_image_pixels=spec.max_image_pixels, prompts=prompts, seed=seed, match_key=spec.match_key,
                path_prefix=spec.path_prefix, strip_prefix=spec.match_strip_prefix,
                truncate=spec.over_cutoff == "truncate", cutoff_len=int(cutoff_len),
                min_pixels=int(pixels["min_pixels"]), max_pixels=int(pixels["max_pixels"]),
                tokenizer_json=tokenizer_json, grid=grid, default_system=system)


def _select_subset(pool, batches, spec: SourceSpec, total_bytes: int, log) -> tuple:
    bottom = BottomN(int(spec.subset_size))
    with _Progress(f"{spec.name} subset", total_bytes, log) as progress:
        for res in pool.map("keys", batches):
            bottom.add(res.hashes, [res.file_idx] * len(res.hashes), res.positions)
            progress.update(res.nbytes, len(res.hashes))
    threshold = bottom.threshold()
    log(f"data_prep {spec.name}: subset of {min(bottom.seen, bottom.n):,} among {bottom.seen:,} keyed rows "
        f"(match_key {spec.match_key})")
    return threshold, {"size": int(spec.subset_size), "match_key": spec.match_key, "rows_with_key": bottom.seen}


def _convert(pool, batches, files, spec: SourceSpec, name: str, staging: Path, threshold, total_bytes: int, log):
    names = [str(f) for f in files]
    shards = ShardWriter(staging / name, spec.rows_per_shard)
    rejects = RejectsWriter(staging / (outdir.REJECTS + ".part"), names)
    totals = Totals()
    with _Progress(f"{spec.name} convert", total_bytes, log) as progress:
        for res in pool.map("convert", batches, threshold):
            shards.add(res.out, res.ends, res.has_image)
            rejects.add(res.file_idx, res.rejects)
            totals.add(res, names)
            progress.update(res.nbytes, res.rows + res.outside + res.outside_prefix, kept=totals.kept)
    rejects.close()
    return totals, shards.close()


class _Progress:
    """A tqdm bar over input bytes with the row rate alongside; without a terminal, a log line a minute."""

    def __init__(self, desc: str, total_bytes: int, log, every_s: float = 60.0):
        from tqdm import tqdm

        self.desc, self.log, self.every_s = desc, log, every_s
        self.bar = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                        disable=None, mininterval=0.5, dynamic_ncols=True)
        self.rows, self.start = 0, time.perf_counter()
        self.last_log = self.start

    def update(self, nbytes: int, rows: int, **extra) -> None:
        self.rows += rows
        now = time.perf_counter()
        rate = self.rows / max(now - self.start, 1e-9)
        if not self.bar.disable:
            self.bar.set_postfix(rows=f"{self.rows:,}", rate=f"{rate:,.0f} rows/s", **extra, refresh=False)
            self.bar.update(nbytes)
        elif now - self.last_log >= self.every_s:
            self.log(f"{self.desc}: {self.rows:,} rows, {rate:,.0f} rows/s")
            self.last_log = now

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        elapsed = time.perf_counter() - self.start
        if exc[0] is None:
            self.log(f"{self.desc}: {self.rows:,} rows in {elapsed:.1f} s ({self.rows / max(elapsed, 1e-9):,.0f} rows/s)")
