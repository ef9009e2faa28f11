"""Config composition: every experiment and every group option composes into a chain; bad
overrides fail before any work with a message naming the key and the valid choices."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.chain import build_chain
from harness.config import BadOverride, compose_config, group_options, groups, to_plain, validate_overrides
from tests.conftest import REPO, harness_cmd, subprocess_env

GROUP_CASES = [(g, o) for g in groups() if g != "experiment" for o in group_options(g)]


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_composes_into_a_chain(experiment, results_dir):
    cfg = to_plain(compose_config([f"experiment={experiment}"]))
    names = [s.name for s in build_chain(cfg)]
    if cfg["pipeline"] == "prism":   # caption quality only: nothing is built or trained
        assert names == ["world", "prism.captions", "prism", "report"]
        return
    assert names[-2:] == ["evaluate", "report"]
    assert "init_vlm" in names and "train.alignment" in names and "train.sft" in names


@pytest.mark.parametrize("group,option", GROUP_CASES)
def test_every_group_option_composes(group, option, results_dir):
    cfg = to_plain(compose_config([f"{group}={option}"]))
    assert [s.name for s in build_chain(cfg)][-1] == "report"
    if "name" in cfg[group]:   # the option chosen is the one composed
        assert cfg[group]["name"] == option


def test_experiment_files_start_with_the_command_that_runs_them():
    for path in sorted((REPO / "configs/hydra/experiment").glob("*.yaml")):
        # line 1 is Hydra's package header (it must come first); the command comes right after
        first = path.read_text().splitlines()[1]
        assert first.startswith("# python -m harness run experiment=") or (
            path.stem == "embedded" and first == "# python -m harness run"), path


def test_vanilla_has_no_further_pretraining(results_dir):
    cfg = to_plain(compose_config(["captions=vanilla"]))
    names = [s.name for s in build_chain(cfg)]
    assert "train.further_pretrain" not in names and "data_prep.captions" not in names
    sft = next(s for s in build_chain(cfg) if s.name == "train.sft")
    assert sft.inputs["model"] == "train.alignment"


def test_unknown_group_option_names_group_and_choices():
    with pytest.raises(BadOverride) as err:
        validate_overrides(["backbone=qwen9"])
    assert str(err.value) == ("unknown option 'qwen9' for config group 'backbone'; "
                              "valid choices: qwen2.5-3b, qwen2.5-7b, qwen3vl-4b, qwen3vl-8b, tiny, tiny-qwen3vl")


def test_unknown_key_names_key_and_siblings():
    with pytest.raises(BadOverride) as err:
        validate_overrides(["train.common.lr=1"])
    msg = str(err.value)
    assert msg.startswith("unknown config key 'train.common.lr'; valid keys at train.common: ")
    assert "cutoff_len" in msg and "per_device_train_batch_size" in msg


def test_bad_value_inside_a_sweep_is_caught_before_any_job():
    with pytest.raises(BadOverride, match="unknown option 'nope' for config group 'captions'"):
        validate_overrides(["captions=vanilla,nope"])


def test_cli_bad_override_exits_2_with_one_line(results_dir):
    proc = subprocess.run(harness_cmd("run", "captions=nope"), capture_output=True, text=True, cwd=REPO,
                          env=subprocess_env(results_dir))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown option 'nope' for config group 'captions'; valid choices:")
    assert not results_dir.exists()  # nothing ran, nothing written


def test_until_must_name_a_stage(results_dir):
    with pytest.raises(ValueError, match="until='train.nope' is not a stage"):
        build_chain(to_plain(compose_config(["until=train.nope"])))


# Every option under the paper's recipe in the fast lane; the other experiments (the same options,
# ~100 more compositions at ~0.5 s each) in the slow lane.
EXPERIMENTS_FAST_FIRST = [pytest.param(e, marks=() if e == "caprl2m" else pytest.mark.slow)
                          for e in group_options("experiment")]


@pytest.mark.parametrize("experiment", EXPERIMENTS_FAST_FIRST)
@pytest.mark.parametrize("group,option", GROUP_CASES)
def test_every_group_option_validates_under_every_experiment(experiment, group, option, results_dir):
    """What `run` checks before any work (composition, interpolation, stage names, recipe) passes
    for every option on top of every experiment, so no shipped config fails hours in. Two
    exceptions are real: the embedded global batch of 4 cannot be spread over 4 nodes x 8 GPUs,
    and the embedded experiment evaluates on CPU, where vLLM does not run; the loopback judge names
    no weights until the user does; the paper's recipe builds no world for the local benchmark files."""
    overrides = [f"experiment={experiment}", f"{group}={option}"]
    if (group, option) == ("tracker", "mlflow"):   # mlflow is not in the lock: said before any work
        with pytest.raises(BadOverride, match="tracker=mlflow needs the mlflow package"):
            validate_overrides(overrides)
    elif experiment == "embedded" and (group, option) == ("eval", "vllm"):
        with pytest.raises(BadOverride, match=r"eval.model=vllm needs eval.device=cuda"):
            validate_overrides(overrides)
    elif (group, option) == ("judge", "loopback"):   # a judge's weights are recorded with its scores: no default
        with pytest.raises(BadOverride, match=r"judge.weights"):
            validate_overrides(overrides)
    elif experiment == "caprl2m" and (group, option) == ("benchmarks", "paper_table1_local"):
        # the local benchmark files are the embedded world's; the paper's recipe builds no world
        with pytest.raises(BadOverride, match=r"reads world://benchmarks/.*which this world does not build"):
            validate_overrides(overrides)
    elif experiment == "embedded" and group == "launcher" and option != "local":
        with pytest.raises(BadOverride, match=r"train.stages.alignment.global_batch_size=32 is not a multiple"):
            validate_overrides(overrides)
    else:
        validate_overrides(overrides)


