"""The stage chain's bookkeeping: skip what is done, redo what changed or was forced, never
let a partial output look done, share stages between runs through the store.

These tests drive the Runner with small step functions that write files (the real stage
implementations are exercised end to end in test_embedded_run.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.runner import Runner, StageFailed
from harness.stage import Stage, chain_fingerprints
from harness.store import Store


def make_chain(lr: float = 1e-3, source: str = "dense") -> list[Stage]:
    return [
        Stage("init_vlm", "init_vlm", {"seed": 0}),
        Stage("data_prep.captions", "data_prep", {"source": source}, {"model": "init_vlm"}),
        Stage("train.alignment", "train", {"lr": lr}, {"model": "init_vlm"}, resumable=True, every_node=True),
        Stage("train.further_pretrain", "train", {"lr": 4e-5}, {"model": "train.alignment", "data": "data_prep.captions"},
              resumable=True, every_node=True),
    ]


class Recorder:
    """Step functions that record calls and write one output file each."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[str] = []
        self.fail_on = fail_on

    def step(self, ctx):
        self.calls.append(ctx.name)
        if ctx.name == self.fail_on:
            (ctx.out_dir / "half-written").write_text("x")
            raise RuntimeError("boom")
        inputs = {r: (p / "out.txt").read_text() for r, p in ctx.inputs.items()}
        (ctx.out_dir / "out.txt").write_text(json.dumps({"cfg": ctx.config, "in": inputs}))
        return {"n": 1}

    def steps(self):
        return {k: self.step for k in ("init_vlm", "data_prep", "train")}


def run(tmp_path, chain, rec, run_name="run", force=(), started=None):
    runner = Runner(Store(tmp_path / "store"), tmp_path / run_name, rec.steps(), started=started)
    return runner.run(chain, run_label=run_name, force=list(force))


def test_second_run_skips_every_stage(tmp_path):
    rec = Recorder()
    run(tmp_path, make_chain(), rec)
    assert rec.calls == ["init_vlm", "data_prep.captions", "train.alignment", "train.further_pretrain"]
    status = run(tmp_path, make_chain(), rec)
    assert len(rec.calls) == 4
    assert {s["state"] for s in status.data["stages"].values()} == {"skipped"}
    saved = json.loads((tmp_path / "run" / "status.json").read_text())
    assert saved["state"] == "done"


def test_changed_config_redoes_that_stage_and_everything_downstream(tmp_path):
    rec = Recorder()
    run(tmp_path, make_chain(lr=1e-3), rec)
    rec.calls.clear()
    run(tmp_path, make_chain(lr=2e-3), rec)
    assert rec.calls == ["train.alignment", "train.further_pretrain"]


def test_force_redoes_a_named_stage_and_every_stage_that_reads_it(tmp_path):
    rec = Recorder()
    run(tmp_path, make_chain(), rec)
    rec.calls.clear()
    status = run(tmp_path, make_chain(), rec, force=["data_prep.captions"])
    # Same fingerprint after the redo, but further pretraining read the old bytes: stale, redone.
    # train.alignment does not read the captions and stays done.
    assert rec.calls == ["data_prep.captions", "train.further_pretrain"]
    assert status.data["stages"]["train.alignment"]["state"] == "skipped"
    rec.calls.clear()
    run(tmp_path, make_chain(), rec, force=["train"])  # by kind
    assert rec.calls == ["train.alignment", "train.further_pretrain"]


def test_a_forced_shared_stage_is_redone_once_per_sweep(tmp_path):
    """Every job of `run -m ... force=[init_vlm]` carries the force; the first job redoes the
    shared stage, the later ones (same command start) find it redone and reuse it."""
    rec = Recorder()
    run(tmp_path, make_chain(source="dense"), rec, run_name="dense")
    run(tmp_path, make_chain(source="sparse"), rec, run_name="sparse")
    rec.calls.clear()
    started = time.time()
    run(tmp_path, make_chain(source="dense"), rec, run_name="dense", force=["init_vlm"], started=started)
    assert rec.calls == ["init_vlm", "data_prep.captions", "train.alignment", "train.further_pretrain"]
    rec.calls.clear()
    run(tmp_path, make_chain(source="sparse"), rec, run_name="sparse", force=["init_vlm"], started=started)
    # init_vlm and alignment are shared and already redone; the sparse captions read the old init_vlm
    assert rec.calls == ["data_prep.captions", "train.further_pretrain"]


def test_a_stage_older_than_its_input_is_redone_even_without_force(tmp_path):
    """Make's rule: an output computed before its input was recomputed is stale."""
    rec = Recorder()
    run(tmp_path, make_chain(), rec)
    marker = tmp_path / "run/stages/train.alignment/.done.json"
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "finished_at": time.time() + 5}))  # as if redone just now
    rec.calls.clear()
    run(tmp_path, make_chain(), rec)
    assert rec.calls == ["train.further_pretrain"]


def test_failed_stage_is_not_done_and_rerun_redoes_only_it(tmp_path):
    with pytest.raises(StageFailed, match="stage data_prep.captions failed: boom"):
        run(tmp_path, make_chain(), Recorder(fail_on="data_prep.captions"))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed"
    assert status["stages"]["data_prep.captions"]["state"] == "failed"
    assert status["stages"]["train.alignment"]["state"] == "pending"
    folder = Path(status["stages"]["data_prep.captions"]["dir"])
    assert not (folder / ".done.json").exists()
    rec = Recorder()
    run(tmp_path, make_chain(), rec)
    assert rec.calls == ["data_prep.captions", "train.alignment", "train.further_pretrain"]
    assert not (folder / "half-written").exists()  # non-resumable: the partial output was discarded


