"""Run a tool as the leader of a process group of its own, and end the whole group when the tool
ends, when the harness stops it, or when the harness dies.

    python -m stagekit.group TOOL ARGS...        (stagekit/proc.py starts every tool this way)

Why: launchers start the processes that do the work as their own children (LLaMA-Factory's
launcher runs torchrun with subprocess.run, torchrun starts one worker per GPU, `accelerate
launch` starts lmms-eval's ranks). Signalling the launcher alone leaves those workers running:
after a failed line check, or when the harness is SIGKILLed, a worker would go on writing
checkpoints into a stage folder that the next run resumes from or clears. A process group holds
the whole tree; this small process, the harness's direct child, owns it:
- the tool and everything it starts run in a new session (its own process group);
- this process runs in a session of its own too (a kill of the harness's process group does not
  reach it before it has done its work), gets SIGTERM when the harness dies, even by SIGKILL
  (Linux's parent-death signal, set by the harness when it starts this process), and on SIGTERM or
  SIGINT sends SIGTERM to the tool's group, then SIGKILL to whatever is left after GRACE_S;
- when the tool exits by itself, what it left running in its group is killed too;
- its exit code is the tool's (128 + n when a signal n ended it, as a shell reports).
Output is inherited: the tool writes straight into the harness's pipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

# SIGTERM first, so torchrun and LLaMA-Factory can stop their workers cleanly; then SIGKILL. Shorter
# than the 30 s the harness waits for this process before killing it (stagekit/proc.py), so the
# group is always gone before this process could be.
GRACE_S = 20.0


def end_group(pgid: int, grace_s: float = GRACE_S, reap=None) -> None:
    """SIGTERM to every process of the group, SIGKILL to those still there after grace_s. `reap`
    collects our own child once it has exited (else its zombie would keep the group alive)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_supervisor() -> None:
    """Should this process itself be SIGKILLed (it then cannot end the group: someone killed the
    Popen the harness holds), the tool gets SIGKILL too (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m stagekit.group TOOL [ARGS...]", file=sys.stderr)
        return 2
    tool = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_supervisor)
    stop = []   # the signal that asked us to stop; the work is done here, not in the handler,
    # where the tool could not be reaped (Popen's wait holds the lock that poll needs)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, _frame: stop.append(n))
    while (code := tool.poll()) is None and not stop:
        time.sleep(0.05)
    if code is None:
        end_group(tool.pid, reap=tool.poll)
        code = tool.wait()
    # The tool is gone; processes it started may not be (its group outlives it while they run).
    end_group(tool.pid, grace_s=5.0)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
