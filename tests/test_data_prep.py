"""data_prep: readers on real-format rows, the bad-input corpus, accounting, determinism, subsets.

Run: .venv/bin/python -m pytest tests/test_data_prep.py -q   (CPU only, a few seconds)"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from data_prep import READERS, DataPrepError, parse_source, prepare_dataset
from data_prep.images import probe
from data_prep.stream_json import ArrayReader, BadJson, is_json_array
from data_prep.subset import BottomN, key_hash
from data_prep.tokens import smart_resize, visual_tokens
from data_prep.workers import worker_count

SAMPLES = Path(__file__).parent / "data" / "data_prep"
PIXELS = {"min_pixels": 3136, "max_pixels": 12544}


# -- helpers --------------------------------------------------------------------------------------

def make_image(path: Path, size=(64, 48), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or ("PNG" if path.suffix == ".png" else "JPEG")
    Image.new("RGB", size, (40, 90, 160)).save(path, fmt)
    return path


def png_bytes(width: int, height: int, with_end: bool = True) -> bytes:
    """A PNG whose header claims width x height (no real pixel data needed for header checks)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return body + (chunk(b"IEND", b"") if with_end else b"")


def images_of(sample: Path) -> list[str]:
    text = sample.read_text()
    rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]
    return [r.get("image") or r.get("image_path") for r in rows if r.get("image") or r.get("image_path")]


def source(name: str, reader: str, paths, image_root: Path, **extra) -> dict:
    return {"name": name, "label": name, "reader": reader, "paths": [str(p) for p in paths],
            "image_root": str(image_root), **extra}


def run(src: dict, out: Path, cutoff_len: int = 4096, **kw) -> dict:
    kw.setdefault("log", lambda *a: None)
    return prepare_dataset(src, out, dataset_name=src["name"], pixels=PIXELS, cutoff_len=cutoff_len, **kw)


def read_rows(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for f in sorted((out / name).iterdir()) for line in f.read_text().splitlines()]


def rejects(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]


def tree_bytes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_lf_row(row: dict) -> None:
    """The LLaMA-Factory sharegpt contract: list of images, one <image> per image, user/assistant pairs."""
    assert isinstance(row["images"], list)
    roles = [m["role"] for m in row["messages"]]
    body = roles[1:] if roles[0] == "system" else roles
    assert body == ["user", "assistant"] * (len(body) // 2) and body
    assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in row["images"])


# -- readers on real-format rows ------------------------------------------------------------------

READER_SAMPLES = [("caprl_jsonl", "caprl_2m.jsonl"), ("densefusion", "densefusion_1m.jsonl"),
                  ("sharegpt4v", "sharegpt4v_pt.json"), ("llava", "llava_558k.json"),
                  ("open_llava_next", "open_llava_next_mix1m.json")]


@pytest.mark.parametrize("reader,sample", READER_SAMPLES)
def test_reader_keeps_every_good_row(tmp_path, reader, sample):
    root = tmp_path / "images"
    for rel in images_of(SAMPLES / sample):
        make_image(root / rel)
    out = tmp_path / "out"
    manifest = run(source(reader, reader, [SAMPLES / sample], root), out)
    n_rows = len(json.loads((SAMPLES / sample).read_text())) if sample.endswith(".json") else \
        len((SAMPLES / sample).read_text().splitlines())
    assert manifest["rows_read"] == manifest["rows_kept"] == n_rows and manifest["rejected"] == {}
    rows = read_rows(out, reader)
    assert len(rows) == n_rows
    for row in rows:
        check_lf_row(row)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {reader: {"file_name": str(out / reader), "formatting": "sharegpt",
                             "columns": {"messages": "messages", "images": "images"},
                             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                      "assistant_tag": "assistant"}}}
    assert [p.name for p in (out / reader).iterdir()] == ["shard-00000.jsonl"]
    assert manifest["token_count"]["text"].startswith("estimate")
    assert manifest["total_text_tokens"] > 0 and manifest["total_visual_tokens"] > 0


def test_caption_rows_use_the_prompt_pool_and_sft_rows_keep_their_turns(tmp_path):
    root = tmp_path / "images"
    for sample in ("sharegpt4v_pt.json", "open_llava_next_mix1m.json"):
        for rel in images_of(SAMPLES / sample):
            make_image(root / rel)
    prompts = ["Describe the picture.", "Caption this image in detail."]
    run(source("s4v", "sharegpt4v", [SAMPLES / "sharegpt4v_pt.json"], root, prompts=prompts), tmp_path / "a")
    users = [r["messages"][0]["content"] for r in read_rows(tmp_path / "a", "s4v")]
    assert all(u in {"<image>" + p for p in prompts} for u in users)
    run(source("s4v", "sharegpt4v", [SAMPLES / "sharegpt4v_pt.json"], root, prompts="source"), tmp_path / "b")
    users = [r["messages"][0]["content"] for r in read_rows(tmp_path / "b", "s4v")]
    assert users[0] == "<image>What do you see happening in this image?"
    run(source("sft", "open_llava_next", [SAMPLES / "open_llava_next_mix1m.json"], root), tmp_path / "c")
    rows = read_rows(tmp_path / "c", "sft")
    assert [len(r["messages"]) for r in rows] == [4, 2, 2, 2]
    assert [len(r["images"]) for r in rows] == [1, 0, 1, 0]
    assert rows[0]["messages"][2] == {"role": "user", "content": "What feature can be seen on the back of the bus?"}


