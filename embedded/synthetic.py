"""The embedded world's data: procedurally drawn scenes with caption sources in the public formats.

Each scene is one coloured shape (circle / square / triangle) of two sizes on a plain
background, in one cell of a 3x3 grid, so every caption and every benchmark answer can be
checked against the scene that produced it. Images are 84 x 84 px: one merged visual token
(28 px, 14-px patches with the 2x2 merge) per grid cell, 9 tokens an image, which keeps the whole
pipeline on CPU.

One shape, and questions only about what the whole image holds (background, the shape's colour,
kind and size): answers every visual token can carry (the pretrained ViT puts the scene's content
into each), the only kind a 2-layer, 64-wide LLM has learned to read here. Questions that need one
token among nine were answered with a constant by every model: which shape is red among several
(finding a token by its content), and where a shape is (the LLM's rotary positions barely tell
neighbouring cells apart). Measured (README, "The embedded ablation shows the paper's effect"):
after dense captions the model reads the background; the shape's colour, kind and size still get
a constant answer from every model.

The world is built so that what the caption source under test says is what decides the
benchmark (the paper's effect, with statistical force):
- the dense captions (CapRL-style) state every attribute the benchmark asks about (the
  background, the shape's colour, kind and size) and more (its place, the count);
- the sparse captions (ShareGPT4V-web style) name at most one shape, never a colour or place;
- the SFT rows teach the question forms on only `n_sft` of the training images, so a model that
  skipped further pretraining (vanilla) has seen few images bound to those words;
- the LLaVA-style alignment one-liners name one shape and its colour, as BLIP captions do.

    build_synthetic_data(out_dir, n_train=48, n_bench=16, seed=0) writes

    out_dir/images/train/0001.png ...       training images (all caption sources share them)
    out_dir/images/bench/0001.png ...       held-out images for the benchmark
    out_dir/sources/caprl_dense.jsonl       CapRL-2M style: {"image", "caption"} (dense, accurate)
    out_dir/sources/sharegpt4v_sparse.json  ShareGPT4V-PT style conversations (short, vague)
    out_dir/sources/llava_558k.json         LLaVA-558K style (BLIP-like one-liners), alignment stage
    out_dir/sources/open_llava_next.json    Open-LLaVA-NeXT-mix style multi-turn Q/A + text-only rows
    out_dir/bench/vqa.jsonl                 {"id", "image" (absolute), "question", "answer", "choices"}
    out_dir/texts.txt                       every caption, prompt, question and answer (tokenizer corpus)
    out_dir/language.jsonl                  text-only chats about imagined scenes: what the tiny LLM
                                            source is pretrained on (embedded/lm_pretrain.py)

Image paths in sources/ are relative to out_dir/images, as in the public releases. Output is a
pure function of the seed (and of out_dir for the absolute paths in bench/vqa.jsonl).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

SIDE = 84   # 3 x 28 px: one merged visual token per grid cell
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "gray": (128, 128, 128)}
COLUMNS = ("left", "center", "right")
ROWS = ("top", "middle", "bottom")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
SIZES = ("small", "large")

# Prompts as they appear in the public releases (several variants each).
SHAREGPT4V_PROMPTS = (
    "What do you see happening in this image?",
    "Analyze the image in a comprehensive and detailed manner.",
    "Describe the image.",
)
LLAVA_PROMPTS = (
    "Give a brief description of the image.",
    "Render a clear and concise summary of the photo.",
    "Provide a brief description of the given image.",
)

# The benchmark's question forms; SFT rows use the same forms on training images.
ONE_WORD = "Answer with one word."


def build_synthetic_data(out_dir: Path, *, n_train: int = 48, n_bench: int = 16, seed: int = 0,
                         n_sft: int | None = None, sft_rounds: int = 1, bench_questions: int = 2,
                         n_language: int = 0) -> dict:
    """Write the world's images, caption sources and VQA benchmark; return their paths.

    n_sft: training images the SFT rows ask about (default: all), in `sft_rounds` passes; bench_questions: questions per
    benchmark image; n_language: imagined scenes in the LLM source's pretraining chats."""
    out_dir = Path(out_dir).resolve()
    rng = random.Random(seed)
    train = [_draw_scene(rng) for _ in range(n_train)]
    bench = [_draw_scene(rng) for _ in range(n_bench)]

    train_rel = _save_images(out_dir / "images", "train", train)
    bench_rel = _save_images(out_dir / "images", "bench", bench)

    dense = [{"image": rel, "caption": dense_caption(s, rng)} for rel, s in zip(train_rel, train)]
    sparse = [_conversation(f"{i:09d}", rel, f"<image>\n{rng.choice(SHAREGPT4V_PROMPTS)}", sparse_caption(s, rng))
              for i, (rel, s) in enumerate(zip(train_rel, train))]
    llava = [_conversation(f"{i:09d}", rel, _llava_prompt(rng), blip_caption(s, rng))
             for i, (rel, s) in enumerate(zip(train_rel, train))]
    n_sft = n_train if n_sft is None else min(n_sft, n_train)
    sft = _sft_rows(train_rel[:n_sft], train[:n_sft], rng, sft_rounds)
    vqa = []
    for i, (rel, s) in enumerate(zip(bench_rel, bench)):
        for k, (q, a, choices) in enumerate(_bench_questions(s, bench_questions, rng)):
            vqa.append({"id": f"bench_{i + 1:04d}_{k}", "image": str(out_dir / "images" / rel),
                        "question": q, "answer": a, "choices": list(choices)})

    paths = {
        "images": out_dir / "images",
        "caprl_dense": out_dir / "sources" / "caprl_dense.jsonl",
        "sharegpt4v_sparse": out_dir / "sources" / "sharegpt4v_sparse.json",
        "llava_558k": out_dir / "sources" / "llava_558k.json",
        "open_llava_next": out_dir / "sources" / "open_llava_next.json",
        "bench_vqa": out_dir / "bench" / "vqa.jsonl",
        "texts": out_dir / "texts.txt",
        "language": out_dir / "language.jsonl",
    }
    _write_jsonl(paths["caprl_dense"], dense)
    _write_json(paths["sharegpt4v_sparse"], sparse)
    _write_json(paths["llava_558k"], llava)
    _write_json(paths["open_llava_next"], sft)
    _write_jsonl(paths["bench_vqa"], vqa)
    language = language_chats(n_language, rng)
    _write_jsonl(paths["language"], language)
    paths["texts"].write_text("\n".join(_corpus(dense, sparse, llava, sft, vqa, language)) + "\n")
    return paths


