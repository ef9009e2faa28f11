"""Benchmark sets (configs/hydra/benchmarks/*.yaml), the installed lmms-eval's task YAMLs, judge keys,
the offline dataset check and prefetch. Nothing here imports torch or lmms_eval."""

from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import yaml


class EvaluationError(Exception):
    """The evaluation stage cannot produce scores; the message says which task and what to do."""


REQUIRED_KEYS = ("benchmark", "task", "metric", "judge")

# lmms-eval's LLM judge reads API_TYPE (default openai) and then one provider-specific variable
# (lmms_eval/llm_judge/providers/*.py, tasks/mmbench/en_utils.py). Only the names live here.
JUDGE_KEY_VARS = {
    "openai": "OPENAI_API_KEY",
    "async_openai": "OPENAI_API_KEY",
    "azure": "AZURE_API_KEY",
    "async_azure": "AZURE_API_KEY",
    "bedrock": "AWS_BEARER_TOKEN_BEDROCK",
    "local": "LLM_JUDGE_URL",
}


def task_entries(benchmarks: Mapping, resolved: bool = True) -> list[dict]:
    """The set's task rows, checked; defaults filled (filter "none", scale 100, no local data).
    resolved=False (the up-front check) accepts world:// data paths the run resolves later."""
    rows = list(benchmarks.get("tasks") or [])
    if not rows:
        raise EvaluationError(f"benchmark set {benchmarks.get('name')!r} lists no tasks")
    out = []
    for row in rows:
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise EvaluationError(f"benchmark set {benchmarks.get('name')!r}: row {dict(row)} lacks {missing}")
        local = row.get("local_data")
        if resolved and local is not None and str(local).startswith("world://"):
            raise EvaluationError(f"task {row['task']}: local_data {local} was not resolved to a folder")
        out.append({"filter": "none", "scale": 100, "local_data": None, **dict(row)})
    return out