def test_two_runs_share_stages_that_do_not_depend_on_the_caption_source(tmp_path):
    rec = Recorder()
    run(tmp_path, make_chain(source="dense"), rec, run_name="dense")
    rec.calls.clear()
    run(tmp_path, make_chain(source="sparse"), rec, run_name="sparse")
    assert rec.calls == ["data_prep.captions", "train.further_pretrain"]
    a, b = (tmp_path / "dense/stages/train.alignment"), (tmp_path / "sparse/stages/train.alignment")
    assert a.resolve() == b.resolve()
    fps = chain_fingerprints(make_chain(source="dense"))
    assert a.resolve().name == fps["train.alignment"][:16]


def test_done_marker_must_carry_the_fingerprint(tmp_path):
    rec = Recorder()
    run(tmp_path, make_chain(), rec)
    marker = tmp_path / "run/stages/init_vlm/.done.json"
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "fingerprint": "something-else"}))
    rec.calls.clear()
    run(tmp_path, make_chain(), rec)
    # init_vlm is redone, so everything that read it is stale too
    assert rec.calls == ["init_vlm", "data_prep.captions", "train.alignment", "train.further_pretrain"]


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests.test_runner import make_chain
    from harness.runner import Runner
    from harness.store import Store

    def step(ctx):
        if ctx.name == "train.alignment" and not Path({flag!r}).exists():
            (ctx.out_dir / "checkpoint-1").mkdir()
            Path({ready!r}).touch()
            time.sleep(60)   # killed here
        (ctx.out_dir / "out.txt").write_text("ok")
        print("RAN", ctx.name, flush=True)

    Runner(Store(Path({store!r})), Path({run!r}), {{k: step for k in ("init_vlm", "data_prep", "train")}}).run(
        make_chain(), run_label="run")
""")


def test_sigkill_mid_stage_then_rerun_redoes_only_the_interrupted_stage(tmp_path):
    repo = str(Path(__file__).resolve().parent.parent)
    ready, flag = tmp_path / "ready", tmp_path / "second-run"
    script = KILL_SCRIPT.format(repo=repo, flag=str(flag), ready=str(ready), store=str(tmp_path / "store"),
                                run=str(tmp_path / "run"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["stages"]["train.alignment"]["state"] == "running"
    assert not (tmp_path / "run/stages/train.alignment/.done.json").exists()
    flag.touch()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    ran = [line for line in out.splitlines() if line.startswith("RAN ")]
    assert ran == ["RAN train.alignment", "RAN train.further_pretrain"]
    # train is resumable: what the killed attempt left (its checkpoint) is still there
    assert (tmp_path / "run/stages/train.alignment/checkpoint-1").is_dir()


def test_follower_node_joins_training_and_waits_for_node_0(tmp_path):
    """Node rank 1 of a multi-node job: runs only the training steps (its torchrun ranks),
    never computes or marks other stages, and finishes when node 0 has marked everything."""
    import threading

    joined = {"train.alignment": threading.Event(), "train.further_pretrain": threading.Event()}
    follower, leader = Recorder(), Recorder()

    def follower_step(ctx):
        follower.calls.append(ctx.name)
        joined[ctx.name].set()

    def leader_step(ctx):
        if ctx.name in joined:      # a collective: both nodes must be in it
            assert joined[ctx.name].wait(timeout=20)
        return leader.step(ctx)

    store = Store(tmp_path / "store")
    node1 = Runner(store, tmp_path / "run", {k: follower_step for k in ("init_vlm", "data_prep", "train")},
                   node_rank=1, poll_seconds=0.05)
    thread = threading.Thread(target=node1.run, args=(make_chain(),), kwargs={"run_label": "run"})
    thread.start()
    time.sleep(0.3)
    assert follower.calls == []          # waiting for node 0's init_vlm
    Runner(store, tmp_path / "run", {k: leader_step for k in ("init_vlm", "data_prep", "train")},
           node_rank=0).run(make_chain(), run_label="run")
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert leader.calls == ["init_vlm", "data_prep.captions", "train.alignment", "train.further_pretrain"]
    assert follower.calls == ["train.alignment", "train.further_pretrain"]
    node1_status = json.loads((tmp_path / "run" / "status.node1.json").read_text())
    assert node1_status["state"] == "done"
    assert json.loads((tmp_path / "run" / "status.json").read_text())["stages"]["init_vlm"]["state"] == "done"


def test_plan_shows_done_to_do_and_stale_stages(results_dir):
    from harness.chain import build_chain
    from harness.config import compose_config, to_plain
    from harness.plan import render_plan

    cfg = to_plain(compose_config(["until=data_prep.align_data"]))
    chain = build_chain(cfg)
    fps = chain_fingerprints(chain)
    store = Store(Path(cfg["paths"]["store_dir"]))
    for stage in chain[:2]:  # world and init_vlm done, in that order
        folder = store.dir_for(stage.kind, fps[stage.name])
        folder.mkdir(parents=True)
        store.mark_done(folder, fps[stage.name], {})
    states = [line for line in render_plan(cfg).splitlines() if line[:1].isdigit()]
    assert [s.split("  ")[0] for s in states] == ["1. world [done]", "2. init_vlm [done]",
                                                  "3. data_prep.align_data [to do]"]
    folder = store.dir_for("data_prep", fps["data_prep.align_data"])
    folder.mkdir(parents=True)
    store.mark_done(folder, fps["data_prep.align_data"], {})
    time.sleep(0.01)
    init = store.dir_for("init_vlm", fps["init_vlm"])
    store.mark_done(init, fps["init_vlm"], {})   # init_vlm redone (forced) after the data
    states = [line for line in render_plan(cfg).splitlines() if line[:1].isdigit()]
    assert states[2].startswith("3. data_prep.align_data [to redo: its input init_vlm was recomputed after it]")
