"""The coverage check (`data check`, and run/plan's preflight) against a plain walk of the same tree.

    .venv/bin/python benchmarks/bench_coverage.py                    # 100k rows, 100k files
    .venv/bin/python benchmarks/bench_coverage.py --rows 1000000 --format array

1. Generates a CapRL-2M-shaped caption file (JSONL; --format array: one ShareGPT4V-style JSON
   array) of --rows rows with ~1 KB captions, each naming its own image under 2 prefixes x
   folders of 1000, and writes a tiny file (not a valid image: nothing decodes it) for all but
   1 in 100 of them. Reused when present.
2. Baseline: a plain recursive os.scandir walk of the image tree collecting every file name
   (what any "which files are there" check costs at least, without reading a single row).
3. Parse only: every row's image field read with orjson (JSONL) or the streaming array reader
   data_prep uses (array), nothing else: where the check's time goes.
4. The coverage check (data_prep.coverage.check_sources) of the source: parse every row's image
   field, list each folder once, count per prefix. Best of --repeat runs each.
5. The same check as `run` and `plan` make it again when nothing changed (reuse=True: the kept
   counts, validated by the caption files' and the folders' stats).
Target: < 10 s for 100k rows; printed with the ratio to the walk. The files were just written,
so the tree is in the page cache: this measures CPU cost, not a cold disk."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PER_FOLDER = 1000
PREFIXES = ("sharegpt4v/", "densefusion/")
TARGET_S = 10.0


def image_path(i: int) -> str:
    return f"{PREFIXES[i % 2]}{i // PER_FOLDER:05d}/{i:09d}.jpg"


def generate(work: Path, rows: int, fmt: str) -> Path:
    captions = work / ("captions.jsonl" if fmt == "jsonl" else "captions.json")
    done = work / f"done-{rows}-{fmt}"
    if done.exists():
        return captions
    rng = random.Random(0)
    words = "the a of in on with near left right red blue small large person dog car street sign text sky tree".split()
    blob = " ".join(rng.choice(words) for _ in range(20_000))
    rows_out = ({"image": image_path(i), "caption": blob[(i * 37) % 15_000:][:1000]} for i in range(rows))
    with open(captions, "w") as f:
        if fmt == "jsonl":
            for row in rows_out:
                f.write(json.dumps(row) + "\n")
        else:
            f.write("[\n" + ",\n".join(json.dumps({"id": str(r["image"]), "image": r["image"], "conversations": [
                {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": r["caption"]}]})
                for r in rows_out) + "\n]\n")
    images = work / "images"
    for i in range(rows):
        if i % 100 == 99:   # 1% missing: the check has something to report
            continue
        path = images / image_path(i)
        if i % PER_FOLDER == 0 or not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8x\xff\xd9")
    done.touch()
    return captions


def walk(root: str) -> int:
    """Every file name under root, by os.scandir: the baseline."""
    n, stack = 0, [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir():
                    stack.append(e.path)
                else:
                    n += 1
    return n


def parse_only(captions: Path, fmt: str) -> int:
    import orjson

    from data_prep.stream_json import ArrayReader

    if fmt == "array":
        return sum(1 for _, _, row in ArrayReader(captions) if row.get("image"))
    with open(captions, "rb") as f:
        return sum(1 for line in f if orjson.loads(line).get("image"))


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--format", choices=("jsonl", "array"), default="jsonl")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/caprl-bench-coverage")
    args = ap.parse_args()
    from data_prep.coverage import check_sources

    work = Path(args.workdir) / f"{args.rows}-{args.format}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    captions = generate(work, args.rows, args.format)
    print(f"data: {args.rows:,} rows ({captions.stat().st_size / 2**20:,.0f} MiB, {args.format}) in {work} "
          f"({time.perf_counter() - t0:.1f} s to make or reuse)")
    source = {"name": "bench", "reader": "caprl_jsonl" if args.format == "jsonl" else "sharegpt4v",
              "paths": [str(captions)], "image_root": str(work / "images"),
              "layout": {"origins": {p.strip("/"): {"provides": [p]} for p in PREFIXES}}}
    walk_s, files = best(lambda: walk(str(work / "images")), args.repeat)
    parse_s, _ = best(lambda: parse_only(captions, args.format), args.repeat)
    check_s, report = best(lambda: check_sources([("captions", source)]), args.repeat)
    check_sources([("captions", source)], work)   # keeps its counts in <work>/.manifests
    reuse_s, again = best(lambda: check_sources([("captions", source)], work, reuse=True), args.repeat)
    assert again.sources[0].rows == report.sources[0].rows
    s = report.sources[0]
    missing = sum(p.missing for p in s.prefixes)
    print(f"plain os.scandir walk: {walk_s:.2f} s ({files:,} files)")
    print(f"parse only:            {parse_s:.2f} s (every row's image field, nothing checked)")
    print(f"coverage check:        {check_s:.2f} s ({s.rows:,} rows, {missing:,} missing, "
          f"{report.folders_listed:,} folders listed) = {check_s / walk_s:.2f}x the walk, "
          f"{check_s / parse_s:.2f}x parsing alone, "
          f"{s.rows / check_s:,.0f} rows/s")
    print(f"again, nothing changed:  {reuse_s:.3f} s (kept counts; {check_s / reuse_s:,.0f}x faster)")
    ok = check_s < TARGET_S * args.rows / 100_000
    print(f"target < {TARGET_S * args.rows / 100_000:g} s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
