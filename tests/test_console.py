"""What a run shows: one line per state change on a non-terminal stdout (CI, SLURM logs), the
running stage's progress from its kind's reader, the failing log's last lines; and `status`,
which reads only the run folders."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys

import pytest

from harness.console import Console
from harness.runner import Runner, StageFailed
from harness.store import Store
from harness.watch import describe, main as status_main
from tests.conftest import REPO, harness_cmd, subprocess_env
from tests.test_runner import Recorder, make_chain


def run_with_console(tmp_path, rec, chain=None):
    chain = chain or make_chain()
    out = io.StringIO()
    with Console("exp/run", [s.name for s in chain], stream=out, live=False) as console:
        runner = Runner(Store(tmp_path / "store"), tmp_path / "run", rec.steps(), echo=False, console=console)
        try:
            runner.run(chain, run_label="exp/run")
        except StageFailed:
            pass
    return out.getvalue().splitlines()


def test_plain_console_prints_one_line_per_state_change(tmp_path):
    lines = run_with_console(tmp_path, Recorder())
    assert lines[0] == "[harness] exp/run: 4 stages"
    assert [line.split(" in ")[0] for line in lines[1:]] == [
        "[harness] init_vlm: running", "[harness] init_vlm: done",
        "[harness] data_prep.captions: running", "[harness] data_prep.captions: done",
        "[harness] train.alignment: running", "[harness] train.alignment: done",
        "[harness] train.further_pretrain: running", "[harness] train.further_pretrain: done"]
    again = run_with_console(tmp_path, Recorder())
    assert again[1:] == [f"[harness] {s.name}: skipped (done already)" for s in make_chain()]


def test_a_failed_stage_shows_its_reason_and_the_last_lines_of_its_log(tmp_path):
    lines = run_with_console(tmp_path, Recorder(fail_on="train.alignment"))
    failed = next(line for line in lines if line.startswith("[harness] train.alignment: failed"))
    assert failed.endswith("(RuntimeError: boom)")
    log = tmp_path / "run" / "logs" / "train.alignment.log"
    at = lines.index(f"[harness] last lines of {log}:")
    assert lines[at + 1:][-1].strip() == "RuntimeError: boom"   # the traceback's last line


def test_progress_lines_come_from_the_kinds_reader_at_the_interval():
    out = io.StringIO()
    reads = iter([{"text": "step 20/200, loss 6.3"}, {"text": "step 40/200, loss 5.1"}] + [None] * 100)
    with Console("r", ["train.sft"], stream=out, live=False, interval=0.0) as console:
        console.started("train.sft", watch=lambda: next(reads))
        import time

        deadline = time.time() + 10   # the poller's first read shows; wait for it, not a fixed time
        while "step" not in out.getvalue() and time.time() < deadline:
            time.sleep(0.01)
        console.finished("train.sft", "done", 1.0)
    shown = [line for line in out.getvalue().splitlines() if "step" in line]
    assert shown[:1] == ["[harness] train.sft: step 20/200, loss 6.3"]


def test_training_progress_reads_llamafactorys_trainer_log(tmp_path):
    from train.stage import progress

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "trainer_log.jsonl").write_text(
        json.dumps({"current_steps": 20, "total_steps": 200, "loss": 6.308, "elapsed_time": "0:00:10",
                    "remaining_time": "0:01:30"}) + "\n")
    info = progress(tmp_path, {"stage": {"global_batch_size": 4}})
    assert info["text"] == "step 20/200, loss 6.308, 8.0 samples/s, ETA 0:01:30"
    assert progress(tmp_path / "nothing", {"stage": {"global_batch_size": 4}}) is None


def write_status(folder, state, stages, error=None, pid=None):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"run": f"embedded/{folder.name}", "state": state, "error": error, "host": socket.gethostname(),
            "pid": pid or os.getpid(), "stages": stages}
    (folder / "status.json").write_text(json.dumps(data))


def test_status_of_a_sweep_lists_the_failed_job_and_its_reason_and_exits_1(tmp_path, capsys):
    sweep = tmp_path / "sweeps" / "embedded"
    write_status(sweep / "captions=vanilla", "done", {"init_vlm": {"state": "done", "seconds": 3.0}})
    write_status(sweep / "captions=synthetic_dense", "failed",
                 {"init_vlm": {"state": "skipped"}, "train.sft": {"state": "failed", "seconds": 4.5,
                                                                  "error": "CommandFailed: exited with 1"}},
                 error="stage train.sft failed: llamafactory-cli exited with 1")
    assert status_main([str(sweep)]) == 1
    out = capsys.readouterr().out
    assert "embedded/captions=synthetic_dense  [failed]" in out
    assert "  train.sft                failed           4.5 s  CommandFailed: exited with 1" in out
    assert "error: stage train.sft failed: llamafactory-cli exited with 1" in out
    assert "embedded/captions=vanilla  [done]" in out


def test_a_run_whose_process_died_mid_stage_is_interrupted_not_running(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    run = tmp_path / "runs" / "embedded" / "tiny-x"
    write_status(run, "running", {"train.sft": {"state": "running"}}, pid=int(dead))
    text, state = describe(run / "status.json")
    assert state == "interrupted"
    assert "train.sft                interrupted" in text and "re-run the same command to resume" in text
    write_status(run, "running", {"train.sft": {"state": "running"}})   # this process: alive
    assert describe(run / "status.json")[1] == "running"


def test_status_command_exit_codes(tmp_path):
    run = tmp_path / "runs" / "embedded" / "tiny-x"
    write_status(run, "done", {"init_vlm": {"state": "done", "seconds": 1.0}})
    ok = subprocess.run(harness_cmd("status", str(run)), capture_output=True, text=True, cwd=REPO,
                        env=subprocess_env(tmp_path))
    assert ok.returncode == 0 and ok.stdout.startswith("embedded/tiny-x  [done]")
    none = subprocess.run(harness_cmd("status", str(tmp_path / "empty")), capture_output=True, text=True,
                          cwd=REPO, env=subprocess_env(tmp_path))
    assert none.returncode == 2 and "no run folders" in none.stderr


@pytest.mark.parametrize("name,keys", [
    ("none", {"report_to": "none"}),
    ("tensorboard", {"report_to": "tensorboard", "run_name": "embedded/tiny-x/train.sft"}),
    ("wandb", {"report_to": "wandb", "run_name": "embedded/tiny-x/train.sft"}),
])
def test_tracker_keys_name_the_run_experiment_job_stage(name, keys):
    import tracking

    identity = {"experiment": "embedded", "job": "tiny-x", "group": "runs/embedded",
                "caption_source": "Synthetic-Dense", "backbone": "Tiny+TinyViT"}
    tracker = {"name": name, "dir": "/r/tensorboard", "project": "p", "mode": "offline"}
    assert tracking.lf_keys(tracker, identity, "train.sft") == keys
    if name == "tensorboard":   # transformers 5.6 reads the folder from the environment only
        assert tracking.tracker_env(tracker, identity, "train.sft") == {
            "TENSORBOARD_LOGGING_DIR": "/r/tensorboard/embedded/tiny-x/train.sft"}
    if name == "wandb":
        assert tracking.tracker_env(tracker, identity) == {
            "WANDB_PROJECT": "p", "WANDB_RUN_GROUP": "runs/embedded", "WANDB_DIR": "/r/tensorboard",
            "WANDB_TAGS": "captions:Synthetic-Dense,backbone:Tiny+TinyViT", "WANDB_MODE": "offline"}


def test_plan_of_a_run_in_progress_shows_the_measured_rate_and_eta(results_dir):
    """A training stage part-way through (its trainer log written, not done): plan prints what
    it measured, not only the cost model's assumption."""
    from harness.chain import build_chain
    from harness.config import compose_config, to_plain
    from harness.plan import render_plan
    from harness.stage import chain_fingerprints
    from harness.store import Store

    cfg = to_plain(compose_config([]))
    chain = build_chain(cfg)
    fps = chain_fingerprints(chain)
    stage = next(s for s in chain if s.name == "train.alignment")
    folder = Store(results_dir / "store").dir_for("train", fps[stage.name]) / "model"
    folder.mkdir(parents=True)
    (folder / "trainer_log.jsonl").write_text(json.dumps(
        {"current_steps": 50, "total_steps": 200, "loss": 6.3, "elapsed_time": "0:00:25",
         "remaining_time": "0:01:15"}) + "\n")
    plan = render_plan(cfg)
    block = plan.split(". train.alignment [")[1].split("\n\n")[0]
    assert "in progress: step 50/200, 64.0 samples/s measured, ETA 0:01:15" in block


