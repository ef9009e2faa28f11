"""The end of a sweep, without running one: which jobs the summary lists, and the exit code."""

from __future__ import annotations

import json
import os
import time

import pytest

from harness.status import RunStatus
from harness.sweep import format_summary, job_summaries


def make_job(sweep, name, state, error=None, age_s=0.0):
    (sweep / name).mkdir(parents=True)
    status = RunStatus(sweep / name, f"embedded/{name}", ["init_vlm", "train.sft"])
    status.stage("init_vlm", "skipped")
    status.stage("train.sft", "done" if state == "done" else "failed", seconds=12.5)
    status.finish(state, error=error)
    if age_s:
        old = time.time() - age_s
        os.utime(status.path, (old, old))


def test_summary_lists_only_the_jobs_of_this_sweep_with_state_time_and_reason(tmp_path):
    make_job(tmp_path, "captions=vanilla", "done")
    make_job(tmp_path, "captions=caprl_1m", "failed", error="stage train.sft failed: CUDA out of memory\ntraceback")
    make_job(tmp_path, "seed=7", "done", age_s=3600)   # a job of an earlier, other sweep in the same folder
    rows = job_summaries(tmp_path, since=time.time() - 60)
    assert [r["job"] for r in rows] == ["captions=caprl_1m", "captions=vanilla"]
    assert rows[1] == {"job": "captions=vanilla", "state": "done", "seconds": 12.5, "ran": 1, "skipped": 1,
                       "error": None}
    assert rows[0]["state"] == "failed" and rows[0]["ran"] == 0
    assert format_summary(rows).splitlines()[2] == (
        "| captions=caprl_1m | failed | 0 | 1 | 12.5 | stage train.sft failed: CUDA out of memory |")
    assert [r["job"] for r in job_summaries(tmp_path)] == ["captions=caprl_1m", "captions=vanilla", "seed=7"]
    assert json.loads((tmp_path / "seed=7" / "status.json").read_text())["state"] == "done"


LONG = ("train.stages.alignment.learning_rate=0.001,train.stages.further_pretrain.learning_rate=0.002,"
        "train.stages.sft.learning_rate=0.003,train.common.logging_steps=7,train.common.save_total_limit=3,"
        "train.common.warmup_ratio=0.01")   # 221 bytes


def test_a_job_folder_name_past_200_bytes_keeps_its_head_and_ends_with_a_hash():
    from harness.config import job_dirname

    assert job_dirname("captions=vanilla,seed=1") == "captions=vanilla,seed=1"
    name = job_dirname(LONG)
    assert name == LONG[:186] + "..210d600f11f7" and len(name.encode()) == 200
    assert job_dirname(LONG.replace("0.003", "0.004")) != name   # one hash per job


@pytest.mark.slow   # two harness jobs run the world stage (~30 s)
def test_a_sweep_over_many_keys_gets_folders_a_file_system_accepts(tmp_path):
    """Hydra names each sweep job's folder by its overrides; 2 x 1,000 bytes would fail on ext4 as
    the job starts. Runs the world stage only (until=world)."""
    import re

    from tests.conftest import run_harness

    values = ",".join(["x" * 240, "y" * 240])
    results = tmp_path / "results"
    proc = run_harness(results, "run", "-m", "until=world", "experiment_name=e", f"captions.label={values}")
    jobs = sorted(p.name for p in (results / "sweeps" / "e").iterdir() if p.is_dir())
    assert len(jobs) == 2 and all(re.fullmatch(r"captions\.label=[xy]{171}\.\.[0-9a-f]{12}", j) for j in jobs), jobs
    assert "| done |" in proc.stdout
