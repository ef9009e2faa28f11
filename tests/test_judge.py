"""The judge as a config (evaluation/judge.py) and the checks before stage 1 (evaluate's preflight),
against a real HTTP server on loopback. The judge server here is tests/stub_endpoint.py, which
answers chat completions deterministically: the judge is not what is under test, the harness's
handling of it is (the real-server and real-lmms-eval cases are the slow tests)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from evaluation import judge
from evaluation.stage import run_task, task_key
from tests.conftest import REPO
from tests.stub_endpoint import StubEndpoint

PIXELS = {"min_pixels": 3136, "max_pixels": 12544}


def dead_url() -> str:
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def loopback(url: str, model: str = "judge") -> dict:
    return {"name": "loopback", "base_url": url, "model": model, "weights": "tiny/judge-weights", "api_key_env": None}


@pytest.fixture(scope="module")
def stub():
    server = StubEndpoint(model="judge")
    yield server
    server.close()


def test_the_outage_watch_speaks_once_the_judge_has_been_away_for_outage_s():
    import time

    server = StubEndpoint(model="judge")
    try:
        check = judge.outage_watch({**loopback(server.url), "outage_s": 0.4})
        assert check() is None
        server.model = "another"          # /models no longer lists the judge: away
        assert check() is None            # not yet for outage_s
        time.sleep(0.45)
        assert check() == f"judge 'loopback' at {server.url}/models serves ['another'], not 'judge'"
        server.model = "judge"            # back: the outage clock starts again at the next failure
        assert check() is None
        server.model = "another"
        assert check() is None
    finally:
        server.close()
    assert judge.watch_every_s({**loopback("http://x/v1"), "outage_s": 30}) == 5.0
    assert judge.watch_every_s({**loopback("http://x/v1"), "outage_s": 3}) == 1.0


def test_schema_names_each_bad_key():
    assert judge.problems({"name": "none"}) == []
    assert judge.problems(loopback("http://127.0.0.1:1/v1")) == []
    bad = {**loopback("http://127.0.0.1:1/v1/chat/completions"), "weights": "???", "port": 1, "outage_s": 120}
    assert judge.problems(bad) == [
        "judge.port: unknown key (known: name, base_url, model, weights, api_key_env, outage_s)",
        "judge.weights: required, a non-empty string",
        "judge.base_url='http://127.0.0.1:1/v1/chat/completions': the base URL (…/v1), not …/chat/completions",
        "judge.outage_s=120: seconds, more than 0 and less than 120 (lmms-eval scores a question 0 after about "
        "that long without its judge)"]
    for ok in (0.5, 30, 119):
        assert judge.problems({**loopback("http://127.0.0.1:1/v1"), "outage_s": ok}) == [], ok
    for wrong in (0, -1, "30", True, None):
        assert judge.problems({**loopback("http://127.0.0.1:1/v1"), "outage_s": wrong})[0].startswith(
            f"judge.outage_s={wrong!r}: seconds"), wrong


def test_each_judge_task_gets_the_url_form_its_client_posts_to():
    j = {**loopback("http://127.0.0.1:9/v1/"), "api_key_env": "MY_JUDGE_KEY"}
    env = {"MY_JUDGE_KEY": "sk-local"}
    assert judge.task_env(j, "mmbench_en_dev_local", env) == {
        "API_TYPE": "openai", "OPENAI_API_URL": "http://127.0.0.1:9/v1/chat/completions",
        "OPENAI_API_KEY": "sk-local", "MODEL_VERSION": "judge"}
    assert judge.task_env(j, "mathvista_testmini_format", env)["OPENAI_API_URL"] == "http://127.0.0.1:9/v1"
    assert judge.task_env(loopback("http://h/v1"), "mmvet", {})["OPENAI_API_KEY"] == "EMPTY"
    assert judge.identity(j) == {"name": "loopback", "model": "judge", "weights": "tiny/judge-weights",
                                 "base_url": "http://127.0.0.1:9/v1"}
    assert judge.identity({"name": "none"}) is None


def test_the_judge_must_answer_under_its_configured_name(stub):
    assert judge.answers(loopback(stub.url)) == (True, "")
    ok, why = judge.answers(loopback(stub.url, model="other"))
    assert not ok and why == f"judge 'loopback' at {stub.url}/models serves ['judge'], not 'other'"
    url = dead_url()
    ok, why = judge.answers(loopback(url))
    assert not ok and why == f"judge 'loopback' at {url}/models does not answer (ConnectError)"


def test_only_the_judge_tasks_key_changes_with_the_judge():
    plain, judged = {"task": "ai2d", "judge": False}, {"task": "mmvet", "judge": True}
    a, b = loopback("http://h/v1"), {**loopback("http://h/v1"), "weights": "other/weights"}
    # the stage passes no judge for a task that is not judged
    assert task_key(plain, "m", None) == task_key(plain, "m", None)
    assert task_key(judged, "m", a) != task_key(judged, "m", b) != task_key(judged, "m", None)


def test_a_task_scored_in_another_evaluate_folder_is_not_run_again(tmp_path):
    """Adding a judge gives the evaluate stage a new folder; its other tasks reuse their scores."""
    entry = {"benchmark": "AI2D", "task": "ai2d", "metric": "exact_match", "judge": False}
    old = tmp_path / "evaluate/aaaa/by_task/ai2d"
    old.mkdir(parents=True)
    (old / "score.json").write_text(json.dumps({"key": task_key(entry, "m", None), "value": 40.0, "n": 5,
                                                "reason": None}))
    new = tmp_path / "evaluate/bbbb/by_task/ai2d"
    got = run_task(entry, tmp_path / "no-model", new, benchmarks={"tasks": [entry]}, pixels=PIXELS, cfg={},
                   margs="m", judge=None, log=lambda *_: None, echo=False)
    assert got == (40.0, 5, None, None) and (new / "score.json").is_file()


def _harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_run_refuses_a_dead_judge_and_a_world_without_the_local_benchmarks_before_stage_1(tmp_path):
    results = f"paths.results_dir={tmp_path}"
    url = dead_url()
    done = _harness("run", results, "benchmarks=paper_table1_local", "judge=loopback", f"judge.base_url={url}",
                    "judge.weights=tiny/judge-weights")
    assert done.returncode == 2, done.stderr
    assert f"error: judge 'loopback' at {url}/models does not answer (ConnectError); start the judge" in done.stderr
    assert not (tmp_path / "store").exists()
    done = _harness("run", results, "world=small", "benchmarks=paper_table1_local")
    assert done.returncode == 2
    assert ("benchmarks=paper_table1_local reads world://benchmarks/... (tasks infovqa_val, docvqa_val"
            in done.stderr and "which this world does not build (world.table1_benchmarks: false" in done.stderr)
    assert not (tmp_path / "store").exists()
