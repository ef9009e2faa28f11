"""Run an external tool as a subprocess, its output streamed to the stage log and the terminal.

Tools (LLaMA-Factory, lmms-eval, torchrun) always run in their own process on files written to
disk, never inside Hydra (pain points 16-17)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

_SECRET = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$")   # OPENAI_API_KEY, HF_TOKEN; not TOKENIZERS_...


def shell_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command as a user would type it, env first; secrets are never printed."""
    env_part = " ".join(f"{k}={shlex.quote(redact(k, v))}" for k, v in (env or {}).items())
    return (env_part + " " if env_part else "") + shlex.join(argv)


def redact(key: str, value: str) -> str:
    return "***" if _SECRET.search(key.upper()) else str(value)


class CommandFailed(RuntimeError):
    pass


def run_logged(argv: Sequence[str], *, env: Mapping[str, str] | None = None, log_path: Path,
               cwd: Path | None = None, echo: bool = True, tail_lines: int = 40,
               on_line: Callable[[str], None] | None = None) -> None:
    """Run argv; append its stdout+stderr to log_path; raise CommandFailed with the log tail.

    on_line sees every output line; if it raises, the whole process group is killed and the
    exception propagates (used to stop training whose trainable-parameter count is wrong)."""
    full_env = {**os.environ, **(env or {})}
    tail: list[str] = []
    with open(log_path, "a") as log:
        log.write(f"\n$ {shell_line(argv, env)}\n")
        log.flush()
        proc = subprocess.Popen(list(argv), env=full_env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                                preexec_fn=_die_with_parent)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                if echo:
                    sys.stdout.write(line)
                tail = (tail + [line.rstrip("\n")])[-tail_lines:]
                if on_line is not None:
                    on_line(line)
        except BaseException:
            _stop(proc)
            raise
        code = proc.wait()
    if code != 0:
        raise CommandFailed(f"{argv[0]} exited with {code} (log: {log_path}); last lines:\n" + "\n".join(tail))


def _die_with_parent() -> None:
    """If the harness is killed (even SIGKILL), the tool it launched dies too, so a re-run
    never races an orphaned trainer writing into the same folder (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop(proc: subprocess.Popen) -> None:
    """torchrun forwards SIGTERM to its workers; escalate to SIGKILL if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
