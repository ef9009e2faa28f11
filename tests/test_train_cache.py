"""The tokenized cache (train/tokenized.py): its key, its completion mark and its lock, without
launching LLaMA-Factory."""

from __future__ import annotations

import fcntl
import json
import threading
import time

import pytest

import train.tokenized as tokenized
from train.stage import tokenized_cache
from train.tokenized import COMPLETE, TokenizedCache, cache_key

CONFIG = {"common": {"template": "qwen2_vl", "cutoff_len": 512, "extra": {}},
          "pixels": {"min_pixels": 3136, "max_pixels": 12544}}


def with_common(**kw):
    return {**CONFIG, "common": {**CONFIG["common"], **kw}}


def test_cache_key_covers_data_settings_processor_lf_version_and_extra(monkeypatch):
    monkeypatch.setattr(tokenized, "lf_version", lambda: "0.9.5")
    base = cache_key("fp", CONFIG, {"tokenizer.json": b"a"})
    assert base == cache_key("fp", json.loads(json.dumps(CONFIG)), {"tokenizer.json": b"a"})   # stable
    variants = [
        cache_key("other-data", CONFIG, {"tokenizer.json": b"a"}),
        cache_key("fp", with_common(template="qwen2_vl_nothink"), {"tokenizer.json": b"a"}),
        cache_key("fp", with_common(cutoff_len=1024), {"tokenizer.json": b"a"}),
        cache_key("fp", {**CONFIG, "pixels": {"min_pixels": 3136, "max_pixels": 1003520}}, {"tokenizer.json": b"a"}),
        cache_key("fp", with_common(extra={"train_on_prompt": True}), {"tokenizer.json": b"a"}),
        cache_key("fp", CONFIG, {"tokenizer.json": b"b"}),
        cache_key("fp", with_common(packing=True), {"tokenizer.json": b"a"}),       # packed rows are other rows
    ]
    # packing off is what every key meant before the switch: the same key
    assert cache_key("fp", with_common(packing=False), {"tokenizer.json": b"a"}) == base
    monkeypatch.setattr(tokenized, "lf_version", lambda: "0.9.6")
    variants.append(cache_key("fp", CONFIG, {"tokenizer.json": b"a"}))
    assert len({base, *variants}) == len(variants) + 1


def test_cache_folder_is_keyed_by_the_data_stage_and_model_files(tmp_path):
    model, cache = tmp_path / "model", tmp_path / "cache"
    model.mkdir()
    (model / "tokenizer.json").write_text("{}")
    path = tokenized_cache(cache, "abc", model, CONFIG)
    assert path.parent == cache and len(path.name) == 16
    assert path == tokenized_cache(cache, "abc", model, CONFIG)
    assert path != tokenized_cache(cache, "abd", model, CONFIG)   # another data stage
    (model / "tokenizer.json").write_text('{"changed": 1}')
    assert path != tokenized_cache(cache, "abc", model, CONFIG)
    assert path != tokenized_cache(cache, "abc", model, with_common(extra={"mask_history": True}))


def lf_saves(path):
    """What LLaMA-Factory does on a first run: save_to_disk, then log the line."""
    path.mkdir()
    (path / "dataset_dict.json").write_text('{"splits": ["train"]}')
    return f"[INFO|loader.py:333] Tokenized dataset is saved at {path}.\n"


def locked(path) -> bool:
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def test_saved_line_marks_the_cache_complete_even_if_training_fails_later(tmp_path):
    path = tmp_path / "tokenized" / "k"
    with pytest.raises(RuntimeError, match="killed at step 3"):
        with TokenizedCache(path, log=lambda m: None) as cache:
            cache.on_line(lf_saves(path))
            assert (path / COMPLETE).exists() and not locked(path)   # lock released as soon as it is complete
            raise RuntimeError("killed at step 3")
    logs = []
    with TokenizedCache(path, log=logs.append) as cache:
        assert cache.is_complete() and not locked(path)
    assert (path / "dataset_dict.json").exists()   # kept for the resumed run
    assert logs == [f"reusing tokenized dataset {path}"]


def test_a_cache_without_its_mark_is_removed_before_the_launch(tmp_path):
    path = tmp_path / "tokenized" / "k"
    with pytest.raises(RuntimeError):
        with TokenizedCache(path, log=lambda m: None):
            path.mkdir()
            (path / "data-00000-of-00001.arrow").write_text("half")   # killed during save_to_disk
            raise RuntimeError("killed")
    logs = []
    with TokenizedCache(path, log=logs.append) as cache:
        assert not path.exists() and locked(path)   # LLaMA-Factory rebuilds it under the lock
        cache.on_line("[INFO] Tokenized dataset is saved at /some/other/path.\n")   # another cache: ignored
        assert locked(path)
    assert "is incomplete" in logs[0] and not locked(path)


def test_a_successful_run_marks_a_cache_whose_line_was_not_logged(tmp_path):
    path = tmp_path / "tokenized" / "k"
    with TokenizedCache(path, log=lambda m: None) as cache:
        lf_saves(path)   # LLAMAFACTORY_VERBOSITY=WARN hides the line
        cache.mark_complete()
    assert (path / COMPLETE).exists()


def test_a_second_job_waits_for_the_first_and_reuses_its_cache(tmp_path):
    """Two jobs sharing the key (an LR sweep): the second neither deletes nor rebuilds."""
    path = tmp_path / "tokenized" / "k"
    second_logs, second_saw = [], {}

    def second_job():
        with TokenizedCache(path, log=second_logs.append) as cache:
            second_saw["complete"] = cache.is_complete()

    with TokenizedCache(path, log=lambda m: None) as first:
        path.mkdir()
        (path / "data-00000-of-00001.arrow").write_text("being written")
        thread = threading.Thread(target=second_job)
        thread.start()
        time.sleep(0.3)
        assert thread.is_alive() and path.exists()   # waiting, not deleting the half-written cache
        first.on_line(lf_saves_rest(path))
        thread.join(timeout=10)
    assert second_saw == {"complete": True}
    assert "waiting for another job" in second_logs[0] and second_logs[-1] == f"reusing tokenized dataset {path}"
    assert (path / "data-00000-of-00001.arrow").read_text() == "being written"


def lf_saves_rest(path):
    (path / "dataset_dict.json").write_text('{"splits": ["train"]}')
    return f"Tokenized dataset is saved at {path}.\n"
