"""The one way a stage runs an external tool (LLaMA-Factory, lmms-eval, torchrun, a server):
in its own process, on files written to disk, its output appended to the stage log.

Guarantees every stage gets alike: the tool and every process it starts die with the harness
(even on SIGKILL), so a re-run never races an orphan writing into the folder it is about to clear;
any exception while reading its output (a failed line check, Ctrl-C) ends the tool's whole
process tree (stagekit/group.py); the log is appended,
never truncated, so a resumed stage keeps the story of its earlier attempts; secrets are masked
by one rule, in the command line shown and in every output line."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# A variable is secret when one of these words is a whole `_`-separated part of its name:
# OPENAI_API_KEY, HF_TOKEN, AWS_BEARER_TOKEN_BEDROCK, DB_PASSWORD; not TOKENIZERS_PARALLELISM.
_SECRET_WORD = re.compile(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD)(_|$)")
_MIN_SECRET_LEN = 6          # shorter values ("1", "true") would mask ordinary words
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def is_secret(name: str) -> bool:
    return bool(_SECRET_WORD.search(name.upper()))


def redact(name: str, value: str) -> str:
    return "***" if is_secret(name) else str(value)


def secret_values(env: Mapping[str, str]) -> list[str]:
    return sorted({v for k, v in env.items() if is_secret(k) and len(v) >= _MIN_SECRET_LEN}, key=len, reverse=True)


def mask(line: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        line = line.replace(s, "***")
    return line


def shell_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command as a user would type it, env first; secrets are never printed."""
    env_part = " ".join(f"{k}={shlex.quote(redact(k, v))}" for k, v in (env or {}).items())
    return (env_part + " " if env_part else "") + shlex.join(argv)


class CommandFailed(RuntimeError):
    pass


@dataclass
class Finished:
    returncode: int
    tail: list[str]          # the last output lines, secrets masked, progress bars at their last state


class Stopped(RuntimeError):
    """The tool was ended because its `watch` said why (e.g. the judge it depends on went away)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def run_logged(argv: Sequence[str], *, env: Mapping[str, str] | None = None, log_path: Path,
               cwd: Path | None = None, echo: bool = True, tail_lines: int = 40,
               on_line: Callable[[str], None] | None = None, check: bool = True,
               watch: Callable[[], str | None] | None = None, watch_every_s: float = 5.0) -> Finished:
    """Run argv; append its stdout+stderr to log_path; with check, raise CommandFailed (with the
    log tail) on a non-zero exit. on_line sees every output line; if it raises, the tool is
    stopped and the exception propagates (how a wrong trainable-parameter count stops training).
    watch, called every watch_every_s while the tool runs, returns None to let it go on or a reason
    to end it: the tool's process tree is stopped and Stopped(reason) raised. It serves what the
    output cannot tell (a tool that retries a dead server quietly for minutes)."""
    tail: list[str] = []
    with open(log_path, "a") as log:
        proc, secrets = _start(argv, env, cwd, log)
        stopped = _Watcher(proc, watch, watch_every_s) if watch is not None else None
        try:
            _pump(proc, log, secrets, echo, tail, tail_lines, on_line)
        except BaseException:
            _stop(proc)
            raise
        finally:
            if stopped is not None:
                stopped.end()
        code = proc.wait()
        if stopped is not None and stopped.reason is not None:
            log.write(f"\nstopped by the harness: {stopped.reason}\n")
            raise Stopped(stopped.reason)
    if check and code != 0:
        raise CommandFailed(f"{argv[0]} exited with {code} (log: {log_path}); last lines:\n" + "\n".join(tail))
    return Finished(code, tail)


class _Watcher:
    """A thread beside run_logged's output pump: calls `watch` every `every_s` until the tool exits
    or watch gives a reason, then stops the tool (the pump then sees its output end)."""

    def __init__(self, proc: subprocess.Popen, watch: Callable[[], str | None], every_s: float):
        self.reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(proc, watch, every_s), daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen, watch: Callable[[], str | None], every_s: float) -> None:
        while not self._done.wait(every_s) and proc.poll() is None:
            reason = watch()
            if reason is not None:
                self.reason = reason
                _stop(proc)
                return

    def end(self) -> None:
        self._done.set()
        self._thread.join()


class Serving:
    """A tool that keeps running beside the stage (an inference server): its output is appended
    to the log by a thread, with the same masking; `alive()` and `tail` tell a caller waiting
    for it to come up whether it died instead; `stop()` ends it (and leaving the `with`)."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None, log_path: Path,
                 cwd: Path | None = None, echo: bool = False, tail_lines: int = 40):
        self.argv, self.tail = list(argv), []
        self._log = open(log_path, "a")
        self.proc, secrets = _start(argv, env, cwd, self._log)
        self._thread = threading.Thread(target=_pump, daemon=True,
                                        args=(self.proc, self._log, secrets, echo, self.tail, tail_lines, None))
        self._thread.start()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            _stop(self.proc)
        self._thread.join(timeout=10)
        self._log.close()

    def __enter__(self) -> Serving:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _start(argv: Sequence[str], env: Mapping[str, str] | None, cwd: Path | None, log) -> tuple[subprocess.Popen, list[str]]:
    full_env = {**os.environ, **(env or {})}
    log.write(f"\n$ {shell_line(argv, env)}\n")
    log.flush()
    # Through stagekit.group: the tool's whole process tree ends with the stage, and with the harness.
    proc = subprocess.Popen([sys.executable, "-m", "stagekit.group", *argv], env=full_env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            bufsize=1, start_new_session=True, preexec_fn=_die_with_parent)
    return proc, secret_values(full_env)


def _pump(proc: subprocess.Popen, log, secrets: Sequence[str], echo: bool, tail: list[str], tail_lines: int,
          on_line: Callable[[str], None] | None) -> None:
    """Every output line: masked, appended to the log, kept in `tail` (in place), shown to on_line."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = mask(_ANSI.sub("", raw), secrets)
        log.write(line)
        log.flush()
        if echo:
            sys.stdout.write(line)
        tail.append(line.rstrip("\n").split("\r")[-1])
        del tail[:-tail_lines]
        if on_line is not None:
            on_line(line)


def _die_with_parent() -> None:
    """If the harness is killed (even SIGKILL), the tool's supervisor gets SIGTERM and ends the
    tool's process group (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the tool's supervisor, which ends the tool's whole process group (SIGTERM, then
    SIGKILL after 20 s: stagekit/group.py); SIGKILL to the supervisor if it has not exited in 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