def test_force_may_be_one_name_or_a_list(results_dir):
    from harness.validate import force_list, run_problems

    assert force_list("train.sft") == ["train.sft"]
    assert force_list(["train.sft", "init_vlm"]) == ["train.sft", "init_vlm"]
    assert force_list([]) == [] and force_list(None) == []
    validate_overrides(["force=train.sft"])
    validate_overrides(["force=[train,init_vlm]"])  # a kind and a stage name
    assert run_problems(to_plain(compose_config(["force=train.sft"]))) == []


def test_force_and_until_must_name_stages_before_any_work(results_dir):
    with pytest.raises(BadOverride) as err:
        validate_overrides(["force=[train.sfft]"])
    assert str(err.value).startswith("force: 'train.sfft' is neither a stage of this run (world, init_vlm, ")
    assert "nor a stage kind (data_prep, evaluate, init_vlm, report, train, world)" in str(err.value)
    with pytest.raises(BadOverride, match=r"^until: 'train.nope' is not a stage of this run; stages: world, "):
        validate_overrides(["until=train.nope"])
    # vanilla has no further pretraining: naming it is a mistake in that job of the sweep only
    with pytest.raises(BadOverride, match=r"until: 'train.further_pretrain' is not a stage .*captions=vanilla"):
        validate_overrides(["-m", "captions=synthetic_dense,vanilla", "until=train.further_pretrain"][1:])


@pytest.mark.parametrize("command,first_line", [
    ("run", "usage: python -m harness run [-m] [-v] [key=value ...]"),
    ("plan", "usage: python -m harness plan [key=value ...]"),
    ("prefetch", "usage: python -m harness prefetch [key=value ...]"),
    ("report", "usage: python -m harness report [-h] [--paper PAPER]"),
])
def test_each_command_has_its_own_help(command, first_line, results_dir):
    proc = subprocess.run(harness_cmd(command, "--help"), capture_output=True, text=True, cwd=REPO,
                          env=subprocess_env(results_dir))
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].startswith(first_line)
    assert not results_dir.exists()


@pytest.mark.parametrize("sweep,jobs", [
    (["captions=vanilla,synthetic_sparse", "seed=1,2"],
     ["captions=vanilla seed=1", "captions=vanilla seed=2", "captions=synthetic_sparse seed=1",
      "captions=synthetic_sparse seed=2"]),
    (["captions=glob(synthetic_*)", "seed=range(1,3)"],   # Hydra's sweep syntax, as its basic sweeper runs it
     ["captions=synthetic_dense seed=1", "captions=synthetic_dense seed=2", "captions=synthetic_sparse seed=1",
      "captions=synthetic_sparse seed=2"])], ids=["values", "glob-range"])
