"""Every key of a run config is declared by the schema of the package that owns its slice: an
unknown or `+` key is refused before any work with its full path and the nearest valid name."""

from __future__ import annotations

import re
import shlex

import pytest

from harness.config import BadOverride, REPO, group_options, groups, validate_overrides
from harness.validate import config_schema
from stagekit.schema import EACH, keys, undeclared_keys


@pytest.mark.parametrize("override, message", [
    ("+train.stages.sft.learning_rat=1e-5",
     "train.stages.sft.learning_rat: unknown key; did you mean learning_rate? valid keys: data, "),
    ("+train.common.foo=1", "train.common.foo: unknown key; valid keys: bf16, cutoff_len, "),
    ("+train.common.warmup_ratoi=0.1", "train.common.warmup_ratoi: unknown key; did you mean warmup_ratio? "),
    ("+deepspeed.foo=1", "deepspeed.foo: unknown key; valid keys: config, name"),
    ("+pixels.foo=1", "pixels.foo: unknown key; valid keys: max_pixels, min_pixels"),
    ("+pixels.max_pixel=1", "pixels.max_pixel: unknown key; did you mean max_pixels? valid keys: max_pixels, min_pixels"),
    ("+launcher.foo=1", "launcher.foo: unknown key; valid keys: cpus_per_task, follower_wait_s, "),
    ("+tokenize.foo=1", "tokenize.foo: unknown key; valid keys: cpus_per_task, max_parallel, mem_gb, name, "),
    ("+captioner.foo=1", "captioner.foo: unknown key; valid keys: api_key_env, "),
    ("+captioner.serve.prot=1", "captioner.serve.prot: unknown key; did you mean port? "),
    ("+prism.foo=1", "prism.foo: unknown key; valid keys: answer_prompt, answerer, benchmarks, "),
    ("+prism.answerer.temprature=0", "prism.answerer.temprature: unknown key; did you mean temperature? "),
    ("+eval.foo=1", "eval.foo: unknown key; valid keys: batch_size, device, extra_model_args, "),
    ("+tracker.projcet=x", "tracker.projcet: unknown key; did you mean project? "),
    ("+world.foo=1", "world.foo: unknown key; valid keys: bench_questions, enabled, "),
    ("+captions.hub.foo=1", "captions.hub.foo: unknown key; valid keys: repo_id, repo_type"),
    ("+note=x", "note: unknown key; valid keys: align_data, backbone, benchmarks, captioner, captions, cost, "),
    ("+sed=1", "sed: unknown key; did you mean seed? "),
    # a known key's bad value is refused the same way, naming the key
    ("captions.reader=nope", "captions: source 'synthetic_dense': reader 'nope' is not one of "),
    ("+captions.subset_sise=5", "captions.subset_sise: unknown key; did you mean subset_size? valid keys: "),
    ("eval.device=tpu", "eval.device='tpu'; choose cpu, cuda or cuda:N"),
    ("+eval.batchsize=2", "eval.batchsize: unknown key; did you mean batch_size? valid keys: batch_size, device, "),
    ("+backbone.vit=x", "backbone.vit: unknown key; valid keys: dtype, eval_model, label, "),
    ("backbone.projector_init=xavier", "backbone.projector_init='xavier'; choose one of torch_default, normal"),
    ("pixels.min_pixels=20000", "pixels: min_pixels=20000 and max_pixels=12544; give whole numbers of pixels with "
                                "0 < min_pixels <= max_pixels"),
    ("+train.common.extra.image_max_pixels=1003520", "train.common.extra.image_max_pixels: set by the harness "
                                                     "(LLaMA-Factory's own resize is kept off so that training and "
                                                     "evaluation resize images alike); set the backbone's pixels."),
    ("cpu_threads=0", "cpu_threads: 0; give a number of threads per process (1 or more), or null for the machine's"),
    ("cpu_threads=true", "cpu_threads: True; give a number of threads per process"),
])
def test_unknown_keys_and_bad_values_are_refused_with_their_path_before_any_work(override, message, results_dir):
    with pytest.raises(BadOverride) as err:
        validate_overrides([override])
    assert str(err.value).startswith(message), str(err.value)