def test_caprl_fields_are_detected_or_named(tmp_path):
    root = tmp_path / "images"
    make_image(root / "a.jpg")
    variants = {
        "image_path_text.jsonl": {"image_path": "a.jpg", "text": "a dog on a sofa"},
        "images_conversations.jsonl": {"images": ["a.jpg"], "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "a dog on a sofa"}]},
        "hf_image_dict.jsonl": {"image": {"bytes": None, "path": "a.jpg"}, "caption": "a dog on a sofa"},
    }
    for name, row in variants.items():
        (tmp_path / name).write_text(json.dumps(row) + "\n")
        m = run(source("c", "caprl_jsonl", [tmp_path / name], root), tmp_path / ("out-" + name))
        assert m["rows_kept"] == 1, name
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"picture": "a.jpg", "dense_desc": "a dog on a sofa"}) + "\n")
    with pytest.raises(DataPrepError) as err:
        run(source("c", "caprl_jsonl", [odd], root), tmp_path / "out-odd")
    assert "['dense_desc', 'picture']" in str(err.value) and "field_map" in str(err.value) and "odd.jsonl:1" in str(err.value)
    m = run(source("c", "caprl_jsonl", [odd], root, field_map={"image": "picture", "caption": "dense_desc"}),
            tmp_path / "out-mapped")
    assert m["rows_kept"] == 1


def test_a_folder_of_jsonl_files_is_read_in_name_order(tmp_path):
    root = tmp_path / "images"
    for i in range(3):
        make_image(root / f"{i}.jpg")
    data = tmp_path / "CapRL-2M"
    data.mkdir()
    for i in (2, 0, 1):
        (data / f"part-{i}.jsonl").write_text(json.dumps({"image": f"{i}.jpg", "caption": f"caption {i}"}) + "\n")
    run(source("c", "caprl_jsonl", [data], root), tmp_path / "out")
    assert [r["messages"][1]["content"] for r in read_rows(tmp_path / "out", "c")] == ["caption 0", "caption 1",
                                                                                       "caption 2"]


def test_bad_source_configs_say_which_key(tmp_path):
    with pytest.raises(DataPrepError, match="reader 'nope'"):
        run({"name": "x", "reader": "nope", "paths": ["/x"], "image_root": "/"}, tmp_path)
    with pytest.raises(DataPrepError, match=r"unknown keys \['captoin'\]"):
        run({"name": "x", "reader": "llava", "paths": ["/x"], "image_root": "/", "captoin": 1}, tmp_path)
    with pytest.raises(DataPrepError, match="'paths'.*does not exist"):
        run({"name": "x", "reader": "llava", "paths": [str(tmp_path / "missing.json")], "image_root": "/"}, tmp_path)
    with pytest.raises(DataPrepError, match="over_cutoff"):
        run({"name": "x", "reader": "llava", "paths": ["/x"], "image_root": "/", "over_cutoff": "cut"}, tmp_path)


# -- the bad-input corpus -------------------------------------------------------------------------

