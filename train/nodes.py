"""Which node of a multi-node training stage was lost.

When one node dies (killed, out of memory, its machine gone), the other nodes' ranks fail a
collective with a socket error that names an address, not a node, or they wait until the
collective time-out (launcher.timeout_s). Each node therefore touches a heartbeat file in the
stage folder (a filesystem every node shares, as the store must be) while its torchrun runs, and
writes "exited" when its torchrun ends. After a failed launch a node waits until every other
node either exited or has been silent for LOST_AFTER heartbeats, and names the silent ones.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from stagekit import write_text_atomic

LOST_AFTER = 3   # heartbeats missed before a node counts as lost


def heartbeat_file(folder: Path, rank: int) -> Path:
    return folder / f"node{rank}.heartbeat"


class Heartbeat:
    """Touch this node's heartbeat file every `interval` seconds while the block runs. Each beat
    replaces the file whole: the other nodes read it at any moment, and a half-written "exited"
    must not read as an empty, still-beating file."""

    def __init__(self, folder: Path, rank: int, interval: float):
        self.path, self.interval = heartbeat_file(folder, rank), float(interval)
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-node{rank}")

    def __enter__(self) -> "Heartbeat":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, f"alive {self.started}\n")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            write_text_atomic(self.path, f"alive {time.time()}\n")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        write_text_atomic(self.path, f"exited {time.time()}\n")


def _state(path: Path, since: float, now: float, silent_after: float) -> str:
    """'exited', 'alive', 'lost' (silent too long) or 'absent' (no beat since this attempt began)."""
    try:
        text, mtime = path.read_text(), path.stat().st_mtime
    except FileNotFoundError:
        return "absent"
    if mtime < since:
        return "absent"
    if text.startswith("exited"):
        return "exited"
    return "lost" if now - mtime > silent_after else "alive"


def lost_nodes(folder: Path, me: int, nnodes: int, *, since: float, interval: float,
               sleep=time.sleep, clock=time.time) -> dict[int, str]:
    """The other nodes that died during this attempt (begun at `since`): rank -> why. Waits (at
    most LOST_AFTER + 1 heartbeats) while a node is still beating, since it may be failing too."""
    silent_after = LOST_AFTER * interval
    deadline = clock() + silent_after + interval
    while True:
        now = clock()
        states = {r: _state(heartbeat_file(folder, r), since, now, silent_after) for r in range(nnodes) if r != me}
        if "alive" not in states.values() or now >= deadline:
            break
        sleep(min(interval, 1.0))
    why = {"lost": f"no heartbeat for over {silent_after:g} s", "absent": "never joined this attempt"}
    return {r: why[s] for r, s in states.items() if s in why}


def lost_message(lost: dict[int, str], nnodes: int, timeout_s: int) -> str:
    nodes = ", ".join(f"node {r} ({why})" for r, why in sorted(lost.items()))
    return (f"lost {nodes} of the {nnodes}-node training job; the ranks here stopped at the next collective "
            f"(or after launcher.timeout_s={timeout_s} s). Nothing of this stage is marked done; re-run every "
            f"node with the same command to resume from the last complete checkpoint")
