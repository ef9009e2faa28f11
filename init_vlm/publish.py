"""The output folder appears complete or not at all.

Everything is written into a hidden sibling, `.<name>.init_vlm-partial-<host>-<pid>` (same filesystem,
so the final rename is atomic), and renamed into place only after verification. A build killed with
SIGKILL cannot clean up after itself, so the next build removes the partial folders of the same
output whose process is gone; a live one may be a concurrent build and is left alone."""

from __future__ import annotations

import glob
import os
import shutil
import socket
from pathlib import Path

from init_vlm.errors import InitVLMError

_PARTIAL = "init_vlm-partial-"


def prepare_out_dir(out_dir: Path, log=print) -> None:
    """`out_dir` must be new or empty; partial folders that dead builds left for it are removed."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InitVLMError(f"output {out_dir}: exists and is not an empty folder; choose a new path")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_partials(out_dir):
        log(f"removed {stale}, left by a build that no longer runs")


def partial_dir(out_dir: Path) -> Path:
    """A fresh hidden work folder for `out_dir`."""
    tmp = out_dir.parent / f".{out_dir.name}.{_PARTIAL}{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Remove partial folders of `out_dir` left by processes of this host that no longer run."""
    prefix = f".{out_dir.name}.{_PARTIAL}"
    removed = []
    for folder in out_dir.parent.glob(glob.escape(prefix) + "*"):
        # A pid means something on its own host only. Earlier versions wrote no host part (this host).
        host, _, pid = folder.name[len(prefix):].rpartition("-")
        if host in ("", socket.gethostname()) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:  # signal 0 delivers nothing, it only asks whether the process exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
