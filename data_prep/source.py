"""The `source` mapping (one Hydra YAML of configs/hydra/{captions,align_data,sft_data}/) and its checks.

Schema (every key but name, reader and paths is optional):

    name: caprl_2m              # config name; also the LLaMA-Factory dataset name by default
    label: CapRL-2M             # the paper's name (reports only)
    reader: caprl_jsonl         # caprl_jsonl | sharegpt4v | densefusion | llava | open_llava_next
    paths: [/abs/file.jsonl]    # files or folders (folders: every *.json / *.jsonl inside, sorted);
                                #   *.jsonl is JSON Lines, *.json a JSON array when it starts with '['
    image_root: /abs/images     # image paths resolve against it and may never escape it
    field_map: {}               # e.g. {image: image_path, caption: text, id: uid}; detected when empty
    path_prefix: null           # a string or list: keep only rows whose image path (relative to
                                #   image_root; the first image of a conversation row) starts with one;
                                #   the others, text-only rows included, are outside the dataset: counted
                                #   in the manifest, not rejected (one origin of a mixed source, Table 2)
    match_key: path             # path | basename | id: what "the same image" means across sources
    match_strip_prefix: null    # a string or list: the first that starts the image path is cut off
                                #   before the path is used as the match key, so that e.g. CapRL-2M's
                                #   "sharegpt4v/sam/x.jpg" and ShareGPT4V's "sam/x.jpg" are one image
    subset_size: null           # N: keep the N rows whose seeded hash of the match key is smallest
    seed: 0                     # subset and prompt choice (overrides prepare_dataset's seed)
    prompts: null               # user instructions for caption rows; null -> DEFAULT_PROMPTS;
                                #   "source" keeps the row's own instruction (conversation formats).
                                #   The pick hashes the match key, not the row id: the same image gets
                                #   the same instruction in every caption source (a fair comparison)
    over_cutoff: drop           # drop | truncate (truncate shortens the last assistant message)
    min_kept_fraction: 0.9      # fail the stage when fewer rows survive
    check_images: true          # false: no file access at all (visual tokens become an upper bound)
    full_decode: false          # decode every image instead of reading headers
    min_image_side: 8           # "too small"
    max_image_pixels: 178956970 # decompression-bomb bound (PIL's default)
    image_paths: absolute       # absolute | relative (relative: train with media_dir = image_root)
    rows_per_shard: 100000
    workers: null               # processes; null: os.cpu_count() when the work is worth starting
                                #   them (prepare.worker_count). Outputs do not depend on it.
    hub: {...}                  # ignored here (downloads are the harness's job)
    expected_rows: 1246901      # ignored here: the published size, for `plan`'s cost estimate
    layout: {origins: ...}      # ignored here: where the images come from (layout.py), for
                                #   prefetch and `data check`
    recaption: {images: ...}    # ignored here: the recaption stage's block (recaption/stage.py);
                                #   paths then read recaption://captions.jsonl
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_prep.errors import DataPrepError

DEFAULT_PROMPTS = (
    "Please describe this image in detail.",  # the paper's Prism captioning prompt
    "Describe this image in detail.",
    "Write a detailed description of this image.",
    "Provide a comprehensive description of everything you see in this image.",
    "What is in this image? Describe it thoroughly, including objects, text, layout and colors.",
)

# The one place a source's optional keys get their defaults: parse_source fills them, and the
# harness gives every source YAML this as its base config, so a YAML holds only what differs.
SOURCE_DEFAULTS = dict(label=None, image_root=None, field_map={}, path_prefix=None, match_key="path",
                 match_strip_prefix=None, subset_size=None, seed=None, prompts=None, over_cutoff="drop",
                 min_kept_fraction=0.9, check_images=True, full_decode=False, min_image_side=8,
                 max_image_pixels=178956970, image_paths="absolute", rows_per_shard=100_000, workers=None)
_IGNORED = ("hub", "expected_rows", "recaption", "layout")   # recaption: recaption/stage.py; layout: layout.py
_CHOICES = {"over_cutoff": ("drop", "truncate"), "match_key": ("path", "basename", "id"),
            "image_paths": ("absolute", "relative")}
_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    reader: str
    paths: tuple[str, ...]
    label: str | None = None
    image_root: str | None = None
    field_map: dict = field(default_factory=dict)
    path_prefix: tuple[str, ...] | None = None
    match_key: str = "path"
    match_strip_prefix: tuple[str, ...] = ()
    subset_size: int | None = None
    seed: int | None = None
    prompts: tuple[str, ...] | str | None = None
    over_cutoff: str = "drop"
    min_kept_fraction: float = 0.9
    check_images: bool = True
    full_decode: bool = False
    min_image_side: int = 8
    max_image_pixels: int = 178956970
    image_paths: str = "absolute"
    rows_per_shard: int = 100_000
    workers: int | None = None

    def as_dict(self) -> dict:
        """The config that decides the outputs (workers does not: any count gives the same bytes)."""
        out = asdict(self)
        out.pop("workers")
        return out


def plain(obj):
    """OmegaConf containers (or any Mapping / sequence) -> plain dicts and lists, for JSON and pickling."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [plain(v) for v in obj]
    return obj


