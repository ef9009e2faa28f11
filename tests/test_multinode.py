"""Two nodes for real, on one machine: two harness processes started as node 0 and node 1 of
launcher=multinode (MASTER_ADDR=127.0.0.1, one gloo process per node), each running
`llamafactory-cli` under torchrun. They train the embedded chain's training stages as one
2-rank job, and a node killed in the middle of training fails the other in bounded time, with
the lost node named; re-running both nodes resumes from the last complete checkpoint."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SMALL_WORLD, harness_cmd, read_status, run_harness, subprocess_env

pytestmark = pytest.mark.slow
TRAIN = ["train.alignment", "train.further_pretrain", "train.sft"]
NOT_TRAIN = ["world", "init_vlm", "data_prep.align_data", "data_prep.captions", "data_prep.sft_data"]
# A few steps per stage, a checkpoint every 2, a loss every step; evaluation is not a node's
# business here (only node 0 runs it, as any non-training stage).
SHORT = ["train.common.max_steps=4", "train.common.save_steps=2", "train.common.logging_steps=1", "until=train.sft",
         *SMALL_WORLD]
HEARTBEAT_S = 2
TIMEOUT_S = 60


def two_nodes(port: int) -> list[str]:
    return ["launcher=multinode", "launcher.nnodes=2", "launcher.nproc_per_node=1", "launcher.master_addr=127.0.0.1",
            f"launcher.master_port={port}", f"launcher.heartbeat_s={HEARTBEAT_S}", f"launcher.timeout_s={TIMEOUT_S}",
            "launcher.follower_wait_s=600"]


def start_node(results: Path, rank: int, overrides: list[str], out: Path) -> subprocess.Popen:
    """One node: the harness and, under it, llamafactory-cli, torchrun and the node's rank."""
    log = open(out, "w")
    return subprocess.Popen(harness_cmd("run", *overrides, f"launcher.node_rank={rank}"), cwd=REPO,
                            env=subprocess_env(results), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_both(results: Path, overrides: list[str], tag: str) -> list[subprocess.Popen]:
    return [start_node(results, r, overrides, results.parent / f"{tag}.node{r}.out") for r in (0, 1)]


def kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL every process of a node at once, as when its machine dies: the whole tree, since
    torchrun starts its ranks in sessions of their own (killing the harness's group alone would
    leave the rank training on)."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


@pytest.fixture
def nodes():
    """Started nodes; whatever a failing test leaves running is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        kill_node(proc)


def wait_all(procs: list[subprocess.Popen], timeout: float = 600) -> list[int]:
    deadline = time.time() + timeout
    return [p.wait(timeout=max(1, deadline - time.time())) for p in procs]


def losses(stage_dir: Path) -> list[float]:
    state = json.loads((stage_dir / "model" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def test_two_nodes_train_as_one_two_rank_job_like_one_node_with_two_processes(shared_results, tmp_path, nodes):
    results = shared_results
    procs = start_both(results, [*two_nodes(29731), *SHORT], "pair")
    nodes += procs
    assert wait_all(procs) == [0, 0], (results.parent / "pair.node0.out").read_text()[-4000:]
    run_dir = results / "runs" / "embedded" / "tiny-synthetic_dense"
    node0, node1 = read_status(run_dir), json.loads((run_dir / "status.node1.json").read_text())
    assert node0["state"] == node1["state"] == "done"
    assert [s for s, v in node0["stages"].items() if v["state"] in ("done", "skipped")] == NOT_TRAIN + TRAIN
    # Node 1 computed and marked nothing outside training: every stage is "done by node 0".
    assert {n: (v["state"], v.get("note")) for n, v in node1["stages"].items()} == \
        {n: ("skipped", "done by node 0") for n in NOT_TRAIN + TRAIN}
    assert not any((run_dir / "logs" / f"{n}.node1.log").exists() for n in NOT_TRAIN)
    for name in TRAIN:
        lead = (run_dir / "logs" / f"{name}.log").read_text()
        follow = (run_dir / "logs" / f"{name}.node1.log").read_text()
        # LLaMA-Factory's per-rank line: one rank per node, one world of two.
        assert "Process rank: 0, world size: 2" in lead and "Multi-node training enabled: num nodes: 2, node rank: 0" in lead
        assert "Process rank: 1, world size: 2" in follow and "node rank: 1" in follow
        assert f"joining {name} as a follower node" in follow
    # The same data, seed and world size on one node with two processes: the same losses.
    # DistributedSampler gives rank r the same batches whatever the node layout, and gloo sums
    # two ranks' gradients in the same order, so the losses agree to float32 rounding.
    reference = tmp_path / "one_node"
    run_harness(results, "run", "launcher.nproc_per_node=2", "launcher.master_port=29741", *SHORT,
                f"hydra.run.dir={reference}")
    one_node = read_status(reference)
    for name in TRAIN:
        two, one = losses(Path(node0["stages"][name]["dir"])), losses(Path(one_node["stages"][name]["dir"]))
        assert len(two) == len(one) == 4
        assert two == pytest.approx(one, rel=1e-5, abs=1e-6), name


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def complete_checkpoints(model: Path) -> list[int]:
    from train.checkpoints import checkpoints, is_complete

    return [int(c.name.split("-")[1]) for c in checkpoints(model) if is_complete(c)] if model.exists() else []


def kill_node_after_a_checkpoint(results: Path, procs: list[subprocess.Popen], victim: int, model: Path,
                                 after: int) -> float:
    """SIGKILL node `victim` (its whole process group) once a checkpoint newer than `after` is
    complete; the time of the kill."""
    wait_for(lambda: any(c > after for c in complete_checkpoints(model)) or any(p.poll() is not None for p in procs),
             400, f"a checkpoint after step {after}")
    assert all(p.poll() is None for p in procs), "a node ended before the kill"
    kill_node(procs[victim])
    return time.time()


def test_a_killed_node_fails_the_other_in_bounded_time_and_both_resume(shared_results, nodes):
    results = shared_results
    # Long enough to kill in the middle twice: 100 steps, a checkpoint every 10.
    overrides = [*two_nodes(29751), "train.common.max_steps=100", "train.common.save_steps=10",
                 "train.common.logging_steps=10", "until=train.alignment", "captions=synthetic_sparse", *SMALL_WORLD]
    run_dir = results / "runs" / "embedded" / "tiny-synthetic_sparse"
    # An earlier test's run of the same name links stages/train.alignment to another store folder
    # whose finished checkpoints would trigger the kill before node 1 joined: start from no links.
    shutil.rmtree(run_dir, ignore_errors=True)
    bound = 3 * HEARTBEAT_S + 20   # heartbeats to name the lost node, plus torchrun's own shutdown

    def stage_folder() -> Path:
        wait_for(lambda: (run_dir / "stages" / "train.alignment").exists(), 300, "the alignment folder")
        return (run_dir / "stages" / "train.alignment").resolve()

    # 1. Kill node 1: node 0 fails the stage, names node 1, marks nothing.
    procs = start_both(results, overrides, "kill1")
    nodes += procs
    model = stage_folder() / "model"
    killed = kill_node_after_a_checkpoint(results, procs, 1, model, after=0)
    code = procs[0].wait(timeout=TIMEOUT_S + 60)
    detected = time.time() - killed
    out0 = (results.parent / "kill1.node0.out").read_text()
    print(f"node 1 killed: node 0 failed {detected:.1f} s later")
    assert code == 1 and detected < bound, out0[-3000:]
    assert "lost node 1 (no heartbeat for over 6 s) of the 2-node training job" in out0
    status = read_status(run_dir)
    assert status["state"] == "failed" and status["stages"]["train.alignment"]["state"] == "failed"
    assert "lost node 1" in status["error"]
    assert not (model.parent / ".done.json").exists()
    first = max(complete_checkpoints(model))

    # 2. Again, now kill node 0: node 1 (the follower) fails too, names node 0, does not wait on.
    procs = start_both(results, overrides, "kill0")
    nodes += procs
    killed = kill_node_after_a_checkpoint(results, procs, 0, model, after=first)
    code = procs[1].wait(timeout=TIMEOUT_S + 60)
    detected0 = time.time() - killed
    out1 = (results.parent / "kill0.node1.out").read_text()
    print(f"node 0 killed: node 1 failed {detected0:.1f} s later")
    assert code == 1 and detected0 < bound, out1[-3000:]
    assert "lost node 0 (no heartbeat for over 6 s) of the 2-node training job" in out1
    assert not (model.parent / ".done.json").exists()
    second = max(complete_checkpoints(model))
    assert second > first

    # 3. Both again: training resumes from the last complete checkpoint and finishes.
    procs = start_both(results, overrides, "resume")
    nodes += procs
    assert wait_all(procs) == [0, 0], (results.parent / "resume.node0.out").read_text()[-3000:]
    log = (run_dir / "logs" / "train.alignment.log").read_text()
    starts = [line for line in log.splitlines() if "resuming from" in line or "starting from step 0" in line]
    assert starts[-3:] == [f"[train.alignment] {s}" for s in
                           ("starting from step 0", f"resuming from checkpoint-{first}", f"resuming from checkpoint-{second}")]
    assert re.search(rf"Resuming training from checkpoint with epoch \d+ and global step {second}\b",
                     log.rpartition("\n$ ")[2])
    state = json.loads((model / "trainer_state.json").read_text())
    assert state["global_step"] == 100
    assert (model.parent / ".done.json").exists()
