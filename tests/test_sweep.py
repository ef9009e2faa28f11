"""The embedded ablation sweep in one command (issue 7): every job runs, the stages that do not
depend on the caption source run once, a failing job does not stop the others, the summary
names the failure, the report has one row per caption source, and re-running the sweep runs
only the job that failed."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import SMALL_WORLD, read_status, run_harness

pytestmark = pytest.mark.slow
# On the small world: what is checked is how a sweep runs, fails and resumes, not its scores.
SWEEP = ["run", "-m", "captions=vanilla,synthetic_sparse,synthetic_dense", *SMALL_WORLD]
JOBS = ["captions=synthetic_dense,world=small", "captions=synthetic_sparse,world=small", "captions=vanilla,world=small"]
DENSE, SPARSE, VANILLA = JOBS


def states(sweep_dir, stage):
    return {job: read_status(sweep_dir / job)["stages"].get(stage, {}).get("state") for job in JOBS}


def test_sweep_with_a_failing_job_then_rerun(tmp_path):
    results = tmp_path / "results"
    run_harness(results, "run", "until=world", *SMALL_WORLD)
    world = next(p for p in (results / "store" / "world").iterdir() if p.is_dir())   # not its .lock
    sparse = world / "sources" / "sharegpt4v_sparse.json"
    shutil.move(sparse, tmp_path / "sparse.json")   # a source file that went missing

    proc = run_harness(results, *SWEEP, check=False)
    sweep = results / "sweeps" / "embedded"
    assert proc.returncode == 1
    summary = {r["job"]: r for r in json.loads((sweep / "summary.json").read_text())}
    assert sorted(summary) == JOBS
    assert summary[VANILLA]["state"] == "done"
    assert summary[DENSE]["state"] == "done"
    assert summary[SPARSE]["state"] == "failed"
    assert "data_prep.captions" in summary[SPARSE]["error"]
    assert "sharegpt4v_sparse.json" in summary[SPARSE]["error"]
    assert f"{SPARSE} | failed" in proc.stdout   # printed summary
    # Shared stages ran in the first job (vanilla) and were skipped by the others; the failed
    # job stopped at its caption data, before alignment.
    assert states(sweep, "init_vlm") == {VANILLA: "done", SPARSE: "skipped", DENSE: "skipped"}
    for stage in ("train.alignment", "data_prep.sft_data"):
        assert states(sweep, stage) == {VANILLA: "done", SPARSE: "pending", DENSE: "skipped"}, stage
    table = (sweep / "report" / "table.md").read_text()
    assert "vanilla" in table and "Synthetic-Dense" in table and "Synthetic-Sparse" not in table

    shutil.move(tmp_path / "sparse.json", sparse)   # fixed; run the same sweep again
    proc = run_harness(results, *SWEEP)
    for job in (VANILLA, DENSE):
        assert {s["state"] for s in read_status(sweep / job)["stages"].values()} == {"skipped"}
    ran = [n for n, s in read_status(sweep / SPARSE)["stages"].items() if s["state"] == "done"]
    assert ran == ["data_prep.captions", "train.further_pretrain", "train.sft", "evaluate", "report"]
    table = (sweep / "report" / "table.md").read_text()
    assert all(label in table for label in ("vanilla", "Synthetic-Sparse", "Synthetic-Dense"))
    assert (sweep / "report" / "table.csv").exists() and (sweep / "report" / "table.tex").exists()
    assert {p.name for p in (sweep / "report").glob("*.png")} == {"benchmarks.png", "loss_curves.png"}
    # the embedded labels are not the paper's, so there is nothing to put beside the paper
    assert not (sweep / "report" / "paper_comparison.md").exists()