# ---------------------------------------------------------------- scenes

def _draw_scene(rng: random.Random, render: bool = True) -> dict:
    width = height = SIDE
    n = 1   # one shape a scene: the module's docstring says why
    shapes = rng.sample(SHAPES, n)
    colours = rng.sample(sorted(COLOURS), n)
    columns = sorted(rng.sample(range(3), n))
    objects = [{"shape": sh, "colour": c, "column": COLUMNS[col], "row": rng.choice(ROWS),
                "size": rng.choice(SIZES)}
               for sh, c, col in zip(shapes, colours, columns)]
    scene = {"width": width, "height": height, "background": rng.choice(sorted(BACKGROUNDS)), "objects": objects}
    if render:
        scene["image"] = _render(scene)
    return scene


def _render(scene: dict) -> Image.Image:
    w, h = scene["width"], scene["height"]
    img = Image.new("RGB", (w, h), BACKGROUNDS[scene["background"]])
    draw = ImageDraw.Draw(img)
    for obj in scene["objects"]:
        cx = (COLUMNS.index(obj["column"]) + 0.5) * w / 3
        cy = (ROWS.index(obj["row"]) + 0.5) * h / 3
        r = min(w, h) * (0.09 if obj["size"] == "small" else 0.15)
        box = (round(cx - r), round(cy - r), round(cx + r), round(cy + r))
        fill = COLOURS[obj["colour"]]
        if obj["shape"] == "circle":
            draw.ellipse(box, fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), (round(cx), box[1])], fill=fill)
    return img