def parse_source(source: Mapping) -> SourceSpec:
    """Check a source mapping against the schema above; errors name the offending key."""
    from data_prep.readers import READERS

    src = plain(source)
    for key in ("name", "reader", "paths"):
        if src.get(key) in (None, "", []):
            raise DataPrepError(f"source {src.get('name')!r}: key {key!r} is required")
    known = {"name", "reader", "paths", *SOURCE_DEFAULTS, *_IGNORED}
    unknown = sorted(set(src) - known)
    if unknown:
        raise DataPrepError(f"source {src['name']!r}: unknown keys {unknown}; allowed: {sorted(known)}")
    if src["reader"] not in READERS:
        raise DataPrepError(f"source {src['name']!r}: reader {src['reader']!r} is not one of {sorted(READERS)}")
    values = {**SOURCE_DEFAULTS, **{k: v for k, v in src.items() if k not in _IGNORED}}
    for key, allowed in _CHOICES.items():
        if values[key] not in allowed:
            raise DataPrepError(f"source {src['name']!r}: {key}={values[key]!r}, expected one of {allowed}")
    paths = values["paths"]
    values["paths"] = tuple([paths] if isinstance(paths, str) else paths)
    values["field_map"] = dict(values["field_map"] or {})
    prompts = values["prompts"]
    if prompts is not None and prompts != "source":
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise DataPrepError(f"source {src['name']!r}: prompts must be a non-empty list of strings, "
                                f"'source' or null; got {prompts!r}")
        values["prompts"] = tuple(prompts)
    if values["subset_size"] is not None and int(values["subset_size"]) <= 0:
        raise DataPrepError(f"source {src['name']!r}: subset_size must be positive or null")
    if values["workers"] is not None and int(values["workers"]) < 1:
        raise DataPrepError(f"source {src['name']!r}: workers must be at least 1, or null")
    values["path_prefix"] = _prefixes(src["name"], "path_prefix", values["path_prefix"])
    values["match_strip_prefix"] = _prefixes(src["name"], "match_strip_prefix", values["match_strip_prefix"]) or ()
    return SourceSpec(**values)


def _prefixes(name: str, key: str, value) -> tuple[str, ...] | None:
    """null, a string or a list of strings -> a tuple; the prefixes compare with paths relative to image_root."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not items or not all(isinstance(p, str) and p and not p.startswith(("/", "./")) for p in items):
        raise DataPrepError(f"source {name!r}: {key} must be null, or a path prefix relative to image_root "
                            f"(e.g. 'sharegpt4v/'), or a list of them; got {value!r}")
    return tuple(items)


def input_files(spec: SourceSpec) -> list[Path]:
    """The files a source reads, in a fixed order (folders expand to their *.json / *.jsonl, sorted)."""
    files: list[Path] = []
    for raw in spec.paths:
        path = Path(os.path.abspath(raw))
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataPrepError(f"source {spec.name!r}: key 'paths': folder {path} holds no *.json/*.jsonl file")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataPrepError(f"source {spec.name!r}: key 'paths': {path} does not exist")
    return files
