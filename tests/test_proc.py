"""Subprocess handling: the output goes to the stage log, a failure carries the log tail, and a
line check that raises stops the tool at once (how a wrong trainable-parameter count stops
training before it starts)."""

from __future__ import annotations

import sys
import time

import pytest

from stagekit.proc import CommandFailed, Stopped, run_logged, shell_line
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


# A launcher built as LLaMA-Factory's is (it runs torchrun with subprocess.run): the worker is the
# launcher's child, the harness's grandchild. The worker writes its pid, then a tick every 50 ms
# into a file in the "stage folder", for as long as it lives.
LAUNCHER = """
import subprocess, sys
worker = '''
import os, sys, time
open(sys.argv[1] + '/worker.pid', 'w').write(str(os.getpid()))
while True:
    with open(sys.argv[1] + '/ticks', 'a') as f:
        f.write('.')
    time.sleep(0.05)
'''
print('[INFO] llamafactory.model.loader:144 >> trainable params: 22,736 || all params: 181,728 || trainable%: 12.5', flush=True)
subprocess.run([sys.executable, '-c', worker, sys.argv[1]])
"""


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _assert_worker_stopped(folder) -> None:
    pid = int((folder / "worker.pid").read_text())
    assert _wait_for(lambda: _gone(pid), 30), f"the launcher's worker {pid} outlived its stage"
    ticks = (folder / "ticks").stat().st_size
    time.sleep(0.3)
    assert (folder / "ticks").stat().st_size == ticks   # nothing writes into the stage folder any more


def test_a_failed_line_check_ends_the_launchers_workers_too(tmp_path):
    def check(line):
        if parse_lf_count(line) is not None:
            assert _wait_for(lambda: (tmp_path / "worker.pid").exists(), 30)
            raise TrainableMismatch("should train 100")

    with pytest.raises(TrainableMismatch):
        run_logged([sys.executable, "-c", LAUNCHER, str(tmp_path)], log_path=tmp_path / "log", echo=False,
                   on_line=check)
    _assert_worker_stopped(tmp_path)


def test_a_watch_that_gives_a_reason_ends_the_launchers_workers(tmp_path):
    """What the tool's output cannot tell (a judge gone while lmms-eval retries it quietly): the
    watch's reason stops the whole tree, is raised and is written in the log."""
    calls = []

    def watch():
        calls.append(time.time())
        return "the server went away" if (tmp_path / "worker.pid").exists() else None

    t0 = time.time()
    with pytest.raises(Stopped, match="the server went away"):
        run_logged([sys.executable, "-c", LAUNCHER, str(tmp_path)], log_path=tmp_path / "log", echo=False,
                   watch=watch, watch_every_s=0.1)
    assert time.time() - t0 < 30
    _assert_worker_stopped(tmp_path)
    assert (tmp_path / "log").read_text().endswith("\nstopped by the harness: the server went away\n")
    n = len(calls)
    time.sleep(0.3)
    assert len(calls) == n   # the watch ends with the tool


def test_a_watch_with_nothing_to_say_changes_nothing(tmp_path):
    done = run_logged([sys.executable, "-c", "import time; time.sleep(0.5); print('done')"], log_path=tmp_path / "log",
                      echo=False, watch=lambda: None, watch_every_s=0.1)
    assert (done.returncode, done.tail) == (0, ["done"])


def test_sigkill_of_the_harness_alone_ends_the_launchers_workers(tmp_path):
    """Only the harness's own pid is killed (not its process group, as a node failure or an OOM
    kill would): the tool's supervisor gets the parent-death signal and ends the tool's group."""
    import os
    import signal
    import subprocess

    harness = ("import sys; from stagekit.proc import run_logged; from pathlib import Path\n"
               f"run_logged([sys.executable, '-c', {LAUNCHER!r}, {str(tmp_path)!r}], "
               f"log_path=Path({str(tmp_path / 'log')!r}), echo=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", harness], start_new_session=True)
    try:
        assert _wait_for(lambda: (tmp_path / "worker.pid").exists(), 60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _assert_worker_stopped(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_sigkilled_supervisor_still_takes_the_tool_with_it(tmp_path):
    """Killing the Popen the harness holds (the supervisor) with SIGKILL, as a test or a caller may,
    still ends the tool itself: it is what holds a server's port."""
    import os
    import signal

    from stagekit.proc import Serving

    code = "import os, time; open(os.environ['PIDFILE'], 'w').write(str(os.getpid())); time.sleep(120)"
    server = Serving([sys.executable, "-c", code], env={"PIDFILE": str(tmp_path / "pid")}, log_path=tmp_path / "log")
    try:
        assert _wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text(), 30)
        os.kill(server.proc.pid, signal.SIGKILL)
        assert _wait_for(lambda: _gone(int((tmp_path / "pid").read_text())), 10)
    finally:
        server.stop()