def _save_images(root: Path, split: str, scenes: list[dict]) -> list[str]:
    (root / split).mkdir(parents=True, exist_ok=True)
    rels = []
    for i, s in enumerate(scenes):
        rel = f"{split}/{i + 1:04d}.png"
        s["image"].save(root / rel, format="PNG")
        rels.append(rel)
    return rels


# ---------------------------------------------------------------- captions

_COLUMN_PHRASE = {"left": "on the left", "center": "in the center", "right": "on the right"}


def _where(obj: dict) -> str:
    column = _COLUMN_PHRASE[obj["column"]]
    row = {"top": "near the top", "middle": "halfway down", "bottom": "near the bottom"}[obj["row"]]
    return f"{column}, {row}"


def dense_caption(scene: dict, rng: random.Random) -> str:
    """Every attribute the benchmark asks about: the count, the background, and each shape's size,
    colour, column and row, then each fact again in the direction a question asks it."""
    objs = scene["objects"]
    n = len(objs)
    count = f"{NUMBER_WORDS[n]} shape" + ("s" if n > 1 else "")
    opening = rng.choice((
        f"The image shows {count} on a plain {scene['background']} background.",
        f"This is a simple drawing of {count} against a {scene['background']} background.",
        f"On a {scene['background']} background there {'are' if n > 1 else 'is'} {count}.",
    ))
    parts = [opening]
    for obj in objs:
        parts.append(f"{_where(obj).capitalize()} there is a {obj['size']} {obj['colour']} {obj['shape']}.")
    for obj in objs:
        # what a question about this shape asks, stated as a fact: colour from shape, shape from
        # colour, place and size from both
        parts.append(f"The {obj['shape']} is {obj['colour']}; the {obj['colour']} object is a {obj['shape']}; "
                     f"the {obj['colour']} {obj['shape']} is {obj['size']}, {_COLUMN_PHRASE[obj['column']]}, "
                     f"near the {obj['row']}.")
    return " ".join(parts)


def sparse_caption(scene: dict, rng: random.Random) -> str:
    """Short and vague: what an uninformative web-style caption would say."""
    shape = scene["objects"][0]["shape"]
    return rng.choice((
        "A simple drawing of some shapes.",
        "Geometric shapes on a plain background.",
        f"An abstract picture with a {shape}.",
        "A minimalist graphic.",
    ))


def blip_caption(scene: dict, rng: random.Random) -> str:
    """BLIP-style one-liner: one object, lower case, no full stop."""
    obj = rng.choice(scene["objects"])
    return rng.choice((f"a {obj['colour']} {obj['shape']}", f"a {obj['shape']} on a {scene['background']} background"))


def _llava_prompt(rng: random.Random) -> str:
    prompt = rng.choice(LLAVA_PROMPTS)
    return f"{prompt}\n<image>" if rng.random() < 0.5 else f"<image>\n{prompt}"


def _conversation(row_id: str, image: str, human: str, gpt: str) -> dict:
    return {"id": row_id, "image": image,
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}


# ---------------------------------------------------------------- questions