def judge_key_status(env: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(available, reason): whether lmms-eval's judge would find credentials. Never returns the key."""
    env = os.environ if env is None else env
    api_type = env.get("API_TYPE", "openai").strip().lower()
    var = JUDGE_KEY_VARS.get(api_type)
    if var is None:
        return False, f"judge task: API_TYPE={api_type} is not a judge provider this stage accepts"
    if not env.get(var, "").strip():
        return False, f"judge task: no {var} in the environment (API_TYPE={api_type})"
    return True, ""


# MMBench's evaluator (tasks/mmbench/*_utils.py) posts its GPT fallback itself, to OPENAI_API_URL as
# a full .../chat/completions URL and only for API_TYPE openai or azure; the llm_judge providers the
# other judge tasks use take OPENAI_API_URL as a base URL and append /chat/completions.
OWN_CLIENT_JUDGE = ("mmbench_",)


def judge_warnings(entries: list[dict], env: Mapping[str, str] | None = None) -> list[str]:
    """Judge tasks that would run but could not reach the judge the environment names."""
    env = os.environ if env is None else env
    api_type = env.get("API_TYPE", "openai").strip().lower()
    url = env.get("OPENAI_API_URL", "").rstrip("/")
    own = [e["task"] for e in entries if e["judge"] and e["task"].startswith(OWN_CLIENT_JUDGE)]
    other = [e["task"] for e in entries if e["judge"] and not e["task"].startswith(OWN_CLIENT_JUDGE)]
    out = []
    if own and api_type not in ("openai", "azure"):
        out += [f"{t}: with API_TYPE={api_type} lmms-eval's MMBench fallback cannot reach any judge; answers it "
                "cannot read as an option letter get a seeded random letter after ~45 s of retries" for t in own]
    if api_type == "openai" and url:
        full = url.endswith("/chat/completions")
        hit = other if full else own
        out += [f"{t}: OPENAI_API_URL={url} is a {'full' if full else 'base'} URL, which this task's judge client "
                f"does not expect ({'it appends /chat/completions' if full else 'it posts to the URL as given'})"
                for t in hit]
    return out


def judge_models_url(env: Mapping[str, str] | None = None) -> str | None:
    """The model list of the judge lmms-eval's providers would call (None: a provider whose
    address this stage does not know: azure, bedrock)."""
    env = os.environ if env is None else env
    api_type = env.get("API_TYPE", "openai").strip().lower()
    if api_type == "local":   # a full .../chat/completions URL (lmms-eval's local provider)
        url = env.get("LLM_JUDGE_URL", "http://localhost:8000/v1/chat/completions").rstrip("/")
        return url.removesuffix("/chat/completions") + "/models"
    if api_type in ("openai", "async_openai"):
        url = env.get("OPENAI_API_URL", "https://api.openai.com/v1").rstrip("/")
        return url.removesuffix("/chat/completions") + "/models"
    return None


def judge_answers(env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> tuple[bool, str]:
    """(answers, reason): whether the judge is there before any question is asked of it. lmms-eval
    catches a judge's connection errors per question and scores those questions 0, so a dead
    judge would otherwise print a real-looking score as "ok"."""
    env = os.environ if env is None else env
    url = judge_models_url(env)
    if url is None:
        return True, ""
    from evaluation.judge import model_list

    var = JUDGE_KEY_VARS.get(env.get("API_TYPE", "openai").strip().lower(), "")
    headers = {"Authorization": f"Bearer {env[var]}"} if var.endswith("_KEY") and env.get(var) else {}
    reply, why = model_list(url, headers, timeout_s)
    return (True, "") if reply is not None else (False, f"judge task: the judge at {url} {why}")


def split_judge(entries: list[dict], env: Mapping[str, str] | None = None,
                probe: bool = False) -> tuple[list[dict], dict[str, str]]:
    """Runnable entries, and {task: reason} for judge tasks skipped: no key, or (probe=True, where
    the tasks are about to run) a judge that does not answer. Skipped tasks are n/a, never 0."""
    if not any(e["judge"] for e in entries):
        return entries, {}
    ok, reason = judge_key_status(env)
    if ok and probe:
        ok, reason = judge_answers(env)
    if ok:
        return entries, {}
    return [e for e in entries if not e["judge"]], {e["task"]: reason for e in entries if e["judge"]}


# ---------------------------------------------------------------- installed lmms-eval task YAMLs

class _TagTolerantLoader(yaml.SafeLoader):
    """Reads task YAMLs without executing `!function` tags (they become None)."""


_TagTolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def lmms_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lmms_eval")   # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise EvaluationError("lmms-eval is not installed in this environment")
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


@lru_cache(maxsize=1)
def _task_index() -> dict[str, Path]:
    """{task name: YAML file} over the installed lmms-eval's task folder (one regex pass, no YAML parsing)."""
    pattern = re.compile(r"^task:\s*[\"']?([^\s\"'#]+)[\"']?\s*$", re.M)
    index: dict[str, Path] = {}
    for path in sorted(lmms_eval_tasks_dir().rglob("*.yaml")):
        for name in pattern.findall(path.read_text(errors="replace")):
            index.setdefault(name, path)
    return index


@lru_cache(maxsize=None)
def task_yaml(task: str) -> dict | None:
    """The installed lmms-eval's config of `task` (includes merged), or None when no YAML defines it."""
    path = _task_index().get(task)
    return _load_with_includes(path) if path else None


def _load_with_includes(path: Path) -> dict:
    cfg = yaml.load(path.read_text(), Loader=_TagTolerantLoader) or {}
    include = cfg.pop("include", None)
    if include:
        base = _load_with_includes(path.parent / include)
        cfg = {**base, **cfg}
    return cfg


def task_metrics(task: str) -> list[str]:
    cfg = task_yaml(task) or {}
    return [m["metric"] for m in cfg.get("metric_list") or [] if isinstance(m, dict) and "metric" in m]


def hub_datasets(entry: Mapping) -> list[dict]:
    """The HF datasets a task reads, as [{path, name, reader}]: its YAML's dataset_path/dataset_name
    (reader "lmms-eval"), then the datasets its own code loads by name, found in its Python files
    (GQA's images), plus the row's `prefetch` list (reader "task code")."""
    cfg = task_yaml(entry["task"])
    if cfg is None:
        raise EvaluationError(f"task {entry['task']} is not defined by the installed lmms-eval")
    out = [{"path": cfg["dataset_path"], "name": cfg.get("dataset_name"), "reader": "lmms-eval"}]
    for d in [*code_datasets(entry["task"]), *(entry.get("prefetch") or [])]:
        extra = {"path": d["path"], "name": d.get("name"), "reader": "task code"}
        if extra not in out:
            out.append(extra)
    return out


def _task_files(task: str) -> list[Path]:
    """The task's Python files and the lmms_eval.tasks modules they import, transitively."""
    root = lmms_eval_tasks_dir().parent.parent
    todo, seen = list(_task_modules(task)), []
    while todo:
        f = todo.pop(0)
        if f in seen:
            continue
        seen.append(f)
        for name in sorted(_imports(f)):
            inner = root / (name.replace(".", "/") + ".py")
            if name.startswith("lmms_eval.tasks.") and inner.is_file():
                todo.append(inner)
    return seen


def code_datasets(task: str) -> list[dict]:
    """[{path, name}] of the load_dataset("<literal>", "<literal>") calls in the task's own code."""
    import ast

    found = []
    for f in _task_files(task):
        for n in ast.walk(_parse(f)):
            func = getattr(n, "func", None)
            called = getattr(func, "id", None) or getattr(func, "attr", None)
            if not (isinstance(n, ast.Call) and called == "load_dataset" and n.args
                    and isinstance(n.args[0], ast.Constant)):
                continue
            name = n.args[1] if len(n.args) > 1 else next((k.value for k in n.keywords if k.arg == "name"), None)
            d = {"path": n.args[0].value, "name": name.value if isinstance(name, ast.Constant) else None}
            if d not in found:
                found.append(d)
    return found


# ---------------------------------------------------------------- offline check and prefetch

def _first_dir(candidates: list, env: Mapping[str, str]) -> Path:
    hf_home = Path(os.path.expanduser(env.get("HF_HOME", "~/.cache/huggingface")))
    chosen = next((c for c in candidates if c), hf_home / "datasets")
    return Path(os.path.expanduser(str(chosen)))


def datasets_cache_dir(reader: str, env: Mapping[str, str] | None = None) -> Path:
    """Where a dataset is read offline: lmms-eval loads a task's own dataset from
    LMMS_EVAL_DATASETS_CACHE (else the `datasets` default); a task's code calls load_dataset with
    no cache_dir, so that reads HF_DATASETS_CACHE or HF_HOME/datasets only."""
    env = os.environ if env is None else env
    if reader == "lmms-eval":
        return _first_dir([env.get("LMMS_EVAL_DATASETS_CACHE"), env.get("HF_DATASETS_CACHE")], env)
    return _first_dir([env.get("HF_DATASETS_CACHE")], env)


def _hub_cache_dirs(env: Mapping[str, str]) -> list[Path]:
    hf_home = Path(os.path.expanduser(env.get("HF_HOME", "~/.cache/huggingface")))
    dirs = [env.get("HF_HUB_CACHE"), env.get("HUGGINGFACE_HUB_CACHE"), hf_home / "hub"]
    return [Path(os.path.expanduser(str(d))) for d in dirs if d]


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def dataset_cached(repo_id: str, env: Mapping[str, str] | None = None, *, name: str | None = None,
                   reader: str = "lmms-eval") -> bool:
    """Whether the hub cache holds `repo_id`, or the `datasets` cache its reader reads holds it (and
    the config `name`, when given: GQA's instructions can be there without its images)."""
    env = os.environ if env is None else env
    org, _, base = repo_id.rpartition("/")
    hub_dir = "datasets--" + repo_id.replace("/", "--")
    if any(holds_data(d / hub_dir / "snapshots") for d in _hub_cache_dirs(env)):
        return True
    cache = datasets_cache_dir(reader, env)
    want = (org.lower(), _squash(base))
    for child in (cache.iterdir() if cache.is_dir() else []):
        o, sep, n = child.name.partition("___")      # `datasets` snake-cases names: org___name
        if sep and (o.lower(), _squash(n)) == want and holds_data(child / name if name else child):
            return True
    return False


# What a downloaded split is stored as: the hub's snapshot files, or the `datasets` cache's Arrow.
DATA_SUFFIXES = (".arrow", ".parquet", ".json", ".jsonl", ".csv", ".tsv", ".zip", ".tar", ".gz")


def holds_data(folder: Path) -> bool:
    """Whether `folder` holds at least one non-empty data file: a folder left by an interrupted or
    failed download (or made by hand) is not a dataset, and evaluating would only fail after all
    training, or worse, score nothing."""
    if not folder.is_dir():
        return False
    for root, _, files in os.walk(folder, followlinks=True):
        for f in files:
            path = Path(root) / f
            if f.endswith(DATA_SUFFIXES) and path.is_file() and path.stat().st_size > 0:
                return True
    return False


def _label(d: Mapping) -> str:
    return d["path"] + (f" [{d['name']}]" if d.get("name") else "")


def missing_datasets(entries: list[dict], env: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """{task: ["<dataset id> [<config>]" not in the cache its reader reads]} for the hub-backed entries."""
    missing = {}
    for e in entries:
        if e.get("local_data"):
            continue
        absent = [_label(d) for d in hub_datasets(e)
                  if not dataset_cached(d["path"], env, name=d["name"], reader=d["reader"])]
        if absent:
            missing[e["task"]] = absent
    return missing


def prefetch(benchmarks: Mapping, log=print) -> None:
    """Download every HF dataset the set's tasks read, each into the cache its reader reads offline."""
    entries = [e for e in task_entries(benchmarks, resolved=False) if not e.get("local_data")]
    if not entries:
        log(f"benchmark set {benchmarks.get('name')!r}: local data only, nothing to prefetch")
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0"):
        raise EvaluationError("prefetch needs the network, but HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set; "
                              "unset them and run it on a machine that can reach the Hugging Face Hub")
    import datasets

    for e in entries:
        for d in hub_datasets(e):
            cache_dir = datasets_cache_dir(d["reader"])
            log(f"prefetch {e['benchmark']} ({e['task']}): {_label(d)} -> {cache_dir}")
            try:
                datasets.load_dataset(d["path"], d["name"], cache_dir=str(cache_dir))
            except Exception as exc:  # noqa: BLE001 - re-raised with the task named
                raise EvaluationError(f"prefetch of {_label(d)} for task {e['task']} failed: {exc}. "
                                      "Gated datasets need `huggingface-cli login` (HF_TOKEN) first.") from exc


# ---------------------------------------------------------------- local data for installed tasks

# A local copy of an installed task runs under its own name: lmms-eval indexes its own task folder
# before --include_path and keeps the first definition of a name, so a thin task file that
# reused the real name would silently lose to the hub-backed original.
LOCAL_SUFFIX = "_local"
_DOC_HOOKS = ("doc_to_visual", "doc_to_text", "doc_to_target", "process_results", "process_docs")


# Installed tasks whose scoring the harness corrects: task -> (module in evaluation/lmms_tasks/, YAML key
# it replaces). Each module wraps the task's own function (its docstring says what it fixes). A hub
# run of such a task runs a thin copy under FIXED_SUFFIX that changes only that key; a local copy
# carries the fix too (evaluation/local_tasks.py).
SCORING_FIXES = {"mathvista_testmini_format": ("mathvista_decimal", "process_results")}
FIXED_SUFFIX = "_fixed"


def lmms_task_name(entry: Mapping) -> str:
    """The name lmms-eval runs an entry under: the real task, its thin local copy, or its thin copy
    with corrected scoring."""
    if is_local_copy(entry):
        return entry["task"] + LOCAL_SUFFIX
    return entry["task"] + FIXED_SUFFIX if is_fixed_copy(entry) else entry["task"]


def is_fixed_copy(entry: Mapping) -> bool:
    """A hub row of an installed task whose scoring the harness corrects (SCORING_FIXES)."""
    return not entry.get("local_data") and entry["task"] in SCORING_FIXES


def needs_include_path(entry: Mapping) -> bool:
    """Whether lmms-eval runs the entry from a task folder the harness writes."""
    return bool(entry.get("local_data")) or is_fixed_copy(entry)


def is_local_copy(entry: Mapping) -> bool:
    """A row with local data for an installed lmms-eval task (not one of our own task templates)."""
    templates = Path(__file__).parent / "lmms_tasks"
    return bool(entry.get("local_data")) and not (templates / entry["task"]).is_dir()


def task_yaml_path(task: str) -> Path:
    path = _task_index().get(task)
    if path is None:
        raise EvaluationError(f"task {task} is not defined by the installed lmms-eval")
    return path


class _FunctionRef(str):
    """A `!function module.name` value, with the folder of the YAML file that names it."""
    folder: Path


def _hooks(path: Path) -> dict:
    """The task YAML's doc hooks (includes merged); `!function` values become _FunctionRef."""
    class Loader(yaml.SafeLoader):
        pass

    def function(loader, node):
        ref = _FunctionRef(loader.construct_scalar(node))
        ref.folder = path.parent
        return ref

    Loader.add_constructor("!function", function)
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    cfg = yaml.load(path.read_text(), Loader=Loader) or {}
    base: dict = {}
    for inc in reversed(_included(path, cfg.pop("include", None))):   # the first include wins, as in lmms-eval
        base.update(_hooks(inc))
    return {**base, **{k: v for k, v in cfg.items() if k in _DOC_HOOKS}}


def _included(path: Path, include) -> list[Path]:
    """The files a task YAML's `include:` names (one or a list), relative to its folder."""
    names = include if isinstance(include, list) else [include] if include else []
    return [Path(n) if Path(n).is_absolute() else path.parent / n for n in names]


def _parse(source: Path):
    """The syntax tree of a task's Python file; its own invalid escape sequences are not our warnings."""
    import ast
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        return ast.parse(source.read_text())


def _function_node(ref: _FunctionRef):
    import ast

    module, _, name = ref.rpartition(".")
    source = ref.folder / (module.replace(".", "/") + ".py")
    for node in _parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise EvaluationError(f"{source} defines no function {name} (named in a task YAML)")


def _doc_reads(fn) -> tuple[set[str], set[str], set[str]]:
    """(read as doc["x"], tested as "x" in doc, returned as dict keys) in a function and its nested ones."""
    import ast

    read, optional, provided = set(), set(), set()
    for f in (n for n in ast.walk(fn) if isinstance(n, ast.FunctionDef)):
        if not f.args.args:
            continue
        doc = f.args.args[0].arg
        for n in ast.walk(f):
            if (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == doc
                    and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str)):
                read.add(n.slice.value)
            elif (isinstance(n, ast.Compare) and isinstance(n.left, ast.Constant) and isinstance(n.ops[0], ast.In)
                  and isinstance(n.comparators[0], ast.Name) and n.comparators[0].id == doc):
                optional.add(n.left.value)
            elif isinstance(n, ast.Return) and isinstance(n.value, ast.Dict):
                provided |= {k.value for k in n.value.keys if isinstance(k, ast.Constant)}
    return read, optional, provided


def required_columns(task: str) -> dict[str, str]:
    """{column: the hook that reads it} for an installed task, derived from its own YAML and utils.py.

    A column is required when a doc hook subscripts it (doc["x"]) without first testing "x" in doc,
    or when doc_to_target / doc_to_text name it as a string or a {{template}}; columns that
    process_docs adds (GQA's image) are not required in the file."""
    hooks = _hooks(task_yaml_path(task))
    need: dict[str, str] = {}
    added: set[str] = set()
    for hook in _DOC_HOOKS:
        value = hooks.get(hook)
        if isinstance(value, _FunctionRef):
            read, optional, provided = _doc_reads(_function_node(value))
            for col in sorted(read - optional):
                need.setdefault(col, f"{hook} ({value})")
            if hook == "process_docs":
                added |= provided
        elif isinstance(value, str) and hook in ("doc_to_target", "doc_to_text"):
            names = re.findall(r"{{\s*([\w-]+)", value) if "{{" in value else [value]
            for col in names:
                need.setdefault(col, f"{hook} ({value!r})")
    return {c: h for c, h in need.items() if c not in added}


def local_columns(path: Path) -> list[str]:
    """Column names of a local data file: parquet schema, or the first row of JSON lines / a JSON array."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import json

    text = path.read_text()
    first = json.loads(text)[0] if path.suffix == ".json" else json.loads(text.splitlines()[0])
    return list(first)


def check_local_columns(entry: Mapping) -> None:
    """Fail before lmms-eval starts when the local file lacks a column the task's code reads."""
    need = required_columns(entry["task"])
    have = set(local_columns(Path(entry["local_data"])))
    missing = [c for c in need if c not in have]
    if missing:
        lines = "\n".join(f"  {c!r}, read by {need[c]}" for c in missing)
        raise EvaluationError(f"task {entry['task']}: local data {entry['local_data']} lacks column(s) "
                              f"{', '.join(repr(c) for c in missing)} that lmms-eval's {entry['task']} reads:\n{lines}")


# ---------------------------------------------------------------- Python modules a task's code imports

def _task_modules(task: str) -> list[Path]:
    """The Python files named by the task YAML's `!function` values (includes merged)."""
    files: list[Path] = []
    todo = [task_yaml_path(task)]
    while todo:
        path = todo.pop(0)
        text = path.read_text()
        for module in re.findall(r"!function\s+([\w.]+)\.\w+", text):
            f = path.parent / (module.replace(".", "/") + ".py")
            if f.is_file() and f not in files:
                files.append(f)
        todo += _included(path, (yaml.load(text, Loader=_TagTolerantLoader) or {}).get("include"))
    return files


def _imports(source: Path) -> set[str]:
    """Absolute imports of a file, wherever they are, except those guarded by try/except."""
    import ast

    tree = _parse(source)
    guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for s in t.body for n in ast.walk(s)}
    names = set()
    for n in ast.walk(tree):
        if id(n) in guarded:
            continue
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            names.add(n.module)
    return names


def missing_modules(task: str) -> dict[str, Path]:
    """{module: file that imports it} for modules the task's code imports that are not installed.

    lmms-eval imports a task's utils.py only when the run starts, and one failing import ends the
    whole invocation with no scores for any task (MathVista's evaluator needs Levenshtein, which
    only lmms-eval's optional [metrics] extra brings)."""
    missing: dict[str, Path] = {}
    for f in _task_files(task):
        for name in sorted(_imports(f)):
            top = name.split(".")[0]
            if top != "lmms_eval" and importlib.util.find_spec(top) is None:
                missing.setdefault(top, f)
    return missing


def check_task_imports(entries: list[dict]) -> None:
    """Fail before lmms-eval starts when a task's code imports a module this environment lacks."""
    lines = []
    for e in entries:
        if _task_index().get(e["task"]) is None:
            continue        # our own task templates: their imports are ours
        for module, where in missing_modules(e["task"]).items():
            lines.append(f"  {e['task']}: module {module!r} (imported by {where})")
    if lines:
        raise EvaluationError("these tasks' code imports Python modules that are not installed; lmms-eval would "
                              "stop at the first one with no scores for any task:\n" + "\n".join(lines)
                              + "\ninstall them (lmms-eval's optional extras list most) or leave the tasks out")