def test_library_info_logs_stay_out_of_the_console():
    """The job's logging config (Hydra's job_logging, as composed) lets a library's warnings through
    but not its INFO lines: httpx logs one per HTTP request, a million for a million images."""
    import logging
    import logging.config

    from omegaconf import OmegaConf

    from harness.config import compose_config
    from tests.stub_endpoint import StubEndpoint

    conf = OmegaConf.to_container(compose_config([]).hydra.job_logging, resolve=False)
    conf["handlers"] = {"console": {**conf["handlers"]["console"], "stream": "ext://sys.stderr"}}
    conf["root"]["handlers"] = ["console"]
    stub = StubEndpoint()
    code = ("import logging.config, httpx, json, sys\n"
            f"logging.config.dictConfig(json.loads({json.dumps(json.dumps(conf))}))\n"
            f"httpx.get({stub.url!r} + '/models')\n"
            "logging.getLogger('httpx').warning('a warning')\n"
            "logging.getLogger('harness').info('our own line')\n"
            "import numexpr\n")   # logs 'NumExpr defaulting to N threads.' at INFO on import
    try:
        import subprocess
        import sys

        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMEXPR_")}   # else numexpr stays quiet
        err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stderr
    finally:
        stub.close()
    assert "HTTP Request" not in err and "NumExpr" not in err and "a warning" in err and "our own line" in err, err