def questions(scene: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """(question, answer, choices) triples that the scene answers; the benchmark and SFT share them.
    No count (always one) and no place (column, row): the module's docstring says why."""
    (o,) = scene["objects"]
    return [
        (f"What colour is the background? {ONE_WORD}", scene["background"], tuple(sorted(BACKGROUNDS))),
        (f"What colour is the shape? {ONE_WORD}", o["colour"], tuple(sorted(COLOURS))),
        (f"What shape is it? {ONE_WORD}", o["shape"], SHAPES),
        (f"Is the shape small or large? {ONE_WORD}", o["size"], SIZES),
    ]


def _bench_questions(scene: dict, k: int, rng: random.Random) -> list[tuple[str, str, tuple[str, ...]]]:
    qs = questions(scene)
    return rng.sample(qs, min(k, len(qs)))


TEXT_ONLY_QA = (
    ("What colour do you get by mixing blue and yellow? Answer with one word.", "green"),
    ("What colour do you get by mixing red and yellow? Answer with one word.", "orange"),
    ("What colour do you get by mixing red and blue? Answer with one word.", "purple"),
    ("How many sides does a triangle have? Answer with one number.", "3"),
    ("How many corners does a square have? Answer with one number.", "4"),
    ("Which shape has no corners? Answer with one word.", "circle"),
    ("Name a shape with three sides. Answer with one word.", "triangle"),
    ("What colour is the sky on a clear day? Answer with one word.", "blue"),
)


def _sft_rows(rels: list[str], scenes: list[dict], rng: random.Random, rounds: int = 1) -> list[dict]:
    """Every question form on few images: each image's questions, shuffled, three turns a row;
    `rounds` such passes, each in a new order."""
    rows = []
    for r in range(rounds):
        for i, (rel, s) in enumerate(zip(rels, scenes)):
            qs = rng.sample(questions(s), len(questions(s)))
            for part, start in enumerate(range(0, len(qs), 3)):
                conv = []
                for k, (q, a, _) in enumerate(qs[start:start + 3]):
                    conv.append({"from": "human", "value": f"<image>\n{q}" if k == 0 else q})
                    conv.append({"from": "gpt", "value": a})
                rows.append({"id": f"sft_{r}_{i + 1:06d}_{part}", "image": rel, "conversations": conv})
    # Text-only rows, as in Open-LLaVA-NeXT-mix: no "image" key at all.
    for j in range(max(1, len(scenes) // 4)):
        q, a = TEXT_ONLY_QA[j % len(TEXT_ONLY_QA)]
        rows.append({"id": f"text_{j + 1:06d}",
                     "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
    return rows


def language_chats(n: int, rng: random.Random) -> list[dict]:
    """What the tiny LLM source knows before it sees an image, as a real instruct LLM knows how
    people talk about pictures: text-only chats about imagined scenes (never drawn, so nothing
    here is about a training or benchmark image): describing one in each caption style, and
    answering questions about a scene described in the prompt."""
    chats = []
    for _ in range(n):
        scene = _draw_scene(rng, render=False)
        if rng.random() < 0.3:
            style = rng.choice((dense_caption, sparse_caption, blip_caption))
            chats.append([rng.choice(SHAREGPT4V_PROMPTS + LLAVA_PROMPTS), style(scene, rng)])
        else:
            turns = rng.sample(questions(scene), 3)
            chats.append([f"{dense_caption(scene, rng)}\n{turns[0][0]}", turns[0][1]]
                         + [x for q, a, _ in turns[1:] for x in (q, a)])
    chats += [[q, a] for q, a in TEXT_ONLY_QA]
    return [{"messages": [{"role": ("user", "assistant")[k % 2], "content": t} for k, t in enumerate(c)]}
            for c in chats]


# ---------------------------------------------------------------- files

def _corpus(dense, sparse, llava, sft, vqa, language) -> list[str]:
    lines = [r["caption"] for r in dense]
    lines += [m["content"] for r in language for m in r["messages"]]
    for rows in (sparse, llava, sft):
        for r in rows:
            lines += [t["value"].replace("<image>", "").strip() for t in r["conversations"]]
    for r in vqa:
        lines += [r["question"], r["answer"]]
    # Every possible answer as a line of its own, so the tokenizer learns it as a word at the
    # start of a reply (where the model's answer begins).
    lines += list(COLOURS) + list(BACKGROUNDS) + list(SHAPES) + list(COLUMNS) + list(ROWS) + list(SIZES)
    lines += ["1", "2", "3", "4"]
    # The chat template's own words, so that, as in Qwen's vocabulary, they are tokens, not letters.
    lines += ["system", "user", "assistant", "You are a helpful assistant."] * 50
    return lines


def _write_json(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")


def _write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
