"""The end of a sweep, without running one: which jobs the summary lists, and the exit code."""

from __future__ import annotations

import json
import os
import time

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
