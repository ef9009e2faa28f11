"""One small reader per public source format, in a registry keyed by the `reader` name of a source.

A reader turns one parsed JSON row into plain parts; everything format-independent (paths, image
checks, prompts, token counts, output) happens in convert.py. Two kinds:
- "caption": (row_id, image, caption, source_instruction); the caption may be a string or a
  LLaVA-style conversation whose last assistant turn is the caption.
- "conversation": (row_id, images, [(role, text), ...]) for SFT data, multi-turn, images optional.

Field names are resolved once per file from its first row: field_map from the config first, then
the first candidate key present. Adding a source format with known field names is one
`register(...)` line; a genuinely new layout needs one small parse function."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import orjson

from data_prep.errors import (BAD_CONVERSATION, CAPTION_NOT_TEXT, MISSING_FIELD, NOT_AN_OBJECT, DataPrepError,
                              RowReject)
from data_prep.stream_json import ArrayReader, BadJson, is_json_array

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class Reader:
    name: str
    kind: str                     # "caption" | "conversation"
    parse: Callable
    image_keys: tuple[str, ...]
    text_keys: tuple[str, ...]    # the caption, or the conversation list
    id_keys: tuple[str, ...]


READERS: dict[str, Reader] = {}


def register(name: str, kind: str, parse: Callable, *, image: tuple, text: tuple, id: tuple = ("id",)) -> Reader:
    READERS[name] = Reader(name, kind, parse, tuple(image), tuple(text), tuple(id))
    return READERS[name]


# -- parse functions (hot path: keep them flat) ----------------------------------------------

def parse_caption_row(obj, fields: Mapping):
    if type(obj) is not dict:
        raise RowReject(NOT_AN_OBJECT, f"a JSON {type(obj).__name__}, expected an object")
    image, text = obj.get(fields["image"]), obj.get(fields["text"])
    if image is None:
        raise RowReject(MISSING_FIELD, f"no {fields['image']!r} field")
    if text is None:
        raise RowReject(MISSING_FIELD, f"no {fields['text']!r} field")
    instruction = None
    if type(text) is list:
        text, instruction = _caption_from_turns(text)
    id_key = fields["id"]
    return (obj.get(id_key) if id_key else None), image, text, instruction


def _caption_from_turns(turns: list):
    """LLaVA / ShareGPT4V layout: the caption is the last assistant turn, the instruction the first user turn."""
    caption = instruction = None
    for turn in turns:
        if type(turn) is not dict:
            raise RowReject(CAPTION_NOT_TEXT, "caption is a list of non-objects")
        role = ROLES.get(turn.get("from", turn.get("role")))
        value = turn.get("value", turn.get("content"))
        if role == "assistant":
            caption = value
        elif role == "user" and instruction is None:
            instruction = value
    if caption is None:
        raise RowReject(MISSING_FIELD, "conversation has no assistant (gpt) turn")
    return caption, instruction


def parse_conversation_row(obj, fields: Mapping):
    if type(obj) is not dict:
        raise RowReject(NOT_AN_OBJECT, f"a JSON {type(obj).__name__}, expected an object")
    turns = obj.get(fields["text"])
    if turns is None:
        raise RowReject(MISSING_FIELD, f"no {fields['text']!r} field")
    if type(turns) is not list or not turns:
        raise RowReject(BAD_CONVERSATION, f"{fields['text']!r} is not a non-empty list")
    out = []
    for i, turn in enumerate(turns):
        if type(turn) is not dict:
            raise RowReject(BAD_CONVERSATION, f"turn {i} is not an object")
        role = ROLES.get(turn.get("from", turn.get("role")))
        if role is None:
            raise RowReject(BAD_CONVERSATION, f"turn {i} has an unknown role {turn.get('from', turn.get('role'))!r}")
        out.append((role, turn.get("value", turn.get("content"))))
    id_key = fields["id"]
    return (obj.get(id_key) if id_key else None), obj.get(fields["image"]), out


# -- the registry: the paper's sources (caprl-recipe.md section 4) ------------------------------

# CapRL-2M: field names UNVERIFIED, hence the long candidate lists (field_map overrides them).
register("caprl_jsonl", "caption", parse_caption_row,
         image=("image", "image_path", "images", "img", "img_path", "image_file", "file_name", "path"),
         text=("caption", "text", "conversations", "captions", "description", "response", "answer"),
         id=("id", "image_id", "uid", "key"))
register("densefusion", "caption", parse_caption_row, image=("image_path", "image"), text=("caption",),
         id=("image_id", "id"))
register("sharegpt4v", "caption", parse_caption_row, image=("image",), text=("conversations",))
register("llava", "caption", parse_caption_row, image=("image",), text=("conversations",))
register("open_llava_next", "conversation", parse_conversation_row, image=("image", "images"),
         text=("conversations", "messages"))


# -- field resolution --------------------------------------------------------------------------

def resolve_fields(reader: Reader, path: Path, field_map: Mapping) -> dict:
    """{image, text, id} key names for one file, from field_map or the file's first JSON object."""
    fmap = {("text" if k == "caption" else k): v for k, v in (field_map or {}).items()}
    bad = sorted(set(fmap) - {"image", "text", "id"})
    if bad:
        raise DataPrepError(f"field_map keys {bad} unknown; allowed: image, caption, id")
    if all(k in fmap for k in ("image", "text")):
        return {"image": fmap["image"], "text": fmap["text"], "id": fmap.get("id")}
    line, first = first_object(path)
    fields = {}
    for what, candidates in (("image", reader.image_keys), ("text", reader.text_keys), ("id", reader.id_keys)):
        fields[what] = fmap.get(what) or next((k for k in candidates if k in first), None)
    if fields["image"] is None and reader.kind == "conversation":
        fields["image"] = reader.image_keys[0]  # the first row may be text-only
    for what in ("image", "text"):
        if fields[what] is None:
            label = "caption" if what == "text" else what
            raise DataPrepError(
                f"{path}:{line}: cannot find the {label} field for reader {reader.name!r}; the first row's keys are "
                f"{sorted(first)}; tried {list(getattr(reader, what + '_keys'))}. Set field_map: "
                f"{{image: <key>, caption: <key>}} in the source config.")
    return fields


def first_object(path: Path, limit: int = 100) -> tuple[int, dict]:
    """(line, row) of the first JSON object among the first `limit` rows of a file."""
    first_error = None
    for line, value in _first_rows(path, limit):
        if isinstance(value, dict):
            return line, value
        first_error = first_error or (line, value)
    shown = f" (line {first_error[0]}: {first_error[1]})" if first_error else " (empty file)"
    raise DataPrepError(f"{path}: no JSON object among the first {limit} rows{shown}")


def _first_rows(path: Path, limit: int):
    if is_json_array(path):
        for n, (_, line, value) in enumerate(ArrayReader(path)):
            if n >= limit:
                return
            yield line, (value.detail if isinstance(value, BadJson) else value)
        return
    with open(path, "rb") as f:
        for n, raw in enumerate(f):
            if n >= limit:
                return
            raw = raw.removeprefix(b"\xef\xbb\xbf") if n == 0 else raw  # a BOM, as iter_batches drops it
            if raw.strip():
                try:
                    yield n + 1, orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    yield n + 1, f"invalid JSON: {exc}"
