"""The twelve Table-1 benchmarks on local data: the real lmms-eval task code (installed YAML and
utils.py), the columns it reads, the thin local task files, and (slow) all twelve through the
evaluate stage with judges on loopback."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from embedded.benchmarks import EXPECTED_IF_ALWAYS_A, GENERATORS, GQA_IMAGES, build_table1_benchmarks, write_parquet
from evaluation import EvaluationError, build_command, run_evaluation
from evaluation.benchmarks import (check_local_columns, check_task_imports, lmms_task_name, required_columns,
                                   task_entries, task_yaml_path)
from evaluation.local_tasks import write_thin_task
from evaluation.stage import latest_results_file
from tests.conftest import REPO

SETS = REPO / "configs/hydra/benchmarks"
PIXELS = {"min_pixels": 3136, "max_pixels": 12544}
CPU = {"batch_size": 1, "limit": None, "model": "qwen2_5_vl", "device": "cpu", "num_processes": 1,
       "extra_model_args": {}}
META = {"run": "tiny-always-A", "backbone": "Tiny+Tiny-ViT", "caption_source": "Synthetic-Dense"}
JUDGE_VARS = ("OPENAI_API_KEY", "AZURE_API_KEY", "API_TYPE", "LLM_JUDGE_URL", "OPENAI_API_URL")

# The columns each task's hooks read in lmms-eval 0.7.3 (derived from its YAML and utils.py).
COLUMNS = {
    "infovqa_val": ["image", "question", "answers"],
    "docvqa_val": ["image", "question", "answers"],
    "chartqa": ["image", "question", "answer", "type"],
    "realworldqa": ["image", "question", "answer"],
    "mathvista_testmini_format": ["decoded_image", "answer_type", "choices", "question", "question_type", "answer",
                                  "metadata", "pid", "query"],
    "seedbench_2_plus": ["image", "choice_A", "choice_B", "choice_C", "choice_D", "question", "answer",
                         "question_id", "question_image_type"],
    "mmerealworld": ["bytes", "multi-choice options", "question", "answer", "category", "index", "l2-category"],
    "mmbench_en_dev": ["image", "L2-category", "category", "hint", "index", "question", "source", "split", "answer"],
    "mmstar": ["image", "question", "answer", "category", "index", "l2_category"],
    "mmvet": ["image", "question", "answer", "capability", "question_id"],
    "ai2d": ["image", "options", "question", "answer"],
    "gqa": ["question", "answer", "imageId"],       # "image" comes from process_docs
}


def local_set(bench_dir: Path) -> dict:
    text = (SETS / "paper_table1_local.yaml").read_text().replace("world://benchmarks/", f"{bench_dir}/")
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("benchmarks")
    build_table1_benchmarks(out)
    return out


@pytest.fixture
def no_judge(monkeypatch):
    for var in JUDGE_VARS:
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------- schema and columns (fast)

def test_local_set_mirrors_paper_table1_row_for_row(bench_dir):
    paper = task_entries(yaml.safe_load((SETS / "paper_table1.yaml").read_text()))
    local = task_entries(local_set(bench_dir))
    keys = ("benchmark", "task", "metric", "filter", "scale", "judge")
    assert [{k: e[k] for k in keys} for e in local] == [{k: e[k] for k in keys} for e in paper]
    assert all(Path(e["local_data"]).is_file() for e in local)
    (gqa,) = [e for e in local if e["task"] == "gqa"]
    assert gqa["local_hub"] == [{"path": "lmms-lab-encoder/GQA", "name": "testdev_balanced_images", "split": "testdev",
                                 "data": str(bench_dir / GQA_IMAGES["file"])}]
    assert [lmms_task_name(e) for e in local][:2] == ["infovqa_val_local", "docvqa_val_local"]


def test_required_columns_are_derived_from_the_installed_task_code(bench_dir):
    assert set(GENERATORS) == set(COLUMNS) == set(EXPECTED_IF_ALWAYS_A)
    for task, columns in COLUMNS.items():
        assert list(required_columns(task)) == columns, task
        check_local_columns({"task": task, "local_data": str(bench_dir / f"{task}.parquet")})
    assert required_columns("mmvet")["answer"] == "doc_to_target ('{{answer}}')"
    assert required_columns("chartqa")["type"] == "process_results (utils.chartqa_process_results)"


def test_a_missing_column_fails_naming_task_column_and_file(tmp_path):
    def without_type():
        feats, rows = GENERATORS["chartqa"]()
        del feats["type"]
        return feats, [{k: v for k, v in r.items() if k != "type"} for r in rows]

    data = write_parquet(without_type, tmp_path / "chartqa.parquet")
    entry = {"benchmark": "ChartQA", "task": "chartqa", "metric": "relaxed_overall", "judge": False,
             "local_data": str(data)}
    with pytest.raises(EvaluationError) as err:
        run_evaluation(tmp_path / "model", tmp_path / "eval", benchmarks={"name": "t", "tasks": [entry]},
                       pixels=PIXELS, eval_cfg=CPU, meta=META, log=lambda *_: None)
    assert str(err.value).startswith(f"task chartqa: local data {data} lacks column(s) 'type' that lmms-eval's "
                                     "chartqa reads")
    assert "process_results (utils.chartqa_process_results)" in str(err.value)
    assert not (tmp_path / "eval/lmms_eval.log").exists()       # lmms-eval never started


def test_a_missing_column_in_json_lines_is_named_too(tmp_path):
    data = tmp_path / "gqa.jsonl"
    data.write_text(json.dumps({"id": "q0", "question": "q?", "answer": "a"}) + "\n")
    with pytest.raises(EvaluationError, match=r"task gqa: .*lacks column\(s\) 'imageId'"):
        check_local_columns({"task": "gqa", "local_data": str(data)})


def test_thin_task_includes_the_installed_yaml_and_changes_only_the_data(bench_dir, tmp_path):
    (gqa,) = [e for e in task_entries(local_set(bench_dir)) if e["task"] == "gqa"]
    path = write_thin_task(gqa, tmp_path / "tasks")
    assert path == tmp_path / "tasks/gqa_local/gqa_local.yaml"
    assert yaml.safe_load(path.read_text()) == {
        "include": str(task_yaml_path("gqa")), "task": "gqa_local", "dataset_path": "parquet", "dataset_name": None,
        "dataset_kwargs": {"data_files": {"testdev": str(bench_dir / "gqa.parquet")}}}
    card = (tmp_path / "lmms-lab-encoder/GQA/README.md").read_text()
    assert '"config_name": "testdev_balanced_images"' in card
    assert (tmp_path / "lmms-lab-encoder/GQA/testdev_balanced_images/testdev-00000.parquet").is_file()


def test_command_runs_local_copies_under_their_own_names(bench_dir, tmp_path, no_judge):
    argv, _ = build_command(tmp_path / "m", tmp_path / "e", benchmarks=local_set(bench_dir), pixels=PIXELS,
                            eval_cfg=CPU)
    tasks = argv[argv.index("--tasks") + 1].split(",")
    assert tasks == ["infovqa_val_local", "docvqa_val_local", "chartqa_local", "realworldqa_local",
                     "seedbench_2_plus_local", "mmerealworld_local", "mmstar_local", "ai2d_local", "gqa_local"]
    assert argv[argv.index("--include_path") + 1] == str(tmp_path / "e/tasks")


def test_a_module_the_task_code_imports_is_checked_before_the_run(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "Levenshtein" else real(name, *a))
    with pytest.raises(EvaluationError) as err:
        check_task_imports([{"task": "chartqa"}, {"task": "mathvista_testmini_format"}])
    assert "mathvista_testmini_format: module 'Levenshtein' (imported by " in str(err.value)
    assert "mathvista/mathvista_evals.py" in str(err.value) and "chartqa" not in str(err.value)


# ---------------------------------------------------------------- all twelve, real lmms-eval (slow)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"judge server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"judge server not up after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The embedded tiny Qwen2.5-VL made to answer one token to everything: "A" (model, judge_A) or "1"."""
    from transformers import AutoTokenizer

    from embedded.synthetic import build_synthetic_data
    from embedded.tiny_models import build_tiny_vit_source
    from embedded.tokenizer import train_tokenizer
    from tests.test_evaluate import _bias_to_answer

    root = tmp_path_factory.mktemp("models")
    build_synthetic_data(root / "world", n_train=48, n_bench=16, seed=0)
    texts = (root / "world/texts.txt").read_text().splitlines()
    tok_dir = train_tokenizer(texts, root / "tokenizer", vocab_size=1024)
    random_model = build_tiny_vit_source(root / "random", tok_dir, text_hidden=48, seed=0)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    models = {}
    for name, word in (("model", "A"), ("judge", "1"), ("model_1", "1"), ("judge_A", "A")):
        (token,) = tok.encode(word)
        models[name] = root / name
        _bias_to_answer(random_model, models[name], token, tok.eos_token_id)
    return models


