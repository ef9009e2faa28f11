"""DeepSpeed setups (configs/hydra/deepspeed/) rendered to the JSON file LLaMA-Factory reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping


def write_deepspeed_json(ds: Mapping, folder: Path) -> Path | None:
    if ds.get("config") is None:
        return None
    path = folder / f"deepspeed_{ds['name']}.json"
    path.write_text(json.dumps(ds["config"], indent=2) + "\n")
    return path
