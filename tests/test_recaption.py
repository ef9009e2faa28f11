"""The recaption stage without a model: its place in the chain, what its fingerprint holds, the
journal that makes a killed run resumable, and the client's rules (retry, stop on 4xx, model
check, endpoint down, the key never written) against a scripted loopback endpoint."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from harness.chain import build_chain
from harness.config import compose_config, to_plain
from harness.stage import chain_fingerprints
from recaption.client import EndpointRejected
from recaption.endpoint import EndpointConfigError, parse_endpoint
from recaption.journal import Journal, JournalError, load
from recaption.stage import FAILURES, JOURNAL, RUNS, caption_images, write_source
from tests.stub_endpoint import StubEndpoint

RECAPTIONED = "captions=recaptioned_synthetic"


def fingerprints(*overrides: str) -> dict[str, str]:
    return chain_fingerprints(build_chain(to_plain(compose_config([RECAPTIONED, *overrides]))))


def test_a_recaptioned_source_puts_recaption_between_its_images_and_its_data_prep(results_dir):
    stages = build_chain(to_plain(compose_config([RECAPTIONED])))
    assert [s.name for s in stages] == [
        "world", "init_vlm", "data_prep.align_data", "data_prep.recaption_images", "data_prep.sft_data",
        "recaption", "data_prep.captions", "train.alignment", "train.further_pretrain", "train.sft", "evaluate",
        "report"]
    by_name = {s.name: s for s in stages}
    assert by_name["recaption"].inputs == {"images": "data_prep.recaption_images", "world": "world"}
    assert by_name["data_prep.captions"].inputs == {"model": "init_vlm", "recaption": "recaption", "world": "world"}


@pytest.mark.parametrize("override", ["captioner.concurrency=2", "captioner.base_url=http://other:9000/v1",
                                      "captioner.timeout_s=5", "captioner.retries=9", "captioner.api_key_env=MY_KEY",
                                      "captioner.max_failed_fraction=0.5", "captioner.progress_s=1",
                                      "captioner.serve.port=18000", "captioner.serve.replicas=3"])
def test_how_the_captioner_is_reached_changes_no_fingerprint(override, results_dir):
    assert fingerprints(override) == fingerprints()


@pytest.mark.parametrize("override", ["captioner.temperature=0.7", "captioner.top_p=0.9", "captioner.max_tokens=8",
                                      "captioner.repetition_penalty=1.1", "captioner.seed=1",
                                      "captioner.prompt=Describe.", "captioner.model=other",
                                      "captioner.identity=org/x@abc", "captioner=caprl_3b"])
def test_what_the_captioner_writes_moves_recaption_and_everything_after(override, results_dir):
    base, changed = fingerprints(), fingerprints(override)
    moved = {n for n in base if changed[n] != base[n]}
    assert {"recaption", "data_prep.captions", "train.further_pretrain", "report"} <= moved
    assert not moved & {"world", "init_vlm", "data_prep.recaption_images", "train.alignment"}


def test_the_saved_captioner_config_holds_the_variable_name_only(results_dir, monkeypatch):
    monkeypatch.setenv("CAPTIONER_API_KEY", "sk-secret-123456")
    cfg = to_plain(compose_config([RECAPTIONED, "captioner.api_key_env=CAPTIONER_API_KEY"]))
    assert "sk-secret-123456" not in json.dumps(cfg)
    assert cfg["captioner"]["api_key_env"] == "CAPTIONER_API_KEY"


def test_endpoint_config_errors_name_the_key():
    with pytest.raises(EndpointConfigError, match=r"captioner: unknown key temprature; valid keys: .*temperature"):
        parse_endpoint({"name": "x", "model": "m", "base_url": "http://h/v1", "temprature": 1})
    with pytest.raises(EndpointConfigError, match=r"captioner: set base_url .* or serve"):
        parse_endpoint({"name": "x", "model": "m"})
    with pytest.raises(EndpointConfigError, match=r"captioner.model is required"):
        parse_endpoint({"name": "x", "base_url": "http://h/v1"})


# ---------------------------------------------------------------- journal

def test_a_torn_last_line_is_cut_and_a_complete_one_kept(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a", "texts": ["x"]}\n{"key": "b", "te')
    assert list(load(path)) == ["a"]
    assert path.read_text() == '{"key": "a", "texts": ["x"]}\n'
    path.write_text('{"key": "a"}\n{"key": "b"}')
    assert list(load(path)) == ["a", "b"]
    assert path.read_text() == '{"key": "a"}\n{"key": "b"}\n'


def test_damage_inside_the_journal_and_duplicates_stop_with_the_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(JournalError, match=r"j.jsonl, line 2: not a journal record"):
        load(path)
    path.write_text('{"key": "a"}\n{"key": "a"}\n')
    with pytest.raises(JournalError, match=r"line 2: key 'a' recorded twice"):
        load(path)
    path.write_text('{"key": "a"}\n')
    with Journal(path) as j, pytest.raises(JournalError, match="already recorded"):
        j.append({"key": "a"})


# ---------------------------------------------------------------- client rules (scripted endpoint)

def endpoint(url: str, **extra):
    return parse_endpoint({"name": "cap", "model": "stub", "base_url": url, "concurrency": 2, "retries": 2,
                           "backoff_s": 0.01, "timeout_s": 10, "progress_s": 60, **extra})


def write_pngs(root, names: list[str], size: int = 16):
    """Small solid images, each its own colour, in a new folder."""
    from PIL import Image

    root.mkdir()
    for i, name in enumerate(names):
        Image.new("RGB", (size, size), (i * 20, 0, 0)).save(root / name)
    return root


@pytest.fixture
def images(tmp_path):
    return write_pngs(tmp_path / "images", [f"{i}.png" for i in range(4)])


@pytest.fixture
def stub():
    server = StubEndpoint()
    yield server
    server.close()


def run(ep, keys, root, out):
    out.mkdir(exist_ok=True)
    return asyncio.run(caption_images(ep, keys, root, out, log=lambda m: None))


def test_5xx_and_429_are_retried_and_every_image_is_captioned_once(stub, images, tmp_path):
    stub.script = [503, 429, 500]
    out = run(endpoint(stub.url), ["0.png", "1.png", "2.png", "3.png"], images, tmp_path / "o")
    assert (out.succeeded, out.failed) == (4, {})
    assert len(stub.requests) == 7                                  # 3 refused + 4 answered
    lines = (tmp_path / "o" / JOURNAL).read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == ["0.png", "1.png", "2.png", "3.png"]
    body = stub.requests[-1]
    assert body["model"] == "stub" and body["n"] == 1 and body["temperature"] == 1.0 and body["top_p"] == 1.0
    assert body["max_tokens"] == 2048 and body["repetition_penalty"] == 1.0
    content = body["messages"][0]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1] == {"type": "text", "text": "Please describe this image in detail."}
    assert len(body["messages"]) == 1                              # no system prompt


def test_a_re_run_requests_only_what_is_missing_and_failures_are_listed(stub, images, tmp_path):
    keys = ["0.png", "1.png", "missing.png", "3.png"]
    ep = endpoint(stub.url, max_failed_fraction=0.0)
    out = run(ep, keys, images, tmp_path / "o")
    assert out.failed == {"missing.png": f"image {images / 'missing.png'}: No such file or directory"}
    with pytest.raises(RuntimeError, match=r"1 of 4 images failed \(25.0% > max_failed_fraction 0.0%\)"):
        write_source(tmp_path / "o", keys, out, ep)
    assert json.loads((tmp_path / "o" / FAILURES).read_text())["key"] == "missing.png"
    (images / "missing.png").write_bytes((images / "0.png").read_bytes())
    out = run(ep, keys, images, tmp_path / "o")
    runs = [json.loads(x)["requested"] for x in (tmp_path / "o" / RUNS).read_text().splitlines()]
    assert runs == [keys, ["missing.png"]]
    assert (out.done_before, out.succeeded) == (3, 1)
    summary = write_source(tmp_path / "o", keys, out, ep)
    assert (summary["images"], summary["captioned"], summary["failed"]) == (4, 4, 0)
    rows = [json.loads(x) for x in (tmp_path / "o" / "captions.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == keys                       # image-set order, each once
    assert rows[0]["caption"] == "caption 0 \\boxed{red}"


def test_a_4xx_stops_the_run_with_what_to_fix(stub, images, tmp_path):
    stub.script = [404]
    with pytest.raises(EndpointRejected, match=r"rejected with HTTP 404: .*check `model` \('stub'\)"):
        run(endpoint(stub.url), ["0.png", "1.png"], images, tmp_path / "o")


def test_a_model_name_the_endpoint_does_not_serve_stops_before_any_request(stub, images, tmp_path):
    with pytest.raises(EndpointRejected, match=r"serves \['stub'\], not model='caprl'.*--served-model-name"):
        run(endpoint(stub.url, model="caprl"), ["0.png"], images, tmp_path / "o")
    assert stub.requests == []


@pytest.mark.parametrize("body,what", [(b"<html>Gradio</html>", "is not JSON"),
                                       (b'{"detail": "Not Found"}', "is not an OpenAI model list")])
def test_a_models_reply_that_is_no_model_list_names_the_url(stub, images, tmp_path, body, what):
    stub.models_body = body
    with pytest.raises(EndpointRejected, match=rf"GET {re.escape(stub.url)}/models answered 200 with a body that "
                                               rf"{what} \({re.escape(repr(body.decode()))}\)"):
        run(endpoint(stub.url), ["0.png"], images, tmp_path / "o")
    assert stub.requests == []


def test_an_endpoint_that_is_down_fails_clearly(images, tmp_path):
    from recaption.serve import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RuntimeError, match=rf"endpoint {url} cannot be reached .*connection failed.*3 attempts"):
        run(endpoint(url), ["0.png"], images, tmp_path / "o")


def test_the_key_is_sent_but_never_written(stub, images, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONER_API_KEY", "sk-secret-123456")
    run(endpoint(stub.url, api_key_env="CAPTIONER_API_KEY"), ["0.png"], images, tmp_path / "o")
    assert stub.auth == ["Bearer sk-secret-123456"]
    for path in (tmp_path / "o").iterdir():
        assert "sk-secret-123456" not in path.read_text()
    monkeypatch.delenv("CAPTIONER_API_KEY")
    with pytest.raises(EndpointConfigError, match="api_key_env names 'CAPTIONER_API_KEY', but that variable is not set"):
        run(endpoint(stub.url, api_key_env="CAPTIONER_API_KEY"), ["1.png"], images, tmp_path / "o2")


def test_the_server_command_masks_the_key_in_its_log(tmp_path):
    import sys

    from stagekit import Serving

    log = tmp_path / "server.log"
    code = "import os, time; print('key is', os.environ['API_KEY'], flush=True); time.sleep(30)"
    with Serving([sys.executable, "-c", code], env={"API_KEY": "sk-secret-123456"}, log_path=log) as srv:
        for _ in range(100):
            if srv.tail:
                break
            time.sleep(0.05)
    text = log.read_text()
    assert "key is ***" in text and "API_KEY='***'" in text and "sk-secret-123456" not in text
    assert not srv.alive()


# ---------------------------------------------------------------- image sets

def test_an_image_list_is_read_relative_to_its_root_once_per_image(tmp_path):
    from recaption.images import ImageSetError, listed_images

    listing = tmp_path / "list.txt"
    listing.write_text(f"# the images to re-caption\na/1.png\n\n./a/2.png\na/1.png\n{tmp_path}/root/b/3.png\n")
    assert listed_images(str(listing), str(tmp_path / "root")) == ["a/1.png", "a/2.png", "b/3.png"]
    listing.write_text("a/1.png\n../escape.png\n")
    with pytest.raises(ImageSetError, match=r"list.txt, line 2: image '../escape.png' is outside image_root"):
        listed_images(str(listing), str(tmp_path / "root"))


def test_the_images_of_a_data_prep_output_in_row_order(tmp_path):
    from recaption.images import prepared_images

    shards = tmp_path / "prep" / "src"
    shards.mkdir(parents=True)
    (tmp_path / "prep" / "dataset_info.json").write_text(json.dumps({"src": {"file_name": str(shards)}}))
    root = tmp_path / "images"
    said = [{"role": "assistant", "content": "a line\u2028separator, raw"}]   # as orjson writes it: not escaped
    rows = [{"messages": said, "images": [f"{root}/b.png"]}, {"messages": [], "images": [f"{root}/a.png"]},
            {"messages": [], "images": [f"{root}/b.png"]}]
    (shards / "shard-00000.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert prepared_images(tmp_path / "prep", str(root)) == ["b.png", "a.png"]


def test_empty_and_garbage_replies_are_asked_again_then_listed_never_journaled(images, tmp_path):
    """An empty, blank or null caption is no caption, and a 200 whose body is not a chat
    completion is a server hiccup: both are asked for again; past the retry limit the image is a
    failure with its reason, and the next run asks for it again."""
    server = StubEndpoint(replies=["", "   \n", None, b"<html>oops</html>"])
    try:
        out = run(endpoint(server.url, retries=4), ["0.png"], images, tmp_path / "o")
        assert (out.succeeded, out.failed) == (1, {}) and len(server.requests) == 5
        server.replies = [""] * 3
        out = run(endpoint(server.url, retries=2), ["1.png"], images, tmp_path / "p")
        assert out.failed == {"1.png": "1.png: the endpoint returned an empty completion (3 times)"}
        assert not (tmp_path / "p" / JOURNAL).exists() or "1.png" not in (tmp_path / "p" / JOURNAL).read_text()
        out = run(endpoint(server.url, retries=2), ["1.png"], images, tmp_path / "p")   # asked again, now answered
        assert (out.succeeded, out.failed) == (1, {})
    finally:
        server.close()


def test_captions_cut_at_max_tokens_are_counted_and_warned_about(stub, images, tmp_path):
    stub.finish_reason = "length"
    ep = endpoint(stub.url)
    out = run(ep, ["0.png", "1.png"], images, tmp_path / "o")
    said: list[str] = []
    summary = write_source(tmp_path / "o", ["0.png", "1.png"], out, ep, said.append)
    assert (summary["captioned"], summary["cut_at_max_tokens"]) == (2, 2)
    assert said == ["warning: 2 of 2 captions stopped at max_tokens=2048 (finish_reason 'length'): they end "
                    "mid-sentence; raise max_tokens or check the captioner"]
