"""Prism benchmark files in the layout of the published `internlm/CapRL-Evaluation-Files`:
`json_file/lmm_eval_<bench>.json` (a JSON array; JSON Lines when the name ends in .jsonl) and the
images under `bench_image_folder/...`, paths relative to the dataset root (`image_root`).

One row is one question:
    image    the image path (a string, a one-element list, or a Qwen-style message list whose
             content holds {"type": "image", "image": path}); relative to image_root
    prompt   the question as the captioner-free VQA prompt: either Qwen chat-template text
             ("<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>QUESTION<|im_end|>...",
             optionally after a system turn) or the plain question
    answer   the gold answer (a string or number; a list, or a string holding one, for several)
    id       optional; the row number otherwise
UNVERIFIED: the published rows' exact keys were not visible in any public copy; the reader takes
the keys the reference script reads (image, prompt, answer) and says which key a row lacks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VISION = "<|vision_start|><|image_pad|><|vision_end|>"
USER, SYSTEM, END = "<|im_start|>user\n", "<|im_start|>system\n", "<|im_end|>"
REQUIRED = ("image", "prompt", "answer")


class PrismFileError(ValueError):
    pass


@dataclass(frozen=True)
class Question:
    benchmark: str
    qid: str
    image: str            # relative to image_root: the key its captions are stored under
    question: str
    system: str | None
    answer: Any           # the gold answer as the file gives it (scoring parses it)


def read_rows(path: Path) -> list:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PrismFileError(f"Prism file {path}: {exc.strerror or exc}") from None
    try:
        if str(path).endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except ValueError as exc:
        raise PrismFileError(f"Prism file {path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise PrismFileError(f"Prism file {path}: expected a JSON array of rows, got {type(rows).__name__}")
    return rows


def read_questions(benchmark: str, path: Path, image_root: Path) -> list[Question]:
    """Every row of one file as a Question; the first bad row stops with file, row and key."""
    out = []
    for number, row in enumerate(read_rows(path)):
        where = f"Prism file {path}, row {number}"
        if not isinstance(row, dict):
            raise PrismFileError(f"{where}: expected an object, got {type(row).__name__}")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise PrismFileError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                 f"(a row needs {', '.join(REQUIRED)}; it has {', '.join(sorted(row)) or 'nothing'})")
        image = image_path(row["image"], f"{where}, key 'image'")
        if not (image_root / image).is_file():
            raise PrismFileError(f"{where}, key 'image': {image} does not exist under image_root {image_root}")
        system, question = split_prompt(row["prompt"], f"{where}, key 'prompt'")
        out.append(Question(benchmark, str(row.get("id", number)), image, question, system, row["answer"]))
    return out


def image_path(value: Any, where: str) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and len(value) == 1:
        return image_path(value[0], where)
    if isinstance(value, dict):
        if value.get("type") == "image" and value.get("image"):
            return image_path(value["image"], where)
        if isinstance(value.get("content"), list):
            found = [c for c in value["content"] if isinstance(c, dict) and c.get("type") == "image"]
            if len(found) == 1:
                return image_path(found[0], where)
    raise PrismFileError(f"{where}: expected one image path, got {json.dumps(value)[:200]}")


def split_prompt(prompt: Any, where: str) -> tuple[str | None, str]:
    """(system text or None, question text) of a row's prompt."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PrismFileError(f"{where}: expected the question text, got {prompt!r}")
    if USER not in prompt:
        return None, prompt.replace("<image>", "").strip()
    system = None
    if SYSTEM in prompt:
        system = prompt.split(SYSTEM, 1)[1].split(END, 1)[0].strip() or None
    user = prompt.split(USER, 1)[1].split(END, 1)[0]
    if VISION not in user:
        raise PrismFileError(f"{where}: the user turn has no image placeholder {VISION}")
    question = user.replace(VISION, "", 1).strip()
    if not question:
        raise PrismFileError(f"{where}: the user turn holds no question after the image")
    return system, question
