"""Hub ids through huggingface_hub: downloaded when online, served from its cache when offline.

Errors become one line naming the id; the commit a snapshot came from is read from its cache path,
so a branch name such as "main" is never what gets recorded."""

from __future__ import annotations

import os
import re
from pathlib import Path

from init_vlm.errors import InitVLMError

_COMMIT = re.compile(r"[0-9a-f]{40}")


def snapshot(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    """The snapshot folder of `repo_id` at `revision` holding (at least) the files matching `patterns`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    is_offline = hub_offline()
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                      local_files_only=is_offline))
    except LocalEntryNotFoundError:
        # Raised when offline (or unreachable) and the id is not in the local hub cache.
        if is_offline:
            raise InitVLMError(f"source {repo_id}: not a local folder and not in the hub cache, and "
                               f"HF_HUB_OFFLINE=1 forbids downloading; download it first or unset HF_HUB_OFFLINE") \
                from None
        raise InitVLMError(f"source {repo_id}: not a local folder, not in the hub cache, and the hub is "
                           f"unreachable (set HF_HUB_OFFLINE=1 to work from the cache only)") from None
    except Exception as err:  # repo not found, gated, bad revision: the hub's own message says which
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise InitVLMError(f"source {repo_id}: hub download failed: {first}") from None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it only once, at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in ("1", "true", "yes", "on") or (not flag and bool(constants.HF_HUB_OFFLINE))


def hub_revision(folder: Path) -> str | None:
    """The commit of a hub-cache snapshot (…/snapshots/<sha>/), None for a plain folder."""
    parts = folder.parts
    if len(parts) >= 2 and parts[-2] == "snapshots" and _COMMIT.fullmatch(parts[-1]):
        return parts[-1]
    return None