def build_bad_corpus(tmp_path: Path) -> tuple[Path, Path, dict[int, str], int]:
    """A CapRL-style JSONL with one row per rejection reason between good rows.
    Returns (jsonl, image_root, {line: expected reason}, number of good rows)."""
    root = tmp_path / "images"
    good = make_image(root / "good.jpg", (120, 90))
    make_image(root / "sub" / "good.png", (50, 60))
    (root / "zero.jpg").write_bytes(b"")
    (root / "zero_dims.png").write_bytes(png_bytes(0, 0))
    (root / "tiny.png").write_bytes(png_bytes(4, 300))
    (root / "bomb.png").write_bytes(png_bytes(40000, 40000))
    (root / "not_an_image.jpg").write_bytes(b"<html>404 not found</html>")
    data = good.read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "a_directory.jpg").mkdir()
    (tmp_path / "outside.jpg").write_bytes(data)
    cases = [  # (row bytes, expected reason or None for a good row)
        (json.dumps({"image": "good.jpg", "caption": "A blue square."}).encode(), None),
        (b'{"image": "good.jpg", "caption": "broken', "bad_json"),
        (b'{"image": "good.jpg", "caption": "caf\xe9 au lait"}', "bad_encoding"),
        (b'["good.jpg", "a list, not an object"]', "not_an_object"),
        (json.dumps({"image": "good.jpg"}).encode(), "missing_field"),
        (json.dumps({"image": "", "caption": "empty path"}).encode(), "image_path_invalid"),
        (json.dumps({"image": "../outside.jpg", "caption": "escapes the root"}).encode(), "image_outside_root"),
        (json.dumps({"image": "sub/../../outside.jpg", "caption": "escapes too"}).encode(), "image_outside_root"),
        (json.dumps({"image": str(tmp_path / "outside.jpg"), "caption": "absolute"}).encode(), "image_outside_root"),
        (json.dumps({"image": "sub/../good.jpg", "caption": "a .. that stays inside is fine"}).encode(), None),
        (json.dumps({"image": str(root / "sub" / "good.png"), "caption": "absolute inside root"}).encode(), None),
        (json.dumps({"image": "missing.jpg", "caption": "no such file"}).encode(), "image_missing"),
        (json.dumps({"image": "a_directory.jpg", "caption": "a folder"}).encode(), "image_unreadable"),
        (json.dumps({"image": "zero.jpg", "caption": "zero bytes"}).encode(), "image_corrupt"),
        (json.dumps({"image": "not_an_image.jpg", "caption": "html"}).encode(), "image_corrupt"),
        (json.dumps({"image": "truncated.jpg", "caption": "half a jpeg"}).encode(), "image_truncated"),
        (json.dumps({"image": "zero_dims.png", "caption": "0x0"}).encode(), "image_too_small"),
        (json.dumps({"image": "tiny.png", "caption": "4 px wide"}).encode(), "image_too_small"),
        (json.dumps({"image": "bomb.png", "caption": "1.6 G pixels"}).encode(), "image_too_large"),
        (json.dumps({"image": "good.jpg", "caption": ""}).encode(), "caption_empty"),
        (json.dumps({"image": "good.jpg", "caption": "  \n "}).encode(), "caption_empty"),
        (json.dumps({"image": "good.jpg", "caption": 42}).encode(), "caption_not_text"),
        (json.dumps({"image": "good.jpg", "caption": "a stray <image> tag"}).encode(), "image_tag_mismatch"),
        (json.dumps({"image": "good.jpg", "caption": "word " * 3000}).encode(), "over_cutoff"),
        (b"", None),  # a blank line is not a row
        (json.dumps({"image": "sub/good.png", "caption": "Another good row, caf\u00e9."}).encode(), None),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(row for row, _ in cases) + b"\n")
    expected = {i + 1: reason for i, (_, reason) in enumerate(cases) if reason}
    n_good = sum(1 for row, reason in cases if reason is None and row)
    return path, root, expected, n_good


@pytest.mark.parametrize("full_decode", [False, True])
def test_every_bad_row_is_rejected_with_its_reason(tmp_path, full_decode):
    path, root, expected, n_good = build_bad_corpus(tmp_path)
    m = run(source("bad", "caprl_jsonl", [path], root, min_kept_fraction=0.1, full_decode=full_decode),
            tmp_path / "out", cutoff_len=2048)
    got = {r["line"]: r["reason"] for r in rejects(tmp_path / "out")}
    assert got == expected
    assert m["rows_kept"] == n_good and m["rows_read"] == n_good + len(expected)
    assert m["rows_read"] == m["rows_kept"] + sum(m["rejected"].values()) == m["rows_kept"] + m["rows_rejected"]
    assert all(r["file"] == str(path) for r in rejects(tmp_path / "out"))
    for row in read_rows(tmp_path / "out", "bad"):
        check_lf_row(row)


def test_full_decode_catches_what_headers_cannot(tmp_path):
    root = tmp_path / "images"
    good = make_image(root / "good.png", (64, 64))
    data = bytearray(good.read_bytes())
    data[60:80] = b"\x00" * 20  # damaged pixel data, header and IEND intact
    (root / "damaged.png").write_bytes(bytes(data))
    kw = dict(full_decode=False, min_side=8, max_pixels=10**9)
    assert probe(str(root / "damaged.png"), **kw) == (64, 64)
    with pytest.raises(Exception) as err:
        probe(str(root / "damaged.png"), **{**kw, "full_decode": True})
    assert err.value.reason in ("image_corrupt", "image_truncated")


