"""Evaluation stage: benchmark sets, the lmms-eval command, judge tasks as n/a, the results-file
check, the record format, and (slow) real scores of tiny models on the embedded benchmark."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from evaluation import EvaluationError, build_command, prefetch, run_evaluation
from evaluation.benchmarks import task_entries, task_metrics, task_yaml
from evaluation.stage import RECORD_KEYS, read_scores
from stagekit import run_logged
from tests.conftest import REPO

SETS = REPO / "configs/hydra/benchmarks"
PIXELS = {"min_pixels": 3136, "max_pixels": 12544}
CPU = {"batch_size": 1, "limit": None, "model": "qwen2_5_vl", "device": "cpu", "num_processes": 1,
       "extra_model_args": {}}
META = {"run": "tiny-Synthetic-Dense", "backbone": "Tiny+Tiny-ViT", "caption_source": "Synthetic-Dense"}
JUDGE_VARS = ("OPENAI_API_KEY", "AZURE_API_KEY", "API_TYPE")


def load_set(name: str, world: Path | None = None) -> dict:
    text = (SETS / f"{name}.yaml").read_text()
    if world is not None:
        text = text.replace("world://", f"{world}/")
    return yaml.safe_load(text)


@pytest.fixture
def no_judge_key(monkeypatch):
    for var in JUDGE_VARS:
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------- config

def test_paper_table1_maps_all_12_benchmarks_to_installed_tasks():
    header = next(csv.reader((REPO / "results/paper/paper_table1.csv").open()))
    columns = [c for c in header if c not in ("backbone", "caption_source", "Avg")]
    entries = task_entries(load_set("paper_table1"))
    assert [e["benchmark"] for e in entries] == columns
    assert len(entries) == 12
    for e in entries:
        assert task_yaml(e["task"]) is not None, f"{e['task']} is not an lmms-eval 0.7.3 task"
        assert e["metric"] in task_metrics(e["task"]), (e["task"], task_metrics(e["task"]))
        assert e["scale"] in (1, 100)
    assert {e["benchmark"] for e in entries if e["judge"]} == {"MathVista", "MMBench", "MMVet"}
    assert {e["benchmark"]: e["task"] for e in entries}["InfoVQA"] == "infovqa_val"


def test_quick_and_embedded_sets_are_well_formed():
    for e in task_entries(load_set("quick")):
        assert e["metric"] in task_metrics(e["task"]) and not e["judge"]
    (synth,) = task_entries(load_set("embedded", Path("/w")))
    assert synth["local_data"] == "/w/bench/vqa.jsonl" and synth["task"] == "caprl_synth_vqa"
    with pytest.raises(EvaluationError, match="world://"):
        task_entries(load_set("embedded"))


# ---------------------------------------------------------------- command

def test_command_on_cpu_leaves_judge_tasks_out_without_a_key(tmp_path, no_judge_key):
    argv, env = build_command(tmp_path / "model", tmp_path / "eval", benchmarks=load_set("paper_table1"),
                              pixels=PIXELS, eval_cfg=CPU)
    assert argv[:4] == [sys.executable, "-m", "lmms_eval", "eval"]
    opts = dict(zip(argv[4::2], argv[5::2]))
    assert opts["--batch_size"] == "1" and opts["--output_path"] == str(tmp_path / "eval/lmms_eval")
    assert opts["--model_args"] == (f"pretrained={tmp_path / 'model'},device=cpu,device_map=cpu,"
                                    "min_pixels=3136,max_pixels=12544")
    tasks = opts["--tasks"].split(",")
    assert len(tasks) == 9 and not {"mathvista_testmini_format", "mmbench_en_dev", "mmvet"} & set(tasks)
    assert "--log_samples" in argv and "--include_path" not in argv
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"


def test_command_with_a_key_runs_judge_tasks_but_never_carries_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    argv, env = build_command(tmp_path / "m", tmp_path / "e", benchmarks=load_set("paper_table1"),
                              pixels=PIXELS, eval_cfg=CPU)
    assert "mmvet" in argv[argv.index("--tasks") + 1].split(",")
    assert "sk-test" not in " ".join(argv) + json.dumps(env)


def test_command_for_local_tasks_multi_gpu_and_reference_model(tmp_path, no_judge_key):
    cfg = {**CPU, "device": "cuda", "num_processes": 4, "extra_model_args": {"attn_implementation": "sdpa"}}
    argv, _ = build_command("Qwen/Qwen2.5-VL-3B-Instruct", tmp_path, benchmarks=load_set("embedded", tmp_path),
                            pixels=PIXELS, eval_cfg=cfg)
    assert argv[:6] == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "4", "-m"]
    assert argv[argv.index("--include_path") + 1] == str(tmp_path / "tasks")
    assert argv[argv.index("--model_args") + 1].startswith("pretrained=Qwen/Qwen2.5-VL-3B-Instruct,device=cuda")
    assert argv[argv.index("--model_args") + 1].endswith(",attn_implementation=sdpa")
    with pytest.raises(EvaluationError, match="num_processes"):
        build_command(tmp_path, tmp_path, benchmarks=load_set("quick"), pixels=PIXELS,
                      eval_cfg={**CPU, "num_processes": 2})


# ---------------------------------------------------------------- stage without lmms-eval

def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_record_format(r: dict) -> None:
    assert tuple(r) == RECORD_KEYS
    assert r["status"] in ("ok", "n/a")
    assert (r["value"] is None) == (r["status"] == "n/a") == (r["reason"] is not None)
    assert r["timestamp"].endswith("Z") and datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00"))
    assert r["lmms_eval_version"] == "0.7.3"


def test_judge_tasks_are_na_without_a_key_and_nothing_runs(tmp_path, no_judge_key):
    judge_only = {"name": "judges", "tasks": [t for t in load_set("paper_table1")["tasks"] if t["judge"]]}
    assert build_command(tmp_path / "m", tmp_path, benchmarks=judge_only, pixels=PIXELS, eval_cfg=CPU)[0] == []
    out = run_evaluation(tmp_path / "m", tmp_path, benchmarks=judge_only, pixels=PIXELS, eval_cfg=CPU,
                         meta=META, log=lambda *_: None)
    records = _records(out)
    assert [r["benchmark"] for r in records] == ["MathVista", "MMBench", "MMVet"]
    for r in records:
        check_record_format(r)
        assert r["status"] == "n/a" and r["value"] is None and "OPENAI_API_KEY" in r["reason"]
        assert r["run"] == META["run"] and r["caption_source"] == "Synthetic-Dense"
    assert not (tmp_path / "lmms_eval.log").exists()


def test_offline_run_names_the_tasks_whose_datasets_are_missing(tmp_path, monkeypatch, no_judge_key):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "LMMS_EVAL_DATASETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    with pytest.raises(EvaluationError) as err:
        run_evaluation(tmp_path / "m", tmp_path / "e", benchmarks=load_set("quick"), pixels=PIXELS, eval_cfg=CPU,
                       meta=META, log=lambda *_: None)
    assert "docvqa_val_lite: lmms-lab-encoder/LMMs-Eval-Lite" in str(err.value)
    assert "gqa_lite" in str(err.value) and "lmms-lab-encoder/GQA" in str(err.value) and "prefetch" in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EvaluationError, match="needs the network"):
        prefetch(load_set("quick"), log=lambda *_: None)


def test_results_check_and_scaling(tmp_path):
    entries = task_entries(load_set("paper_table1"))
    ai2d, gqa = [e for e in entries if e["task"] in ("ai2d", "gqa")]
    kw = dict(rc=0, log_file=tmp_path / "lmms_eval.log", log_tail=["Traceback ...", "OSError: no config.json"])
    with pytest.raises(EvaluationError, match="no results file for task.*ai2d, gqa") as err:
        read_scores(None, [ai2d, gqa], **kw)
    assert "OSError: no config.json" in str(err.value)
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"results": {"ai2d": {"alias": "ai2d", "exact_match,flexible-extract": 0.25}},
                                   "n-samples": {"ai2d": {"original": 3088, "effective": 8}}}))
    with pytest.raises(EvaluationError, match="lacks task.*gqa"):
        read_scores(results, [ai2d, gqa], **kw)
    assert read_scores(results, [ai2d], **kw) == {"ai2d": (25.0, 8, None)}
    with pytest.raises(EvaluationError, match="exit code 1"):
        read_scores(results, [ai2d], **{**kw, "rc": 1})


def test_secrets_are_masked_in_the_saved_log(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    done = run_logged([sys.executable, "-c", "import os; print('key', os.environ['OPENAI_API_KEY'])"],
                      log_path=tmp_path / "x.log", cwd=tmp_path, echo=False, check=False)
    assert done.returncode == 0 and done.tail == ["key ***"]
    assert "sk-secret" not in (tmp_path / "x.log").read_text()


# ---------------------------------------------------------------- real lmms-eval runs (slow)

def _bias_to_answer(src: Path, dst: Path, answer_id: int, eos_id: int) -> None:
    """A copy of `src` that answers every question with one token, then stops.

    Attention and MLP outputs are zeroed, so the decoder is a bigram model: the residual is the
    current token's embedding. Every token embeds as e0, the answer token as e1; the lm_head maps
    e0 -> answer and e1 -> eos."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(src / "model.safetensors")
    for k, v in sd.items():
        if "visual" in k:
            continue
        if k.endswith(("o_proj.weight", "down_proj.weight")):
            sd[k] = torch.zeros_like(v)
        elif k.endswith("norm.weight") and ".layers." not in k:
            sd[k] = torch.ones_like(v)
    emb = torch.zeros_like(sd["model.embed_tokens.weight"])
    emb[:, 0] = 1.0
    emb[answer_id] = 0.0
    emb[answer_id, 1] = 1.0
    head = torch.zeros_like(sd["lm_head.weight"])
    head[answer_id, 0] = 10.0
    head[eos_id, 1] = 10.0
    sd["model.embed_tokens.weight"], sd["lm_head.weight"] = emb, head
    save_file(sd, dst / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def synth_world(tmp_path_factory) -> Path:
    from embedded.synthetic import build_synthetic_data

    world = tmp_path_factory.mktemp("world")
    build_synthetic_data(world, n_train=48, n_bench=16, seed=0)
    return world


@pytest.mark.slow
def test_a_model_that_fails_to_load_fails_the_stage(tmp_path, synth_world, no_judge_key):
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2_5_vl"}')   # no weights, no tokenizer
    with pytest.raises(EvaluationError) as err:
        run_evaluation(broken, tmp_path / "eval", benchmarks=load_set("embedded", synth_world), pixels=PIXELS,
                       eval_cfg=CPU, meta=META, log=lambda *_: None)
    msg = str(err.value)
    assert "caprl_synth_vqa" in msg and "no results file" in msg and "lmms_eval.log" in msg
    assert not (tmp_path / "eval/results.jsonl").exists()


@pytest.mark.slow
def test_embedded_benchmark_scores_are_real_and_follow_the_model(tmp_path, synth_world, no_judge_key):
    from transformers import AutoTokenizer

    from embedded.tiny_models import build_tiny_vit_source
    from embedded.tokenizer import train_tokenizer

    texts = (synth_world / "texts.txt").read_text().splitlines()
    tok_dir = train_tokenizer(texts, tmp_path / "tokenizer", vocab_size=1024)
    random_model = build_tiny_vit_source(tmp_path / "random", tok_dir, text_hidden=48, seed=0)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    rows = [json.loads(line) for line in (synth_world / "bench/vqa.jsonl").read_text().splitlines()]
    answers = [r["answer"] for r in rows]
    word = max((a for a in set(answers) if len(tok.encode(a)) == 1), key=lambda a: (answers.count(a), a))
    biased = tmp_path / "biased"
    _bias_to_answer(random_model, biased, tok.encode(word)[0], tok.eos_token_id)

    bench = load_set("embedded", synth_world)
    scores = {}
    for name, model in (("random", random_model), ("biased", biased)):
        out = run_evaluation(model, tmp_path / name, benchmarks=bench, pixels=PIXELS, eval_cfg=CPU,
                             meta={**META, "run": name}, log=lambda *_: None)
        (record,) = _records(out)
        check_record_format(record)
        assert record["status"] == "ok" and record["n"] == len(rows) == 32
        assert record["model_args"] == (f"pretrained={model.resolve()},device=cpu,device_map=cpu,"
                                        "min_pixels=3136,max_pixels=12544")
        task_dir = tmp_path / name / "by_task/caprl_synth_vqa"
        samples = list(task_dir.glob("lmms_eval/*/*_samples_caprl_synth_vqa.jsonl"))
        assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 32
        scores[name] = record["value"]
    # The biased model answers `word` to everything: exactly the questions whose answer is `word`.
    assert scores["biased"] == round(100 * answers.count(word) / len(answers), 4) > 0
    assert scores["random"] < scores["biased"]


def test_a_judge_that_does_not_answer_makes_its_tasks_na_not_zero():
    """lmms-eval scores a question 0 when its judge call fails, so a dead judge is found before
    the tasks run: its tasks are skipped with the reason (n/a), the others run."""
    import socket

    from evaluation.benchmarks import judge_answers, split_judge
    from tests.stub_endpoint import StubEndpoint

    entries = [{"task": "mathvista_testmini", "judge": True}, {"task": "ai2d", "judge": False}]
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    env = {"API_TYPE": "local", "LLM_JUDGE_URL": dead + "/chat/completions"}
    runnable, skipped = split_judge(entries, env, probe=True)
    assert runnable == [entries[1]] and list(skipped) == ["mathvista_testmini"]
    assert skipped["mathvista_testmini"].startswith(f"judge task: the judge at {dead}/models does not answer")
    assert split_judge(entries, env) == (entries, {})   # without the probe (plan, command) the key decides
    stub = StubEndpoint(model="judge")
    try:
        assert judge_answers({"API_TYPE": "local", "LLM_JUDGE_URL": stub.url + "/chat/completions"}) == (True, "")
        env = {"API_TYPE": "openai", "OPENAI_API_KEY": "sk-test", "OPENAI_API_URL": stub.url}
        assert split_judge(entries, env, probe=True) == (entries, {})
        assert stub.requests == []   # asked for its model list only, no question
    finally:
        stub.close()
