"""data_prep: readers on real-format rows, the bad-input corpus, accounting, determinism, subsets.

Run: .venv/bin/python -m pytest tests/test_data_prep.py -q   (CPU only, a few seconds)"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from data_prep import DataPrepError, prepare_dataset
from data_prep import prepare as prepare_mod
from data_prep.images import probe
from data_prep.stream_json import ArrayReader, BadJson
from data_prep.subset import BottomN, key_hash
from data_prep.tokens import smart_resize, visual_tokens

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
    run(src, out)
    assert tree_bytes(out) == before
    assert not list(out.rglob("*.part")) and not (out / ".staging-bad").exists()


def test_same_inputs_give_byte_identical_outputs_with_one_or_two_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_mod, "PARALLEL_MIN_BYTES", 0)
    root = tmp_path / "images"
    lines = []
    for i in range(40):
        make_image(root / f"{i % 10}.png", (30 + i % 10, 40))
        lines.append(json.dumps({"image": f"{i % 10}.png", "caption": f"caption {i} " * (i + 1)}))
    lines.insert(7, "{not json")
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    src = source("c", "caprl_jsonl", [path], root, rows_per_shard=8, subset_size=30)
    outs = {}
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        outs[name] = tmp_path / name
        run(src, outs[name], workers=workers, seed=3)
    manifest_a = json.loads((outs["a"] / "manifest.json").read_text())
    # the manifest names its own folder (dataset_info); everything else must match byte for byte
    strip = lambda d: {k: v for k, v in tree_bytes(d).items() if k not in ("manifest.json", "dataset_info.json")}
    assert strip(outs["a"]) == strip(outs["b"]) == strip(outs["c"])
    assert manifest_a["rows_read"] == 31 and manifest_a["subset"]["rows_outside_subset"] == 10
    run(src, outs["a"], workers=1, seed=3)
    assert tree_bytes(outs["a"])["manifest.json"] == hashlib.sha256((outs["a"] / "manifest.json").read_bytes()).hexdigest()


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