def test_a_json_array_cut_off_in_the_middle(tmp_path):
    root = tmp_path / "images"
    rows = []
    for i in range(5):
        make_image(root / f"{i}.jpg")
        rows.append({"id": str(i), "image": f"{i}.jpg",
                     "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                       {"from": "gpt", "value": f"caption number {i} " + "é" * 50}]})
    text = json.dumps(rows, indent=2, ensure_ascii=False)
    cut = tmp_path / "cut.json"
    cut.write_text(text[: text.index('"id": "3"') + 20])  # inside element 3
    m = run(source("cut", "sharegpt4v", [cut], root, min_kept_fraction=0.5), tmp_path / "out")
    assert m["rows_kept"] == 3 and m["rejected"] == {"bad_json": 1}
    (bad,) = rejects(tmp_path / "out")
    assert bad["index"] == 3 and bad["line"] == text[: text.index('"id": "3"')].count("\n")
    assert "cut off" in bad["detail"]


def test_a_damaged_array_element_is_skipped_and_reading_goes_on(tmp_path):
    good = [{"image": f"{i}.jpg", "conversations": [{"from": "gpt", "value": f"c{i}"}]} for i in range(4)]
    parts = [json.dumps(g) for g in good]
    parts[1] = '{"image": "1.jpg", "conversations": [oops]}'
    path = tmp_path / "damaged.json"
    path.write_text("[\n" + ",\n".join(parts) + "\n]\n")
    items = list(ArrayReader(path))
    assert [i for i, _, v in items if not isinstance(v, BadJson)] == [0, 2, 3]
    assert isinstance(items[1][2], BadJson) and items[1][1] == 3


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_array_reader_across_tiny_chunks_and_split_utf8(tmp_path, chunk):
    rows = [{"i": i, "t": "日本語 é " * (i % 5), "n": 12345 + i, "x": [1.5, None, True]} for i in range(30)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    items = list(ArrayReader(path, chunk_bytes=chunk))
    assert [v for _, _, v in items] == rows
    assert [line for _, line, _ in items][:2] == [2, 2 + json.dumps(rows[0], indent=1).count("\n") + 1]


def test_non_utf8_bytes_inside_a_json_array(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"image": "a.jpg", "caption": "ok"},\n {"image": "b.jpg", "caption": "caf\xe9"},\n'
                     b' {"image": "c.jpg", "caption": "ok too"}]')
    items = list(ArrayReader(path))
    assert [type(v).__name__ for _, _, v in items] == ["dict", "BadJson", "dict"]
    assert items[1][2].reason == "bad_encoding" and items[1][1] == 2


def sharegpt4v_rows(n: int) -> list[dict]:
    """ShareGPT4V-PT elements whose text holds the characters a resync must not trip on."""
    return [{"id": str(i), "image": f"{i}.jpg", "conversations": [
        {"from": "human", "value": "<image>\nDescribe."},
        {"from": "gpt", "value": f"caption {i}: {{braces}}, [brackets], \"quotes\" and a \\ backslash"}]}
        for i in range(n)]


def damaged_array(path: Path, rows: list[dict], damage, indent) -> list[int]:
    """Write rows as one JSON array with element 1 damaged by damage(text); returns each element's first line."""
    parts = [json.dumps(r, indent=indent) for r in rows]
    broken = damage(parts[1])
    assert broken != parts[1]
    parts[1] = broken
    path.write_text("[\n" + ",\n".join(parts) + "\n]\n")
    starts, line = [], 2
    for part in parts:
        starts.append(line)
        line += part.count("\n") + 1
    return starts


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_damage_inside_a_nested_turn_costs_one_reject_and_no_later_row(tmp_path, indent, chunk):
    """The ',' between two turns of a damaged element is not the gap before the next element: reading
    on from there took a turn for a row and the turns' closing ']' for the end of the array."""
    rows = sharegpt4v_rows(6)
    path = tmp_path / "s4v.json"
    starts = damaged_array(path, rows, lambda t: t.replace('"value": "<image>\\nDescribe."', '"value": oops', 1),
                           indent)
    items = list(ArrayReader(path, chunk_bytes=chunk))
    assert [(i, line) for i, line, _ in items] == list(enumerate(starts))
    assert [v for _, _, v in items] == [rows[0], BadJson("bad_json", items[1][2].detail), *rows[2:]]
    for i in range(6):
        make_image(tmp_path / "images" / f"{i}.jpg")
    m = run(source("s4v", "sharegpt4v", [path], tmp_path / "images", min_kept_fraction=0.5), tmp_path / "out")
    assert (m["rows_read"], m["rows_kept"], m["rejected"]) == (6, 5, {"bad_json": 1})
    (bad,) = rejects(tmp_path / "out")
    assert (bad["index"], bad["line"], bad["reason"]) == (1, starts[1], "bad_json")
    assert [r["messages"][1]["content"] for r in read_rows(tmp_path / "out", "s4v")] == \
        [r["conversations"][1]["value"] for r in rows[:1] + rows[2:]]


@pytest.mark.parametrize("damage", [
    lambda t: t.replace('"1.jpg"', '"1.jpg', 1),                     # an unmatched quote
    lambda t: t.replace('"conversations": [', '"conversations": [[', 1),  # an unmatched bracket
])
@pytest.mark.parametrize("max_element", [400, 8 << 20])
def test_damage_that_breaks_the_nesting_loses_no_later_row(tmp_path, damage, max_element):
    """When strings or brackets no longer pair up, the end of the damaged element cannot be found by
    following them; the fallback may turn its remains into extra rejects, but every later row is kept."""
    rows = sharegpt4v_rows(6)
    path = tmp_path / "s4v.json"
    damaged_array(path, rows, damage, indent=2)
    items = list(ArrayReader(path, chunk_bytes=64, max_element_chars=max_element))
    values = [v for _, _, v in items]
    assert [v for v in values if v in rows] == rows[:1] + rows[2:]
    assert values[1] != rows[1] and all(v in rows or isinstance(v, BadJson) or "image" not in v for v in values)
    for i in range(6):
        make_image(tmp_path / "images" / f"{i}.jpg")
    m = run(source("s4v", "sharegpt4v", [path], tmp_path / "images", min_kept_fraction=0.5), tmp_path / "out")
    assert m["rows_kept"] == 5 and m["rows_read"] == len(items) == 5 + m["rows_rejected"] == 5 + len(rejects(tmp_path / "out"))


def test_text_after_the_closing_bracket_is_a_reject(tmp_path):
    rows = sharegpt4v_rows(3)
    for i in range(3):
        make_image(tmp_path / "images" / f"{i}.jpg")
    path = tmp_path / "s4v.json"
    path.write_text(json.dumps(rows[:2], indent=1) + "\n" + json.dumps(rows[2:]) + "\n")  # two arrays, one file
    m = run(source("s4v", "sharegpt4v", [path], tmp_path / "images", min_kept_fraction=0.5), tmp_path / "out")
    assert (m["rows_read"], m["rows_kept"], m["rejected"]) == (3, 2, {"bad_json": 1})
    (bad,) = rejects(tmp_path / "out")
    assert bad["line"] == json.dumps(rows[:2], indent=1).count("\n") + 2 and "after the closing ']'" in bad["detail"]
    path.write_text(json.dumps(rows) + "\n \n")  # blank text after it is fine
    assert [v for _, _, v in ArrayReader(path)] == rows


def test_the_format_comes_from_the_suffix_then_the_first_byte(tmp_path):
    root = tmp_path / "images"
    make_image(root / "a.jpg")
    good = json.dumps({"image": "a.jpg", "caption": "a caption"})
    listing = tmp_path / "rows.jsonl"  # JSON Lines whose first line happens to be a list
    listing.write_text('["a.jpg", "a caption"]\n' + good + "\n" + good + "\n")
    assert not is_json_array(listing)
    m = run(source("c", "caprl_jsonl", [listing], root, min_kept_fraction=0.5), tmp_path / "out")
    assert (m["rows_read"], m["rows_kept"], m["rejected"]) == (3, 2, {"not_an_object": 1})
    assert m["inputs"][0]["format"] == "jsonl"
    lines_in_json = tmp_path / "rows.json"  # a *.json file that is really JSON Lines
    lines_in_json.write_text(good + "\n" + good + "\n")
    padded = tmp_path / "padded.json"  # an array after more blank space than one read
    padded.write_bytes(b"\xef\xbb\xbf" + b" \n" * 40000 + f"[{good}, {good}]".encode())
    assert not is_json_array(lines_in_json) and is_json_array(padded)
    for path in (lines_in_json, padded):
        assert run(source("c", "caprl_jsonl", [path], root), tmp_path / path.stem)["rows_kept"] == 2


def test_pil_keeps_its_own_pixel_limit(tmp_path, monkeypatch):
    """Inline (workers = 1) the checks run in the caller's process: PIL's global bomb limit must
    not be lifted there for good. Our own max_pixels still decides (TIFF goes through PIL)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = make_image(tmp_path / "a.tif", (64, 48), fmt="TIFF")
    for full in (False, True):
        assert probe(str(path), full_decode=full, min_side=8, max_pixels=10**6) == (64, 48)
        assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(Exception) as err:
        probe(str(path), full_decode=False, min_side=8, max_pixels=3000)
    assert err.value.reason == "image_too_large" and Image.MAX_IMAGE_PIXELS == 1000


# -- sequence lengths ------------------------------------------------------------------------------

def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as reference

    for h, w in [(28, 28), (100, 37), (480, 640), (1080, 1920), (4000, 3000), (57, 2001), (3000, 28)]:
        for lo, hi in [(3136, 12544), (3136, 1003520), (256 * 28 * 28, 1280 * 28 * 28)]:
            assert smart_resize(h, w, 28, lo, hi) == reference(h, w, 28, lo, hi)


def test_visual_tokens_follow_the_shared_pixel_budget():
    assert visual_tokens(56, 56, 3136, 12544) == 4             # exactly min_pixels
    assert visual_tokens(112, 112, 3136, 12544) == 16          # exactly max_pixels
    assert visual_tokens(4000, 3000, 3136, 12544) <= 16        # downscaled into the budget
    assert visual_tokens(10, 10, 3136, 12544) >= 4             # upscaled
    assert visual_tokens(1920, 1080, 3136, 1003520) <= 1280


def test_rows_over_cutoff_are_dropped_or_truncated(tmp_path):
    root = tmp_path / "images"
    make_image(root / "a.jpg", (112, 112))                    # 16 visual tokens
    lines = [json.dumps({"image": "a.jpg", "caption": "word " * n}) for n in (10, 300, 2000)]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    dropped = run(source("c", "caprl_jsonl", [path], root, min_kept_fraction=0.1), tmp_path / "d", cutoff_len=300)
    assert dropped["rows_kept"] == 1 and dropped["rejected"] == {"over_cutoff": 2}
    cut = run(source("c", "caprl_jsonl", [path], root, over_cutoff="truncate"), tmp_path / "t", cutoff_len=300)
    assert cut["rows_kept"] == 3 and cut["truncated"] == 2 and cut["max_seq_len"] <= 300
    captions = [r["messages"][1]["content"] for r in read_rows(tmp_path / "t", "c")]
    assert captions[0] == "word " * 10 and "word " * 50 in captions[1] and len(captions[1]) < len("word " * 300)


# -- accounting, floor, crash safety, determinism --------------------------------------------------

def test_the_kept_fraction_floor_fails_with_the_top_reasons(tmp_path):
    root = tmp_path / "images"
    make_image(root / "ok.jpg")
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"image": f"gone{i}.jpg", "caption": "x"}) + "\n" for i in range(8))
                    + json.dumps({"image": "ok.jpg", "caption": "fine"}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(DataPrepError) as err:
        run(source("c", "caprl_jsonl", [path], root, min_kept_fraction=0.5), out)
    message = str(err.value)
    assert "kept 1 of 9" in message and "image_missing: 8" in message and f"{path}:1" in message
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["rejected"] == {"image_missing": 8}
    assert len(rejects(out)) == 8 and not (out / "c").exists() and not (out / "dataset_info.json").exists()


def test_rerun_after_a_crash_is_byte_identical(tmp_path):
    path, root, _, _ = build_bad_corpus(tmp_path)
    src = source("bad", "caprl_jsonl", [path], root, min_kept_fraction=0.1, rows_per_shard=2)
    out = tmp_path / "out"
    run(src, out)
    before = tree_bytes(out)
    assert len(list((out / "bad").iterdir())) > 1  # several shards
    # what a run killed mid-way leaves: a staging folder with a half shard, no manifest yet
    (out / ".staging-bad" / "bad").mkdir(parents=True)
    (out / ".staging-bad" / "bad" / "shard-00000.jsonl.part").write_text('{"half": ')
    (out / "manifest.json").unlink()
    # and what a crash inside publish leaves: the previous shards moved aside
    (out / ".old-bad").mkdir()
    (out / ".old-bad" / "shard-00000.jsonl").write_text('{"old": 1}\n')
    run(src, out)
    assert tree_bytes(out) == before
    assert not list(out.rglob("*.part")) and not (out / ".staging-bad").exists() and not (out / ".old-bad").exists()


def test_same_inputs_give_byte_identical_outputs_with_one_or_two_workers(tmp_path):
    root = tmp_path / "images"
    lines = []
    for i in range(40):
        make_image(root / f"{i % 10}.png", (30 + i % 10, 40))
        lines.append(json.dumps({"image": f"{i % 10}.png", "caption": f"caption {i} " * (i + 1)}))
    lines.insert(7, "{not json")
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    src = source("c", "caprl_jsonl", [path], root, rows_per_shard=8, subset_size=30)
    outs, logs = {}, []
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        outs[name] = tmp_path / f"out-{name}"
        run({**src, "workers": workers}, outs[name], seed=3, log=logs.append)
    assert [m.group(1) for line in logs if (m := re.search(r"(\d+) worker\(s\)", line))] == ["1", "1", "2"]

    def contents(out: Path) -> dict[str, bytes]:
        """Every file; the manifest and dataset_info.json name their own folder, so that is masked."""
        return {str(p.relative_to(out)): p.read_bytes().replace(str(out).encode(), b"<out>")
                for p in sorted(out.rglob("*")) if p.is_file()}

    first = contents(outs["a"])
    assert {"manifest.json", "dataset_info.json", "rejects.jsonl"} <= set(first) and len(first) > 4
    assert first == contents(outs["b"]) == contents(outs["c"])
    manifest = json.loads((outs["a"] / "manifest.json").read_text())
    assert manifest["rows_read"] == 31 and manifest["subset"]["rows_outside_subset"] == 10
    run({**src, "workers": 2}, outs["a"], seed=3)  # a re-run in place, the other worker count
    assert contents(outs["a"]) == first


def test_workers_is_a_source_key_and_defaults_to_the_cpus_when_worth_it(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    listing = tmp_path / "listing.jsonl"  # many images, few bytes: checking them is the work
    listing.write_text("".join(json.dumps({"image": f"{i:06d}.jpg", "caption": "x"}) + "\n" for i in range(30000)))
    size = listing.stat().st_size
    assert size < 2 << 20
    assert worker_count(None, [listing], size, check_images=True, exact_tokens=False) == 3
    assert worker_count(None, [listing], size, check_images=False, exact_tokens=False) == 1
    assert worker_count(2, [listing], size, check_images=False, exact_tokens=False) == 2
    base = {"name": "x", "reader": "caprl_jsonl", "paths": ["/x"]}
    assert parse_source(base).workers is None and parse_source({**base, "workers": 4}).workers == 4
    assert "workers" not in parse_source({**base, "workers": 4}).as_dict()  # outputs do not depend on it
    with pytest.raises(DataPrepError, match="workers must be at least 1"):
        parse_source({**base, "workers": 0})


def test_a_second_dataset_in_the_same_out_dir_is_refused(tmp_path):
    root = tmp_path / "images"
    make_image(root / "a.jpg")
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"image": "a.jpg", "caption": "a caption"}) + "\n")
    out = tmp_path / "out"
    run(source("first", "caprl_jsonl", [path], root), out)
    before = tree_bytes(out)
    with pytest.raises(DataPrepError, match=r"already holds dataset\(s\) \['first'\].*its own folder"):
        run(source("second", "caprl_jsonl", [path], root), out)
    assert tree_bytes(out) == before and not (out / ".staging-second").exists()
    run(source("first", "caprl_jsonl", [path], root), out)  # the same dataset again is a re-run
    assert tree_bytes(out) == before


def test_text_only_rows_never_type_the_images_column_as_null(tmp_path):
    """A shard must not start with a text-only row (datasets would type `images` as list<null>)."""
    pytest.importorskip("datasets")
    from datasets import load_dataset

    root = tmp_path / "images"
    make_image(root / "a.jpg")
    text_row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    image_row = {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                     {"from": "gpt", "value": "A square."}]}
    rows = [text_row] * 7 + [image_row] + [text_row] * 5 + [image_row] * 2 + [text_row] * 6
    path = tmp_path / "sft.json"
    path.write_text(json.dumps(rows))
    out = tmp_path / "out"
    m = run(source("sft", "open_llava_next", [path], root, rows_per_shard=4), out)
    assert m["rows_kept"] == len(rows)
    shards = sorted((out / "sft").iterdir())
    firsts = [json.loads(s.read_text().splitlines()[0]) for s in shards]
    assert all(f["images"] for f in firsts[:-1])
    assert sum(len(s.read_text().splitlines()) for s in shards) == len(rows)
    ds = load_dataset("json", data_files=[str(s) for s in shards], split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == len(rows) and str(ds.features["images"].feature.dtype) == "string"


# -- matched subsets ------------------------------------------------------------------------------

def test_two_caption_sources_over_the_same_images_select_the_same_images(tmp_path):
    root = tmp_path / "images"
    names = [f"coco/train2017/{i:012d}.jpg" for i in range(120)]
    for n in names:
        make_image(root / n, (32, 32))
    caprl = tmp_path / "caprl.jsonl"  # CapRL-style JSONL, its own order and captions
    caprl.write_text("".join(json.dumps({"image": n, "caption": f"dense caption of {n}"}) + "\n"
                             for n in reversed(names)))
    s4v = tmp_path / "s4v.json"       # ShareGPT4V-style array over the same images
    s4v.write_text(json.dumps([{"id": n, "image": n, "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": f"short caption of {n}"}]}
        for n in names]))
    a = run(source("a", "caprl_jsonl", [caprl], root, subset_size=40, seed=7), tmp_path / "a")
    b = run(source("b", "sharegpt4v", [s4v], root, subset_size=40, seed=7), tmp_path / "b")
    images = lambda out, name: sorted(r["images"][0] for r in read_rows(out, name))
    assert a["rows_kept"] == b["rows_kept"] == 40
    assert images(tmp_path / "a", "a") == images(tmp_path / "b", "b")
    prompts = lambda out, name: {r["images"][0]: r["messages"][0]["content"] for r in read_rows(out, name)}
    assert prompts(tmp_path / "a", "a") == prompts(tmp_path / "b", "b")  # same image, same instruction
    c = run(source("c", "caprl_jsonl", [caprl], root, subset_size=40, seed=8), tmp_path / "c")
    assert images(tmp_path / "c", "c") != images(tmp_path / "a", "a") and c["rows_kept"] == 40


def test_one_origin_of_a_mixed_source_matches_the_other_source_despite_its_layout(tmp_path):
    """Table 2: CapRL-2M restricted to its ShareGPT4V (or DenseFusion) images, matched image for image
    with ShareGPT4V (DenseFusion) although CapRL-2M keeps them under a prefix of its own."""
    root = tmp_path / "images"  # CapRL-2M's image_root; ShareGPT4V's and DenseFusion's are inside it
    s4v_names = [f"{'sam/images/sa_' if i % 2 else 'coco/train2017/'}{i:06d}.jpg" for i in range(60)]
    df_names = [f"{i // 10:05d}/{i:09d}.jpg" for i in range(30)]
    for name in s4v_names:
        make_image(root / "sharegpt4v" / name, (32, 32))
    for name in df_names:
        make_image(root / "densefusion" / name, (32, 32))
    caprl = tmp_path / "caprl.jsonl"  # the two origins interleaved, CapRL's own path layout
    caprl.write_text("".join(json.dumps({"image": image, "caption": f"CapRL caption of {image}"}) + "\n"
                             for pair in zip([f"sharegpt4v/{n}" for n in s4v_names],
                                             [f"densefusion/{n}" for n in df_names] * 2) for image in pair))
    s4v = tmp_path / "s4v.json"
    s4v.write_text(json.dumps([{"id": n, "image": n, "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": f"Share caption of {n}"}]}
        for n in reversed(s4v_names)]))
    df = tmp_path / "df.jsonl"
    df.write_text("".join(json.dumps({"image_id": n, "image_path": n, "caption": f"DF caption of {n}"}) + "\n"
                          for n in df_names))

    def prepared(name, reader, path, image_root, **kw) -> tuple[dict, dict[str, str]]:
        m = run(source(name, reader, [path], image_root, seed=5, **kw), tmp_path / name)
        return m, {r["images"][0]: r["messages"][0]["content"] for r in read_rows(tmp_path / name, name)}

    m, caprl_s4v = prepared("caprl_s4v", "caprl_jsonl", caprl, root, subset_size=20,
                            path_prefix="sharegpt4v/", match_strip_prefix="sharegpt4v/")
    _, share = prepared("s4v", "sharegpt4v", s4v, root / "sharegpt4v", subset_size=20)
    assert len(caprl_s4v) == 20 and caprl_s4v == share  # the same image files, the same instructions
    assert m["rows_read"] == 20 and m["subset"]["rows_outside_subset"] == 40
    assert m["path_prefix"] == {"prefixes": ["sharegpt4v/"], "rows_outside": 60}  # 30 DenseFusion rows, twice
    _, unstripped = prepared("caprl_raw", "caprl_jsonl", caprl, root, subset_size=20, path_prefix=["sharegpt4v/"])
    assert set(unstripped) != set(share)  # without the strip, the keys differ and so do the images

    m, caprl_df = prepared("caprl_df", "caprl_jsonl", caprl, root, path_prefix="densefusion/",
                           match_strip_prefix=["other/", "densefusion/"])
    _, dense = prepared("df", "densefusion", df, root / "densefusion")
    assert len(caprl_df) == 30 and caprl_df == dense and m["rows_read"] == 60  # CapRL lists each twice
    with pytest.raises(DataPrepError, match="path_prefix must be null, or a path prefix relative to image_root"):
        parse_source(source("x", "caprl_jsonl", [caprl], root, path_prefix="/abs/"))


def test_path_prefix_on_conversation_rows_uses_the_first_image(tmp_path):
    root = tmp_path / "images"
    for rel in images_of(SAMPLES / "open_llava_next_mix1m.json"):
        make_image(root / rel)
    m = run(source("sft", "open_llava_next", [SAMPLES / "open_llava_next_mix1m.json"], root, path_prefix="coco/"),
            tmp_path / "out")
    assert (m["rows_read"], m["rows_kept"], m["path_prefix"]["rows_outside"]) == (1, 1, 3)  # 2 text-only rows


def test_every_shipped_source_config_passes_the_schema(results_dir):
    from harness.config import compose_config, group_options, to_plain

    for group in ("captions", "align_data", "sft_data"):
        for option in group_options(group):
            src = to_plain(compose_config([f"{group}={option}"]))[group]
            if src.get("reader") is not None:
                spec = parse_source(src)
                assert spec.name == option, (group, option)
                if READERS[spec.reader].kind == "caption":  # the prompt pool is shown, not hidden
                    assert "prompts" in src, (group, option)
    spec = lambda option: parse_source(to_plain(compose_config([f"captions={option}"]))["captions"])
    for caprl, other, label, prefix in (("caprl_sharegpt4v_1m", "sharegpt4v_1m", "CapRL-ShareGPT4V-1M", "sharegpt4v/"),
                                        ("caprl_densefusion_1m", "densefusion_1m", "CapRL-DenseFusion-1M", "densefusion/")):
        mine, theirs = spec(caprl), spec(other)
        assert (mine.label, mine.path_prefix, mine.match_strip_prefix) == (label, (prefix,), (prefix,))
        assert (mine.subset_size, mine.seed, mine.match_key) == (theirs.subset_size, theirs.seed, theirs.match_key)


def test_bottom_n_is_the_exact_smallest_set():
    import random

    rng = random.Random(0)
    keys = [f"img{i}" for i in range(5000)]
    bottom = BottomN(100)
    for start in range(0, 5000, 333):
        chunk = keys[start:start + 333]
        bottom.add([key_hash(k, 1) for k in chunk], [0] * len(chunk), list(range(start, start + len(chunk))))
    threshold = bottom.threshold()
    chosen = [k for i, k in enumerate(keys) if (key_hash(k, 1), 0, i) <= threshold]
    assert sorted(chosen) == sorted(sorted(keys, key=lambda k: key_hash(k, 1))[:100])
    rng.shuffle(keys)
    assert BottomN(10**6).threshold() is None
