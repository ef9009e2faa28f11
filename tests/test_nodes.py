"""Naming the lost node of a multi-node training stage (train/nodes.py), and the time-outs every
node's launch gets from the launcher config (train/launch.py), without starting anything."""

from __future__ import annotations

import os
import time

from harness.config import compose_config, to_plain
from train.launch import LAUNCH_DEFAULTS, node_env
from train.nodes import Heartbeat, heartbeat_file, lost_message, lost_nodes

T0 = 1_000_000.0


def beat(folder, rank, at, text="alive"):
    path = heartbeat_file(folder, rank)
    path.write_text(f"{text} {at}\n")
    os.utime(path, (at, at))


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_a_silent_node_is_lost_an_exited_one_is_not_and_an_old_beat_never_joined(tmp_path):
    beat(tmp_path, 0, T0 + 100)                    # me
    beat(tmp_path, 1, T0 + 90)                     # silent for 10 s > 3 beats of 2 s
    beat(tmp_path, 2, T0 + 99, text="exited")      # its torchrun ended (failed too): not lost
    beat(tmp_path, 3, T0 - 50)                     # from an earlier attempt
    clock = Clock(T0 + 100)
    lost = lost_nodes(tmp_path, 0, 5, since=T0, interval=2, sleep=clock.sleep, clock=clock)
    assert lost == {1: "no heartbeat for over 6 s", 3: "never joined this attempt",
                    4: "never joined this attempt"}
    assert clock.now == T0 + 100                   # nobody alive: no waiting


def test_a_node_that_just_beat_is_waited_for_until_three_beats_are_missed(tmp_path):
    beat(tmp_path, 1, T0 + 100)                    # beat just now: maybe failing too, maybe dying
    clock = Clock(T0 + 100)
    lost = lost_nodes(tmp_path, 0, 2, since=T0, interval=2, sleep=clock.sleep, clock=clock)
    assert lost == {1: "no heartbeat for over 6 s"}
    assert T0 + 106 < clock.now <= T0 + 108        # at most LOST_AFTER + 1 beats


def test_heartbeat_beats_while_running_and_says_exited_after(tmp_path):
    with Heartbeat(tmp_path, 1, interval=0.05) as hb:
        first = heartbeat_file(tmp_path, 1).stat().st_mtime
        time.sleep(0.2)
        assert heartbeat_file(tmp_path, 1).read_text().startswith("alive")
        assert heartbeat_file(tmp_path, 1).stat().st_mtime > first
    assert heartbeat_file(tmp_path, 1).read_text().startswith("exited")
    assert hb.started <= first


def test_lost_message_names_the_node_and_the_configured_time_out():
    assert lost_message({1: "no heartbeat for over 30 s"}, 2, 1800).startswith(
        "lost node 1 (no heartbeat for over 30 s) of the 2-node training job; the ranks here stopped at the next "
        "collective (or after launcher.timeout_s=1800 s)")


def test_every_launcher_has_the_time_outs_and_a_multi_node_launch_gets_them(results_dir):
    for launcher in ("local", "multinode", "slurm"):
        cfg = to_plain(compose_config([f"launcher={launcher}"], multirun=launcher == "slurm"))
        assert {k: cfg["launcher"][k] for k in LAUNCH_DEFAULTS} == LAUNCH_DEFAULTS
    cfg = to_plain(compose_config(["launcher=multinode", "launcher.nnodes=2", "launcher.nproc_per_node=1",
                                   "launcher.master_addr=127.0.0.1", "launcher.timeout_s=60"]))
    env = node_env(cfg["launcher"], node_rank=1)
    assert env["PET_RDZV_CONF"] == "timeout=60" and env["NODE_RANK"] == "1" and env["NNODES"] == "2"


def test_a_follower_stops_waiting_when_node_0_fails_or_after_follower_wait_s(tmp_path):
    """Node 1 waits for node 0's marks outside training; it must end, with a reason, when node 0
    says it failed, and when node 0 says nothing for launcher.follower_wait_s."""
    import json

    import pytest

    from harness.runner import Runner
    from harness.store import Store
    from tests.test_runner import make_chain

    steps = {k: (lambda ctx: None) for k in ("init_vlm", "data_prep", "train")}
    silent = Runner(Store(tmp_path / "store"), tmp_path / "quiet", steps, node_rank=1, poll_seconds=0.05,
                    follower_wait_s=0.3)
    t = time.time()
    with pytest.raises(RuntimeError, match=r"node 0 did not finish init_vlm within launcher.follower_wait_s=0.3 s"):
        silent.run(make_chain(), run_label="quiet")
    assert time.time() - t < 5
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "status.json").write_text(json.dumps({"state": "failed", "error": "stage init_vlm failed: boom"}))
    waiting = Runner(Store(tmp_path / "store"), tmp_path / "failed", steps, node_rank=1, poll_seconds=0.05,
                     started=time.time() - 60)
    with pytest.raises(RuntimeError, match="node 0 failed, so init_vlm will not be done: stage init_vlm failed: boom"):
        waiting.run(make_chain(), run_label="failed")
    assert json.loads((tmp_path / "failed" / "status.node1.json").read_text())["state"] == "failed"
