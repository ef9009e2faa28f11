"""Subprocess handling: the output goes to the stage log, a failure carries the log tail, and a
line check that raises stops the tool at once (how a wrong trainable-parameter count stops
training before it starts)."""

from __future__ import annotations

import sys
import time

import pytest

from stagekit.proc import CommandFailed, run_logged, shell_line
from train.trainable import TrainableMismatch, parse_lf_count

LF_START = ("import time; print('[INFO] llamafactory.model.loader:144 >> trainable params: 22,736 || all params: "
            "181,728 || trainable%: 12.5110', flush=True); time.sleep(60); print('trained')")


def test_failure_raises_with_the_log_tail(tmp_path):
    log = tmp_path / "stage.log"
    with pytest.raises(CommandFailed, match=r"exited with 3 .*\nlast words"):
        run_logged([sys.executable, "-c", "print('last words'); raise SystemExit(3)"], log_path=log, echo=False)
    assert "last words" in log.read_text()


def test_a_raising_line_check_stops_the_tool(tmp_path):
    def check(line):
        count = parse_lf_count(line)
        if count is not None and count != 100:
            raise TrainableMismatch(f"should train 100 but LLaMA-Factory reports {count:,}")

    t0 = time.time()
    with pytest.raises(TrainableMismatch, match="reports 22,736"):
        run_logged([sys.executable, "-c", LF_START], log_path=tmp_path / "log", echo=False, on_line=check)
    assert time.time() - t0 < 30   # stopped, not waited for
    assert "\ntrained" not in (tmp_path / "log").read_text()


def test_secrets_are_not_printed_but_tokenizer_settings_are():
    line = shell_line(["lmms-eval"], {"OPENAI_API_KEY": "sk-123", "HF_TOKEN": "hf_x", "TOKENIZERS_PARALLELISM": "false"})
    assert "sk-123" not in line and "hf_x" not in line
    assert "TOKENIZERS_PARALLELISM=false" in line


def test_every_secret_name_is_masked_in_the_command_and_in_the_output(tmp_path, monkeypatch):
    """One rule for every stage: a name with KEY, TOKEN, SECRET or PASSWORD as a whole part."""
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-secret-value")
    env = {"OPENAI_API_KEY": "sk-abcdef123"}
    log = tmp_path / "tool.log"
    done = run_logged([sys.executable, "-c", "import os; print(os.environ['OPENAI_API_KEY'], "
                       "os.environ['AWS_BEARER_TOKEN_BEDROCK'])"], env=env, log_path=log, echo=False)
    text = log.read_text()
    assert "sk-abcdef123" not in text and "bedrock-secret-value" not in text
    assert "OPENAI_API_KEY='***'" in text and done.tail == ["*** ***"]


def test_the_log_is_appended_so_a_resumed_stage_keeps_its_history(tmp_path):
    log = tmp_path / "stage.log"
    log.write_text("attempt 1\n")
    run_logged([sys.executable, "-c", "print('attempt 2')"], log_path=log, echo=False)
    assert log.read_text().startswith("attempt 1\n") and "attempt 2" in log.read_text()


def test_a_non_zero_exit_is_returned_when_not_checked(tmp_path):
    done = run_logged([sys.executable, "-c", "print('\\x1b[1mbold\\x1b[0m'); raise SystemExit(4)"],
                      log_path=tmp_path / "log", echo=False, check=False)
    assert (done.returncode, done.tail) == (4, ["bold"])   # colour codes stripped