@contextmanager
def judge_server(model: Path, work: Path):
    """LLaMA-Factory's OpenAI-compatible server on loopback, serving `model`; yields (url, log)."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "judge.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(model), "template": "qwen2_vl",
                                      "infer_backend": "huggingface"}))
    port, log = _free_port(), work / "server.log"
    env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    cli = Path(sys.executable).parent / "llamafactory-cli"
    with log.open("w") as out:
        proc = subprocess.Popen([str(cli), "api", str(config)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(f"http://127.0.0.1:{port}/v1/models", proc, log)
        yield f"http://127.0.0.1:{port}/v1/chat/completions", log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def judge_url(tiny_models, tmp_path_factory):
    with judge_server(tiny_models["judge"], tmp_path_factory.mktemp("judge")) as (url, log):
        yield {"url": url, "log": log}


def _samples(out: Path, task: str) -> list[dict]:
    (path,) = (out / "by_task" / task).glob(f"lmms_eval/*/*_samples_{task}_local.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


MATHVISTA = "mathvista_testmini_format"
# The report row of the always-"A" model: the twelve columns, then Avg (637.5 / 12)
ROW = {"InfoVQA": "37.5", "DocVQA": "50.0", "ChartQA": "50.0", "RealWorldQA": "50.0", "MathVista": "75.0",
       "SEED2Plus": "25.0", "MME-RealWorld": "50.0", "MMBench": "50.0", "MMStar": "50.0", "MMVet": "100.0",
       "AI2D": "50.0", "GQA": "50.0"}


@pytest.mark.slow
def test_all_twelve_benchmarks_run_on_local_data_with_a_loopback_judge(bench_dir, tiny_models, judge_url, tmp_path,
                                                                      monkeypatch):
    """The twelve tasks, each its own lmms-eval run, through the evaluate stage's code path, with a real
    judge on loopback for the judge tasks."""
    from report import build_table, collect_records, write_report

    for var in JUDGE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("API_TYPE", "local")                      # lmms-eval's own `local` judge provider
    monkeypatch.setenv("LLM_JUDGE_URL", judge_url["url"])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))      # the parquet builder's cache stays here
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("LMMS_EVAL_DATASETS_CACHE", raising=False)
    out = tmp_path / "eval"
    bench = local_set(bench_dir)
    run = dict(pixels=PIXELS, eval_cfg=CPU, meta=META)
    shown: list[str] = []
    results = run_evaluation(tiny_models["model"], out, benchmarks=bench, log=shown.append, **run)
    # MMBench still scores: an "A" is read as option A without asking any judge
    assert [line for line in shown if line.startswith("warning: ")] == [
        "warning: mmbench_en_dev: with API_TYPE=local lmms-eval's MMBench fallback cannot reach any judge; answers "
        "it cannot read as an option letter get a seeded random letter after ~45 s of retries"]

    ran = [e["task"] for e in task_entries(bench)]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert {r["task"]: r["value"] for r in records} == {t: EXPECTED_IF_ALWAYS_A[t] for t in ran}
    assert all(r["status"] == "ok" and r["n"] == len(GENERATORS[r["task"]]()[1]) for r in records)
    # One lmms-eval invocation per task; the values are its results JSON's real "<metric>,<filter>" keys.
    for e in task_entries(bench):
        scores = json.loads(latest_results_file(out / "by_task" / e["task"] / "lmms_eval", since=0).read_text())
        raw = scores["results"][f"{e['task']}_local"][f"{e['metric']},{e['filter']}"]
        assert round(raw * e["scale"], 4) == EXPECTED_IF_ALWAYS_A[e["task"]]
    # The judge answered: MathVista's extractions and MM-Vet's grades are its "1".
    assert [s["llm_as_judge_eval"]["extraction"] for s in _samples(out, MATHVISTA)] == ["1"] * 4
    assert [s["gpt_eval_score"]["score"] for s in _samples(out, "mmvet")] == [1.0] * 3
    posts = judge_url["log"].read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')
    assert posts == 4 + 3

    table = build_table(collect_records([results]))
    columns = list(ROW)
    assert table.benchmarks == columns
    markdown = write_report(collect_records([results]), tmp_path / "report", plots=False)["markdown_text"]
    (row,) = [line for line in markdown.splitlines() if line.startswith("| Tiny+Tiny-ViT | Synthetic-Dense |")]
    cells = [c.strip().strip("*") for c in row.strip("|").split("|")][2:]
    assert [c.split(" [")[0] for c in cells[:len(columns) + 1]] == [ROW[c] for c in columns] + ["53.1"]
    # intervals from the local copies' per-sample logs (<task>_local), where those reproduce the score
    assert cells[:4] == ["37.5 [0.0, 75.0]", "50.0 [15.0, 85.0]", "50.0 [15.0, 85.0]", "50.0 [15.0, 85.0]"]


def test_without_a_judge_the_judge_tasks_are_na_with_the_reason(bench_dir, tmp_path, no_judge):
    judges = {"name": "judges", "tasks": [t for t in local_set(bench_dir)["tasks"] if t["judge"]]}
    out = run_evaluation(tmp_path / "model", tmp_path / "eval", benchmarks=judges, pixels=PIXELS, eval_cfg=CPU,
                         meta=META, log=lambda *_: None)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["benchmark"], r["status"], r["value"]) for r in records] == [
        ("MathVista", "n/a", None), ("MMBench", "n/a", None), ("MMVet", "n/a", None)]
    assert all(r["reason"] == "judge task: no OPENAI_API_KEY in the environment (API_TYPE=openai)" for r in records)


# ---------------------------------------------------------------- prefetch and the offline check (local paths)

PAPER_DATASETS = {
    "infovqa_val": ["lmms-lab-encoder/DocVQA [InfographicVQA]"], "docvqa_val": ["lmms-lab-encoder/DocVQA [DocVQA]"],
    "chartqa": ["lmms-lab-encoder/ChartQA"], "realworldqa": ["lmms-lab-encoder/RealWorldQA"],
    "mathvista_testmini_format": ["AI4Math/MathVista"], "seedbench_2_plus": ["doolayer/SEED-Bench-2-Plus"],
    "mmerealworld": ["yifanzhang114/MME-RealWorld-Lmms-eval"], "mmbench_en_dev": ["lmms-lab-encoder/MMBench [en]"],
    "mmstar": ["Lin-Chen/MMStar"], "mmvet": ["lmms-lab-encoder/MMVet"], "ai2d": ["lmms-lab-encoder/ai2d"],
    "gqa": ["lmms-lab-encoder/GQA [testdev_balanced_instructions]", "lmms-lab-encoder/GQA [testdev_balanced_images]"],
}


def _gqa_entry() -> dict:
    (gqa,) = [e for e in task_entries(yaml.safe_load((SETS / "paper_table1.yaml").read_text())) if e["task"] == "gqa"]
    return gqa


def test_paper_table1_datasets_are_the_names_lmms_eval_0_7_3_loads(tmp_path):
    from evaluation.benchmarks import code_datasets, missing_datasets

    entries = task_entries(yaml.safe_load((SETS / "paper_table1.yaml").read_text()))
    empty = {"HF_HOME": str(tmp_path / "empty")}
    assert missing_datasets(entries, empty) == PAPER_DATASETS
    # GQA's second load is found in its own code, not only in the set's `prefetch` list
    assert code_datasets("gqa") == [{"path": "lmms-lab-encoder/GQA", "name": "testdev_balanced_images"}]
    assert [code_datasets(e["task"]) for e in entries if e["task"] != "gqa"] == [[]] * 11


def test_offline_check_looks_for_each_config_in_the_cache_its_reader_reads(tmp_path):
    from evaluation.benchmarks import missing_datasets

    gqa = _gqa_entry()
    env = {"HF_HOME": str(tmp_path / "hf"), "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "lmms")}
    def arrow(folder: str, rows: bytes = b"rows") -> None:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "0.0.0").mkdir()
        (tmp_path / folder / "0.0.0" / "gqa-testdev.arrow").write_bytes(rows)

    arrow("lmms/lmms-lab-encoder___gqa/testdev_balanced_instructions")
    arrow("lmms/lmms-lab-encoder___gqa/testdev_balanced_images")
    # lmms-eval reads the instructions from LMMS_EVAL_DATASETS_CACHE, but gqa's process_docs calls
    # load_dataset without a cache_dir: the images must be in HF_HOME/datasets
    assert missing_datasets([gqa], env) == {"gqa": ["lmms-lab-encoder/GQA [testdev_balanced_images]"]}
    # a folder without data (an interrupted download, or made by hand) is not the dataset
    (tmp_path / "hf/datasets/lmms-lab-encoder___gqa/testdev_balanced_images").mkdir(parents=True)
    assert missing_datasets([gqa], env) == {"gqa": ["lmms-lab-encoder/GQA [testdev_balanced_images]"]}
    (tmp_path / "hf/datasets/lmms-lab-encoder___gqa/testdev_balanced_images" / "part.arrow").write_bytes(b"")
    assert missing_datasets([gqa], env) == {"gqa": ["lmms-lab-encoder/GQA [testdev_balanced_images]"]}
    (tmp_path / "hf/datasets/lmms-lab-encoder___gqa/testdev_balanced_images" / "part.arrow").write_bytes(b"rows")
    assert missing_datasets([gqa], env) == {}


def test_an_empty_hub_cache_folder_is_not_a_dataset(tmp_path):
    from evaluation.benchmarks import dataset_cached

    env = {"HF_HOME": str(tmp_path / "hf")}
    repo = tmp_path / "hf/hub/datasets--lmms-lab--DocVQA"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    assert not dataset_cached("lmms-lab/DocVQA", env)
    (repo / "blobs").mkdir()
    (repo / "blobs" / "f00d").write_bytes(b"PAR1...")
    (repo / "snapshots" / "abc" / "test-00000.parquet").symlink_to(repo / "blobs" / "f00d")
    assert dataset_cached("lmms-lab/DocVQA", env)


def test_prefetch_puts_each_dataset_where_its_reader_looks(tmp_path, monkeypatch):
    """Prefetch with real `datasets`, from local folders named like the hub ids (datasets reads an
    existing folder as a local dataset), so no network is involved."""
    from evaluation import prefetch

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "lmms"))
    work = tmp_path / "work"
    repo = work / "lmms-lab-encoder/GQA"
    for config, gen in (("testdev_balanced_instructions", GENERATORS["gqa"]), ("testdev_balanced_images", None)):
        from embedded.benchmarks import gqa_images

        write_parquet(gen or gqa_images, repo / config / "testdev-00000.parquet")
    card = {"configs": [{"config_name": c, "data_files": [{"split": "testdev", "path": f"{c}/testdev-*.parquet"}]}
                        for c in ("testdev_balanced_instructions", "testdev_balanced_images")]}
    (repo / "README.md").write_text("---\n" + json.dumps(card) + "\n---\n")
    monkeypatch.chdir(work)
    shown = []
    prefetch({"name": "gqa only", "tasks": [_gqa_entry()]}, log=shown.append)
    assert shown == [f"prefetch GQA (gqa): lmms-lab-encoder/GQA [testdev_balanced_instructions] -> {tmp_path / 'lmms'}",
                     f"prefetch GQA (gqa): lmms-lab-encoder/GQA [testdev_balanced_images] -> {tmp_path / 'hf/datasets'}"]
    assert list((tmp_path / "lmms").rglob("*.arrow")) and list((tmp_path / "hf/datasets").rglob("*.arrow"))


@pytest.mark.slow
def test_mmbench_fallback_reaches_an_openai_compatible_judge(bench_dir, tiny_models, tmp_path, monkeypatch):
    """MMBench's GPT fallback posts to OPENAI_API_URL itself (API_TYPE openai), not through the
    `local` provider: a model answering "1" gives no option letter, the judge (answering "A") picks one."""
    (mmbench,) = [t for t in local_set(bench_dir)["tasks"] if t["task"] == "mmbench_en_dev"]
    for var in JUDGE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with judge_server(tiny_models["judge_A"], tmp_path / "judge") as (url, log):
        monkeypatch.setenv("API_TYPE", "openai")
        monkeypatch.setenv("OPENAI_API_URL", url)                  # MMBench's evaluator wants the full URL
        monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback-judge")  # read, never checked, by the server
        out = run_evaluation(tiny_models["model_1"], tmp_path / "eval", benchmarks={"name": "m", "tasks": [mmbench]},
                             pixels=PIXELS, eval_cfg=CPU, meta=META, log=lambda *_: None)
        posts = log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["status"], record["value"], record["n"]) == ("ok", 50.0, 4)   # rows answered A: 2 of 4
    assert [s["gpt_eval_score"]["prediction"] for s in _samples(tmp_path / "eval", "mmbench_en_dev")] == ["1"] * 4
    assert posts == 4                                                  # one judge call per row
    assert "sk-loopback-judge" not in (tmp_path / "eval/by_task/mmbench_en_dev/lmms_eval.log").read_text()


def test_judge_warnings_name_the_tasks_whose_judge_client_cannot_reach_the_judge():
    from evaluation.benchmarks import judge_warnings

    entries = task_entries(yaml.safe_load((SETS / "paper_table1.yaml").read_text()))
    assert judge_warnings(entries, {}) == []                 # the real OpenAI API: every client's default URL
    (local,) = judge_warnings(entries, {"API_TYPE": "local", "LLM_JUDGE_URL": "http://127.0.0.1:1/v1/chat/completions"})
    assert local.startswith("mmbench_en_dev: with API_TYPE=local lmms-eval's MMBench fallback cannot reach any judge")
    full = judge_warnings(entries, {"OPENAI_API_URL": "http://127.0.0.1:1/v1/chat/completions"})
    assert [w.split(":")[0] for w in full] == ["mathvista_testmini_format", "mmvet"]
    (base,) = judge_warnings(entries, {"OPENAI_API_URL": "http://127.0.0.1:1/v1"})
    assert base.startswith("mmbench_en_dev: OPENAI_API_URL=http://127.0.0.1:1/v1 is a base URL")


@pytest.mark.slow
def test_a_task_that_raises_costs_only_its_score_and_a_rerun_redoes_only_it(bench_dir, tiny_models, tmp_path,
                                                                           no_judge):
    """MMBench with string indexes (as one published card has them) makes lmms-eval's MMBench
    scoring raise a TypeError; AI2D beside it keeps its score, and the judge configured as a config
    (LLaMA-Factory's server on loopback, answering "A") judges MMBench once the data is fixed."""
    import pandas as pd

    tasks = {t["task"]: t for t in local_set(bench_dir)["tasks"]}
    broken = tmp_path / "mmbench_str.parquet"
    frame = pd.read_parquet(tasks["mmbench_en_dev"]["local_data"])
    pd.concat([frame.assign(index=frame["index"].astype(str))]).to_parquet(broken)
    bench = {"name": "two", "tasks": [tasks["ai2d"], {**tasks["mmbench_en_dev"], "local_data": str(broken)}]}
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    out = tmp_path / "store/evaluate/aaaa"
    run = dict(pixels=PIXELS, eval_cfg=CPU, meta=META)
    with judge_server(tiny_models["judge_A"], tmp_path / "judge") as (url, log):
        judge = {"name": "loopback", "base_url": url.removesuffix("/chat/completions"), "model": "gpt-3.5-turbo",
                 "weights": "tiny-judge-A", "api_key_env": None}
        with pytest.raises(EvaluationError) as err:
            run_evaluation(tiny_models["model_1"], out, benchmarks=bench, judge=judge, log=lambda *_: None, **run)
        assert str(err.value).startswith("lmms-eval failed on task(s) mmbench_en_dev (the other tasks' scores")
        records = {r["task"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
        assert (records["ai2d"]["status"], records["mmbench_en_dev"]["status"]) == ("ok", "n/a")
        assert records["mmbench_en_dev"]["reason"].startswith("lmms-eval failed on this task")
        assert records["ai2d"]["judge"] is None
        ai2d_log = out / "by_task/ai2d/lmms_eval.log"
        before = ai2d_log.stat().st_mtime
        # the data fixed: the re-run redoes MMBench only
        bench["tasks"][1] = tasks["mmbench_en_dev"]
        shown: list[str] = []
        run_evaluation(tiny_models["model_1"], out, benchmarks=bench, judge=judge, log=shown.append, **run)
        assert ai2d_log.stat().st_mtime == before and any(x.startswith("ai2d: done already") for x in shown)
        posts = log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')
    records = {r["task"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert (records["mmbench_en_dev"]["status"], records["mmbench_en_dev"]["value"]) == ("ok", 50.0)
    assert records["mmbench_en_dev"]["judge"] == {"name": "loopback", "model": "gpt-3.5-turbo",
                                                  "weights": "tiny-judge-A", "base_url": judge["base_url"]}
    assert posts == 4   # MMBench's evaluator reached the judge through the full URL, once per row
    assert records["ai2d"]["samples"].startswith("by_task/ai2d/lmms_eval/")
    monkeypatch.undo()


@pytest.mark.slow
def test_a_judge_killed_mid_evaluation_makes_its_task_na_with_the_reason(bench_dir, tiny_models, tmp_path, no_judge):
    """The judge here is tests/stub_endpoint.py (a deterministic OpenAI-compatible server on
    loopback; the judge is not what is under test): it grades MM-Vet's first question, then goes
    away while the second is being judged. lmms-eval would retry that one for about 2 minutes, score
    it 0 without failing, and the score would read "ok"; the harness stops the task once the judge
    has been away for judge.outage_s instead."""
    import threading

    from tests.stub_endpoint import StubEndpoint

    (mmvet,) = [t for t in local_set(bench_dir)["tasks"] if t["task"] == "mmvet"]
    # each call is held 0.5 s before its answer, so the kill below lands while the second is held
    stub = StubEndpoint(model="judge", replies=["1"], delay_s=0.5)
    # away for 3 s is an outage: the harness stops the task, well before lmms-eval's own retries end
    judge = {"name": "loopback", "base_url": stub.url, "model": "judge", "weights": "stub", "api_key_env": None,
             "outage_s": 3}

    def kill_at_second_call():
        while len(stub.requests) < 2:
            time.sleep(0.05)
        stub.kill()   # the call in flight loses its connection, the port refuses the retries

    threading.Thread(target=kill_at_second_call, daemon=True).start()
    # Two of MM-Vet's three questions: the second is the one asked as the judge goes.
    out = run_evaluation(tiny_models["model"], tmp_path / "eval", benchmarks={"name": "m", "tasks": [mmvet]},
                         judge=judge, pixels=PIXELS, eval_cfg={**CPU, "limit": 2}, meta=META, log=lambda *_: None)
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["status"], record["value"]) == ("n/a", None)
    assert record["reason"] == (f"the judge stopped answering during evaluation (judge 'loopback' at {stub.url}/models "
                                "does not answer (ConnectError))")
    assert len(stub.requests) == 2   # the first question was graded, the second asked as the judge went
    # stopped by the harness's watch, not ended by lmms-eval scoring the question 0 after ~2 minutes
    log = (tmp_path / "eval" / "by_task" / "mmvet" / "lmms_eval.log").read_text()
    assert log.endswith(f"\nstopped by the harness: judge 'loopback' at {stub.url}/models does not answer (ConnectError)\n")


def test_prefetch_of_a_world_set_says_there_is_nothing_to_download():
    """The embedded set's rows read world:// files the run resolves later: prefetch leaves them be."""
    from evaluation import prefetch

    said = []
    prefetch({"name": "embedded", "tasks": [{"benchmark": "SynthVQA", "task": "caprl_synth_vqa", "metric": "exact_match",
                                             "judge": False, "local_data": "world://bench/vqa.jsonl"}]}, log=said.append)
    assert said == ["benchmark set 'embedded': local data only, nothing to prefetch"]