def test_extra_is_the_one_pass_through_to_llama_factory(results_dir):
    (cfg,) = validate_overrides(["+train.common.extra.any_lf_key=1"])
    assert cfg["train"]["common"]["extra"] == {"any_lf_key": 1}


def test_each_entry_of_a_named_mapping_gets_the_entry_schema():
    schema = keys("a", stages={EACH: keys("lr")})
    assert undeclared_keys({"a": 1, "stages": {"s1": {"lr": 1}, "s2": {"lrr": 2}}}, schema) == [
        "stages.s2.lrr: unknown key; did you mean lr? valid keys: lr"]
    assert undeclared_keys({"a": {"anything": 1}}, schema) == []


# Every option of every config group passes the schema on top of every experiment:
# tests/test_config.py::test_every_group_option_validates_under_every_experiment (run_problems
# checks the schema first).


def readme_commands() -> list[list[str]]:
    """The overrides of every `python -m harness run|plan|prefetch` in README.md's code blocks,
    with the block's shell variables (ARGS="...") substituted."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        variables = dict(re.findall(r'^(\w+)="([^"]*)"', block, flags=re.M))
        for line in block.splitlines():
            if "python -m harness " not in line:
                continue
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            words = shlex.split(line.split("python -m harness ", 1)[1], comments=True)
            if words and words[0] in ("run", "plan", "prefetch"):
                out.append([w for w in words[1:] if "=" in w and not w.startswith("-")])
    return out


def declared(path: str, schema) -> bool:
    """Whether a dotted key is a key of the schema (a pass-through section takes any key below it)."""
    for part in path.split("."):
        if not isinstance(schema, dict):
            return True
        if EACH not in schema and part not in schema:
            return False
        schema = schema.get(EACH, schema.get(part))
    return True


def test_every_override_documented_in_the_readme_names_an_option_or_a_declared_key():
    commands = readme_commands()
    assert ["launcher=multinode", "launcher.nnodes=2", "launcher.nproc_per_node=1", "launcher.master_addr=127.0.0.1",
            "launcher.master_port=29731", "launcher.node_rank=1"] in commands
    assert ["experiment=caprl2m", "train.stages.further_pretrain.trainable=projector+llm"] in commands
    assert len(commands) >= 25
    schema = config_schema()
    for overrides in commands:
        for override in overrides:
            key, _, value = override.partition("=")
            if key in groups():
                # a choice, or Hydra's sweep syntax over choices (a,b / glob(...))
                choices = [v for v in re.split(r"[,()]", value) if v and v != "glob" and "*" not in v]
                assert set(choices) <= set(group_options(key)), override
            else:
                assert declared(key, schema), override


@pytest.mark.slow
def test_every_command_documented_in_the_readme_passes_the_checks(results_dir):
    for overrides in readme_commands():
        validate_overrides(overrides)


def test_hydras_sweep_syntax_expands_to_the_jobs_hydra_runs():
    from harness.config import job_overrides

    assert job_overrides(["captions=glob(*,exclude=[caprl*,*1m,recaptioned*])", "seed=choice(1,2)"]) == [
        ["captions=synthetic_dense", "seed=1"], ["captions=synthetic_dense", "seed=2"],
        ["captions=synthetic_sparse", "seed=1"], ["captions=synthetic_sparse", "seed=2"],
        ["captions=vanilla", "seed=1"], ["captions=vanilla", "seed=2"]]
    assert job_overrides(["seed=range(0,6,2)"]) == [["seed=0"], ["seed=2"], ["seed=4"]]
    with pytest.raises(BadOverride, match=r"seed=interval\(0,1\): an interval sweep lists no values to run"):
        job_overrides(["seed=interval(0,1)"])


def test_a_swept_unknown_key_is_refused_for_its_first_job(results_dir):
    with pytest.raises(BadOverride, match=r"^train.common.warmup_ration: unknown key; did you mean warmup_ratio\? .*"
                                          r"\(job: captions=synthetic_dense \+train.common.warmup_ration=0.1\)$"):
        validate_overrides(["captions=glob(synthetic_*)", "+train.common.warmup_ration=0.1,0.2"])
