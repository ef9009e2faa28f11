"""The image set to re-caption: the images a data_prep stage kept (its broken, missing and
too-small images were already rejected and listed there), or an image list file.

Keys are paths relative to the images' root, the same paths the new caption source writes, so a
recaptioned source names its images exactly as the source they came from (Table 2: same images,
only the captioner differs)."""

from __future__ import annotations

import json
import os
from pathlib import Path


class ImageSetError(ValueError):
    pass


def prepared_images(data_dir: Path, image_root: str) -> list[str]:
    """Every distinct image of a data_prep output, in row order, relative to image_root."""
    info_path = Path(data_dir) / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise ImageSetError(f"{info_path}: not a data_prep output ({exc})") from None
    root = os.path.abspath(image_root)
    seen: dict[str, None] = {}
    for entry in info.values():
        for shard in sorted(Path(entry["file_name"]).glob("shard-*.jsonl")):
            # lines split at "\n" only: a caption may hold U+2028 and the like raw (orjson writes
            # UTF-8), which str.splitlines() would cut a row at
            with open(shard, encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    for image in json.loads(line).get("images") or []:
                        seen.setdefault(_relative(image, root, f"{shard}, line {number}"), None)
    return list(seen)


def listed_images(list_file: str, image_root: str) -> list[str]:
    """One image path a line (relative to image_root, or absolute inside it); blank lines and
    lines starting with # are skipped; a repeated path is asked for once."""
    path = Path(list_file)
    if not path.is_file():
        raise ImageSetError(f"image list {path} does not exist")
    root = os.path.abspath(image_root)
    seen: dict[str, None] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            seen.setdefault(_relative(line, root, f"{path}, line {number}"), None)
    return list(seen)


def _relative(image: str, root: str, where: str) -> str:
    full = os.path.normpath(os.path.join(root, image))
    if not full.startswith(root + os.sep):
        raise ImageSetError(f"{where}: image {image!r} is outside image_root {root}")
    return full[len(root) + 1:]