def test_plan_of_a_sweep_prints_every_job(results_dir, sweep, jobs):
    proc = subprocess.run(harness_cmd("plan", *sweep), capture_output=True, text=True, cwd=REPO,
                          env=subprocess_env(results_dir))
    assert proc.returncode == 0, proc.stderr
    heads = [line for line in proc.stdout.splitlines() if line.startswith("=" * 20)]
    assert heads == [f"{'=' * 20} job {i} of 4: {job}" for i, job in enumerate(jobs, 1)]
    assert proc.stdout.count("train.further_pretrain [to do]") == (2 if "vanilla" in sweep[0] else 4)   # vanilla has none


def test_an_interval_sweep_is_refused_before_any_work(results_dir):
    bad = subprocess.run(harness_cmd("run", "-m", "seed=interval(0,1)"), capture_output=True, text=True, cwd=REPO,
                         env=subprocess_env(results_dir))
    assert bad.returncode == 2 and "an interval sweep lists no values to run" in bad.stderr, bad.stderr
    assert not results_dir.exists()


def test_run_only_settings_of_a_source_do_not_change_its_fingerprint(results_dir):
    """How many workers prepare the data, or what plan estimates, must not redo data_prep (hours)
    and everything trained on it; what the data holds must."""
    from harness.stage import chain_fingerprints

    def fps(*overrides):
        return chain_fingerprints(build_chain(to_plain(compose_config(list(overrides)))))

    base = fps()
    assert fps("+captions.workers=1", "+captions.expected_rows=10") == base
    changed = fps("captions.seed=3")
    assert changed["data_prep.captions"] != base["data_prep.captions"]
    assert changed["train.further_pretrain"] != base["train.further_pretrain"]
    assert changed["data_prep.sft_data"] == base["data_prep.sft_data"]


def test_every_job_of_a_sweep_is_checked_not_each_value_alone(results_dir):
    """Each value composes alone; one combination cannot run (a global batch of 4 over 8 GPUs)."""
    with pytest.raises(BadOverride) as err:
        validate_overrides(["experiment=embedded,caprl2m", "train.stages.sft.global_batch_size=4,128"])
    msg = str(err.value)
    assert "train.stages.sft.global_batch_size=4 is not a multiple of" in msg
    assert msg.endswith("(job: experiment=caprl2m train.stages.sft.global_batch_size=4)")


def test_cli_rejects_a_bad_sweep_job_before_writing_anything(results_dir):
    proc = subprocess.run(harness_cmd("run", "-m", "experiment=embedded,caprl2m",
                                      "train.stages.sft.global_batch_size=4,128"),
                          capture_output=True, text=True, cwd=REPO, env=subprocess_env(results_dir))
    assert proc.returncode == 2
    assert "(job: experiment=caprl2m train.stages.sft.global_batch_size=4)" in proc.stderr
    assert not results_dir.exists()


def test_cpu_threads_are_run_only_and_one_in_the_embedded_experiment(results_dir):
    """The embedded experiment's scores are pinned at one thread per process; the paper's recipe
    keeps each machine's default. The count changes no stage's fingerprint (nothing reruns)."""
    from harness.stage import chain_fingerprints

    assert to_plain(compose_config([]))["cpu_threads"] == 1
    assert to_plain(compose_config(["experiment=caprl2m"]))["cpu_threads"] is None

    def fps(*overrides):
        return chain_fingerprints(build_chain(to_plain(compose_config(list(overrides)))))

    assert fps("cpu_threads=2") == fps()


@pytest.mark.slow   # imports torch in two fresh processes
def test_a_job_gives_its_processes_the_configured_threads(tmp_path):
    """In a fresh interpreter: torch imported before the job starts follows the setting, and so
    does every process the job starts afterwards (they read OMP_NUM_THREADS at start)."""
    script = (
        "import subprocess, sys, torch\n"
        "from harness.job import use_cpu_threads\n"
        "torch.set_num_threads(2)\n"
        "use_cpu_threads(1)\n"
        "child = subprocess.run([sys.executable, '-c', 'import torch; print(torch.get_num_threads())'],\n"
        "                       capture_output=True, text=True, check=True).stdout.strip()\n"
        "print(torch.get_num_threads(), child)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
