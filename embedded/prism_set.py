"""The embedded world's Prism set: the held-out benchmark images as Prism files in the layout of
`internlm/CapRL-Evaluation-Files` (rows of image / prompt / answer, images relative to the
world's root), one file per metric, so the decoupled caption -> answer -> score path runs offline.

    prism/lmm_eval_synth_shapes.json    the benchmark's questions (exact match)
    prism/lmm_eval_synth_choice.json    the same as lettered options (option match)
    prism/lmm_eval_synth_counts.json    the shape's corners, a number (relaxed accuracy, numeric)
"""

from __future__ import annotations

import json
from pathlib import Path

BOXED = " Put the final answer in \\boxed{}."
LETTERS = "ABCDEFGHIJ"
# A numeric question for the relaxed metric, asked of the benchmark's shape questions: the scene
# has one shape, so "how many shapes" would always be 1.
CORNERS = {"circle": "0", "square": "4", "triangle": "3"}


def chat_prompt(question: str) -> str:
    """The question as the reference files store it: Qwen chat-template text with the image slot."""
    return (f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n"
            "<|im_start|>assistant\n")


def build_prism_set(world_dir: Path, vqa_file: Path, n_images: int = 8) -> dict[str, Path]:
    rows = [json.loads(line) for line in Path(vqa_file).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if int(r["id"].split("_")[1]) <= n_images]
    shapes, choice, counts = [], [], []
    for r in rows:
        image = str(Path(r["image"]).relative_to(world_dir))
        question = r["question"].split("? ")[0] + "?"
        if r["question"].startswith("What shape"):
            counts.append({"id": f"{r['id']}_corners", "image": image, "answer": CORNERS[r["answer"]],
                           "prompt": chat_prompt("How many corners does the shape have?" + BOXED)})
        shapes.append({"id": r["id"], "image": image, "prompt": chat_prompt(question + BOXED), "answer": r["answer"]})
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(r["choices"]))
        letter = LETTERS[r["choices"].index(r["answer"])]
        choice.append({"id": r["id"], "image": image, "answer": letter,
                       "prompt": chat_prompt(f"{question}\n{options}\nAnswer with the option's letter." + BOXED)})
    out = Path(world_dir) / "prism"
    out.mkdir(parents=True, exist_ok=True)
    files = {"shapes": out / "lmm_eval_synth_shapes.json", "choice": out / "lmm_eval_synth_choice.json",
             "counts": out / "lmm_eval_synth_counts.json"}
    for key, data in (("shapes", shapes), ("choice", choice), ("counts", counts)):
        files[key].write_text(json.dumps(data, indent=1) + "\n")
    return files
