"""The report on per-sample logs: intervals on every cell, paired comparisons with their p-values
and Holm's correction, seeds averaged into one row, jobs of a sweep kept apart, and what happens
when the logs are missing, broken or disagree with the records.

Fixtures (tests/data/report/, see expected/README.md): `persample/` is a three-job caption sweep
(vanilla, Synthetic-Sparse, Synthetic-Dense; one seed) on two 20-question benchmarks; `seeds/` has
vanilla and Synthetic-Dense with seeds 0 and 1 plus one Synthetic-Dense job at another learning rate."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from math import factorial
from pathlib import Path

import pytest

from report import (
    ReportError,
    build_table,
    collect_records,
    to_csv,
    to_latex,
    to_markdown,
    write_report,
)
from report.cli import main
from report.confidence import MCNEMAR, SIGN_FLIP
from report.render import comparisons_csv

DATA = Path(__file__).resolve().parent / "data" / "report"
EXPECTED = DATA / "expected"
PERSAMPLE = DATA / "persample"
SEEDS = DATA / "seeds"
BACKBONE = "Tiny+TinyViT"
LR = "train.stages.sft.learning_rate"


def row(table, source, job=None):
    return next(r for r in table.rows if r.caption_source == source and (job is None or r.job == job))


def exact_bootstrap_quantiles(counts: dict[int, int], n: int) -> tuple[float, float]:
    """The 2.5% and 97.5% quantiles (smallest mean whose CDF reaches them) of the exact bootstrap
    distribution of a mean of n values with these value counts: multinomial enumeration, no
    random draws, so it checks the seeded Monte Carlo of report/stats.py independently."""
    dist: dict[Fraction, Fraction] = {}
    values = list(counts)

    def walk(i: int, left: int, picks: list[int]) -> None:
        if i == len(values) - 1:
            picks = [*picks, left]
            p = Fraction(factorial(n))
            for v, k in zip(values, picks):
                p *= Fraction(counts[v], n) ** k / factorial(k)
            mean = Fraction(sum(v * k for v, k in zip(values, picks)), n)
            dist[mean] = dist.get(mean, 0) + p
            return
        for k in range(left + 1):
            walk(i + 1, left - k, [*picks, k])

    walk(0, n, [])
    cdf, out = Fraction(0), []
    for mean in sorted(dist):
        cdf += dist[mean]
        for q in (Fraction(1, 40), Fraction(39, 40))[len(out):]:
            if cdf >= q:
                out.append(float(mean) * 100)
    return out[0], out[1]


# --- the per-sample fixture, exactly ----------------------------------------------------------

def test_persample_fixture_renders_the_reviewed_markdown_csv_and_latex():
    table = build_table(collect_records([PERSAMPLE]))
    assert to_markdown(table, "Per-sample fixture") == (EXPECTED / "persample.md").read_text()
    assert to_csv(table) == (EXPECTED / "persample.csv").read_text()
    assert to_latex(table, "Per-sample fixture") == (EXPECTED / "persample.tex").read_text()
    assert comparisons_csv(table) == (EXPECTED / "persample_comparisons.csv").read_text()


def test_cell_intervals_are_wilson_for_single_runs_scored_0_1():
    table = build_table(collect_records([PERSAMPLE]))
    # 4/20, 6/20 and 12/20 correct on SynthVQA; 10/20, 9/20, 12/20 on ChartQA (hand values in
    # expected/README.md)
    assert row(table, "vanilla").intervals["SynthVQA"] == pytest.approx((8.066, 41.602), abs=1e-3)
    assert row(table, "Synthetic-Sparse").intervals["SynthVQA"] == pytest.approx((14.548, 51.897), abs=1e-3)
    assert row(table, "Synthetic-Dense").intervals["SynthVQA"] == pytest.approx((38.658, 78.119), abs=1e-3)
    assert row(table, "vanilla").intervals["ChartQA"] == pytest.approx((29.930, 70.070), abs=1e-3)
    assert row(table, "Synthetic-Sparse").intervals["ChartQA"] == pytest.approx((25.820, 65.791), abs=1e-3)


def test_paired_comparisons_use_exact_mcnemar_and_holm_across_benchmarks():
    dense = row(build_table(collect_records([PERSAMPLE])), "Synthetic-Dense")
    synth, chart = dense.comparisons["SynthVQA"], dense.comparisons["ChartQA"]
    assert (synth.test, synth.discordant, synth.n) == (MCNEMAR, (9, 1), 20)
    assert synth.delta == pytest.approx(40.0) and synth.p == 22 / 1024     # 2 * (1 + 10) / 2^10
    assert (chart.discordant, chart.p) == ((2, 0), 0.5)                      # 2 * 1 / 2^2
    # Holm over the row's two benchmarks: 2 * 0.021484375 = 0.04296875 < 0.05, then max(., 0.5)
    assert synth.p_holm == 0.04296875 and synth.significant
    assert chart.p_holm == 0.5 and not chart.significant
    assert dense.significant == {"SynthVQA"}


def test_holm_can_take_away_significance_a_single_test_would_give():
    sparse = row(build_table(collect_records([PERSAMPLE])), "Synthetic-Sparse")
    # SynthVQA b=2, c=0: p = 0.5; ChartQA b=0, c=1: p = 1; Holm: 2 * 0.5 = 1.0 and 1.0
    assert [sparse.comparisons[b].p for b in ("SynthVQA", "ChartQA")] == [0.5, 1.0]
    assert [sparse.comparisons[b].p_holm for b in ("SynthVQA", "ChartQA")] == [1.0, 1.0]


@pytest.mark.parametrize("source, bench, counts", [
    ("Synthetic-Dense", "SynthVQA", {1: 9, -1: 1, 0: 10}),
    ("Synthetic-Dense", "ChartQA", {1: 2, 0: 18}),
    ("Synthetic-Sparse", "ChartQA", {-1: 1, 0: 19}),
])
def test_paired_bootstrap_intervals_match_the_exact_bootstrap_distribution(source, bench, counts):
    comparison = row(build_table(collect_records([PERSAMPLE])), source).comparisons[bench]
    assert comparison.interval == pytest.approx(exact_bootstrap_quantiles(counts, 20))


def test_delta_avg_interval_resamples_each_benchmark_on_its_own():
    # exact: the mean of the two benchmarks' bootstrap means has 2.5% / 97.5% quantiles
    # 10.0 / 40.0 for Synthetic-Dense and -5.0 / 10.0 for Synthetic-Sparse (expected/README.md)
    table = build_table(collect_records([PERSAMPLE]))
    assert row(table, "Synthetic-Dense").delta_interval == pytest.approx((10.0, 40.0))
    assert row(table, "Synthetic-Sparse").delta_interval == pytest.approx((-5.0, 10.0))
    assert row(table, "vanilla").delta_interval is None


def test_identical_runs_give_delta_zero_and_p_one(tmp_path):
    sweep = shutil.copytree(PERSAMPLE, tmp_path / "sweep")
    twin = shutil.copytree(sweep / "captions=vanilla", sweep / "captions=vanilla_twin")
    results = twin / "stages" / "evaluate" / "results.jsonl"
    results.write_text(results.read_text().replace('"caption_source": "vanilla"', '"caption_source": "Twin"'))
    (twin / "config.yaml").write_text((twin / "config.yaml").read_text().replace("label: vanilla", "label: Twin"))
    twin_row = row(build_table(collect_records([sweep])), "Twin")
    for bench in ("SynthVQA", "ChartQA"):
        c = twin_row.comparisons[bench]
        assert (c.delta, c.interval, c.discordant, c.p, c.p_holm) == (0.0, (0.0, 0.0), (0, 0), 1.0, 1.0)
    assert twin_row.delta_avg == 0.0 and twin_row.delta_interval == (0.0, 0.0)


# --- seeds and sweep axes ---------------------------------------------------------------------

def test_seeds_aggregate_into_one_row_and_other_settings_stay_apart():
    table = build_table(collect_records([SEEDS]))
    assert [(r.caption_source, r.job, r.seeds) for r in table.rows] == [
        ("vanilla", f"{LR}=0.002", [0, 1]),
        ("Synthetic-Dense", f"{LR}=0.001", [0]),
        ("Synthetic-Dense", f"{LR}=0.002", [0, 1])]
    dense = row(table, "Synthetic-Dense", f"{LR}=0.002")
    # seed 0: 12/20 = 60.0, seed 1: 10/20 = 50.0 -> 55.0 ± sqrt(2 * 5^2 / 1) = 7.07
    assert dense.cells["SynthVQA"] == 55.0 and dense.spread["SynthVQA"] == pytest.approx(7.0710678)
    assert row(table, "vanilla").cells["SynthVQA"] == 25.0  # 4/20 and 6/20
    md = to_markdown(table)
    assert "| Backbone | Caption source | Settings | Seeds | SynthVQA | Avg | Δ vs vanilla |" in md
    assert f"| {BACKBONE} | Synthetic-Dense | {LR}=0.002 | 0, 1 | **55.0** ± 7.1 [35.0, 75.0]† |" in md


def test_every_seed_enters_the_paired_test():
    # Per-question means over seeds, dense minus vanilla: +1 on 6 questions, +0.5 on 3, -0.5 on 1,
    # -1 on 1 (0 elsewhere): delta = 6 / 20 = +30. Exact sign-flip p, in half points: seven 2s and
    # four 1s; |sum| >= 12 has probability 2 * (1/128 * 15/16 + 7/128 * 5/16) = 100/2048 = 0.0488.
    dense = row(build_table(collect_records([SEEDS])), "Synthetic-Dense", f"{LR}=0.002")
    c = dense.comparisons["SynthVQA"]
    assert (c.test, c.n, c.discordant) == (SIGN_FLIP, 20, None)
    assert c.delta == pytest.approx(30.0)
    assert c.p == pytest.approx(0.0491951, abs=1e-7) and abs(c.p - 100 / 2048) < 0.005
    assert c.significant


def test_a_job_without_a_same_setting_baseline_is_compared_with_the_only_vanilla_row():
    # lr 0.001 has no vanilla at lr 0.001; the one vanilla row (lr 0.002) is the baseline.
    # Differences: +0.5, -0.5, and -1 on three questions -> -3/20 = -15; exact p = 6/32 = 0.1875
    table = build_table(collect_records([SEEDS]))
    other = row(table, "Synthetic-Dense", f"{LR}=0.001")
    assert other.baseline == f"vanilla ({LR}=0.002)"
    c = other.comparisons["SynthVQA"]
    assert c.delta == pytest.approx(-15.0) and abs(c.p - 0.1875) < 0.01 and not c.significant


def _job(root: Path, name: str, seed: int | None, value: float, *, job: str | None = None,
         config_seed: int | None = None) -> None:
    folder = root / name / "stages" / "evaluate"
    folder.mkdir(parents=True)
    rec = {"run": "r", "backbone": BACKBONE, "caption_source": "vanilla", "benchmark": "SynthVQA",
           "task": "caprl_synth_vqa", "metric": "exact_match", "value": value, "n": None, "status": "ok",
           "reason": None, "lmms_eval_version": "0.7.3", "model_args": None,
           "timestamp": "2026-11-30T00:00:00Z", "seed": seed, "job": job}
    (folder / "results.jsonl").write_text(json.dumps(rec) + "\n")
    if config_seed is not None:
        (root / name / "config.yaml").write_text(f"seed: {config_seed}\nexperiment_name: e\n")


def test_record_fields_seed_and_job_work_without_a_config(tmp_path):
    _job(tmp_path, "a", 0, 40.0)
    _job(tmp_path, "b", 1, 50.0)
    _job(tmp_path, "c", 0, 90.0, job="lr=1e-5")
    table = build_table(collect_records([tmp_path]))
    assert [(r.job, r.seeds, r.cells["SynthVQA"]) for r in table.rows] == [
        (None, [0, 1], 45.0), ("lr=1e-5", [0], 90.0)]
    assert "No intervals: no per-sample logs" in to_markdown(table)


def test_a_record_seed_that_contradicts_the_config_is_an_error(tmp_path):
    _job(tmp_path, "a", 3, 40.0, config_seed=4)
    with pytest.raises(ReportError, match=r"seed 3.*config\.yaml.*seed 4"):
        collect_records([tmp_path])


# --- broken or disagreeing logs ---------------------------------------------------------------

def _copy(tmp_path: Path) -> tuple[Path, Path]:
    sweep = shutil.copytree(PERSAMPLE, tmp_path / "sweep")
    log = next((sweep / "captions=synthetic_dense").rglob("*_samples_caprl_synth_vqa.jsonl"))
    return sweep, log


@pytest.mark.parametrize("bad, message", [
    ("{not json", r"line 3: not JSON"),
    ('{"doc_id": 2, "target": "x"}', r"line 3: no key 'exact_match'"),
    ('{"doc_id": "2", "exact_match": 1.0}', r"line 3: 'doc_id' must be an integer"),
    ('{"doc_id": 2, "exact_match": "yes"}', r"line 3: 'exact_match' must be a finite number"),
    ('{"doc_id": 0, "exact_match": 1.0}', r"line 3: doc_id 0 appears twice"),
])
def test_a_broken_sample_line_names_file_line_and_key(tmp_path, bad, message):
    sweep, log = _copy(tmp_path)
    lines = log.read_text().splitlines()
    lines[2] = bad
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=message) as info:
        build_table(collect_records([sweep]))
    assert str(log) in str(info.value)


def test_a_metric_the_task_aggregates_itself_gives_a_note_not_an_error(tmp_path):
    sweep, log = _copy(tmp_path)
    log.write_text(log.read_text().replace('"exact_match": 1.0', '"exact_match": {"verdict": 1}', 1))
    table = build_table(collect_records([sweep]))
    assert "SynthVQA" not in row(table, "Synthetic-Dense").intervals
    assert any(f"{log}, line 1: 'exact_match' is a dict, not a per-question number" in n for n in table.notes)


def test_only_lmms_eval_sample_file_names_count(tmp_path):
    sweep, log = _copy(tmp_path)
    log.rename(log.with_name("copy_of_samples_caprl_synth_vqa.jsonl"))  # not <date>_samples_<task>
    assert "SynthVQA" not in row(build_table(collect_records([sweep])), "Synthetic-Dense").intervals


def test_a_log_that_does_not_reproduce_the_record_gives_no_interval(tmp_path):
    sweep, log = _copy(tmp_path)
    log.write_text(log.read_text().replace('"exact_match": 1.0', '"exact_match": 0.0', 1))  # 11/20, not 12
    table = build_table(collect_records([sweep]))
    dense = row(table, "Synthetic-Dense")
    assert "SynthVQA" not in dense.intervals and "SynthVQA" not in dense.comparisons
    assert "ChartQA" in dense.intervals  # the other benchmark is unaffected
    assert any("does not reproduce the record's 60.0" in note and str(log) in note for note in table.notes)


def test_runs_on_different_questions_are_not_paired(tmp_path):
    sweep, log = _copy(tmp_path)
    log.write_text(log.read_text().replace("What colour is the circle?", "What colour is the disc?"))
    table = build_table(collect_records([sweep]))
    assert "SynthVQA" in row(table, "Synthetic-Dense").intervals
    assert "SynthVQA" not in row(table, "Synthetic-Dense").comparisons
    assert f"{BACKBONE} / Synthetic-Dense / SynthVQA: no paired test, it and vanilla were scored on " \
           "different questions" in table.notes


def test_a_missing_log_is_named_when_other_cells_have_one(tmp_path):
    sweep, log = _copy(tmp_path)
    log.unlink()
    table = build_table(collect_records([sweep]))
    assert f"{BACKBONE} / Synthetic-Dense / SynthVQA: no interval, no per-sample log (lmms-eval " \
           "--log_samples) beside its results.jsonl" in table.notes


def test_the_newest_log_of_a_re_evaluation_is_read(tmp_path):
    sweep, log = _copy(tmp_path)
    older = log.with_name("20251231_235959_samples_caprl_synth_vqa.jsonl")
    older.write_text("{not json\n")  # an older, broken file must not be read
    assert "SynthVQA" in row(build_table(collect_records([sweep])), "Synthetic-Dense").intervals


# --- a chosen baseline, the command line and the files ----------------------------------------

def test_baseline_row_can_be_chosen(tmp_path, capsys):
    assert main([str(PERSAMPLE), "--baseline", "Synthetic-Sparse", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "table.md").read_text()
    assert "| Backbone | Caption source | ChartQA | SynthVQA | Avg | Δ vs Synthetic-Sparse |" in md
    assert "Δ vs Synthetic-Sparse: Avg minus the Synthetic-Sparse Avg of the same backbone." in md
    # vanilla minus sparse on SynthVQA: b = 0, c = 2 -> p = 0.5; dense minus sparse: b = 7, c = 1
    lines = (tmp_path / "comparisons.csv").read_text().splitlines()
    assert f"{BACKBONE},vanilla,,Synthetic-Sparse,SynthVQA,-10.0,-25.0,0.0,0.5,1,false,mcnemar,0,2,20" in lines
    assert any(line.startswith(f"{BACKBONE},Synthetic-Dense,,Synthetic-Sparse,SynthVQA,30.0,")
               and ",0.0703125," in line and ",mcnemar,7,1,20" in line for line in lines)  # 2 * 9 / 256
    capsys.readouterr()


def test_an_unknown_baseline_is_an_error_listing_the_rows(capsys, tmp_path):
    assert main([str(PERSAMPLE), "--baseline", "CapRL-1M", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--baseline 'CapRL-1M' names no row; the rows are: vanilla, Synthetic-Dense, Synthetic-Sparse" in err


def test_write_report_writes_comparisons_and_a_plot_with_error_bars(tmp_path):
    written = write_report(collect_records([PERSAMPLE]), tmp_path, title="Per-sample fixture")
    assert written["comparisons_csv"].read_text() == (EXPECTED / "persample_comparisons.csv").read_text()
    assert r"McNemar exact (b=9, c=1)" in written["comparisons_tex"].read_text()
    assert written["bars"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = write_report(collect_records([DATA / "sweep"]), tmp_path / "bare", plots=False)
    assert "comparisons_csv" not in bare  # no per-sample logs: nothing was compared


def test_error_bars_are_drawn_from_the_intervals(monkeypatch, tmp_path):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar",
                        lambda self, *a, **kw: drawn.append(kw.get("yerr")) or original(self, *a, **kw))
    from report import plot_benchmark_bars

    plot_benchmark_bars(build_table(collect_records([PERSAMPLE])), tmp_path / "bars.png")
    bars = [e for e in drawn if e is not None]
    # vanilla ChartQA: 50.0 with [29.930, 70.070] -> 20.070 below and above
    assert [[pytest.approx(20.070, abs=1e-3)], [pytest.approx(20.070, abs=1e-3)]] in bars
    assert len(bars) == 6  # 3 rows x 2 benchmarks; Avg has no interval


def test_a_benchmark_missing_in_one_seed_is_noted(tmp_path):
    _job(tmp_path, "a", 0, 40.0)
    _job(tmp_path, "b", 1, 50.0)
    other = dict(json.loads((tmp_path / "a" / "stages" / "evaluate" / "results.jsonl").read_text()),
                 benchmark="ChartQA", task="chartqa", metric="relaxed_overall", value=70.0)
    with (tmp_path / "a" / "stages" / "evaluate" / "results.jsonl").open("a") as fh:
        fh.write(json.dumps(other) + "\n")
    table = build_table(collect_records([tmp_path]))
    assert table.rows[0].cells == {"ChartQA": 70.0, "SynthVQA": 45.0} and table.rows[0].seeds == [0, 1]
    no_logs = "No intervals: no per-sample logs (lmms-eval --log_samples) were found beside the results.jsonl files."
    assert table.notes == [f"{BACKBONE} / vanilla / ChartQA: only seed(s) 0 of this row", no_logs]


def test_baseline_by_caption_source_finds_the_row_with_the_same_settings():
    table = build_table(collect_records([SEEDS]), baseline="Synthetic-Dense")
    vanilla = row(table, "vanilla")
    assert vanilla.baseline == f"Synthetic-Dense ({LR}=0.002)"  # same settings, not the lr 0.001 row
    assert vanilla.delta_avg == pytest.approx(-30.0)
    assert row(table, "Synthetic-Dense", f"{LR}=0.001").baseline is None  # its same-settings row is itself
