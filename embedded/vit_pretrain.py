"""Pretrain the tiny ViT source, so it is a stand-in for a *pretrained* ViT as the paper's recipe
assumes (Qwen2.5-VL's vision tower), not a random one.

Why: a random 2-block ViT passes the pixels through nearly unchanged, and what the merger makes
of them is dominated by one vector common to every image; the tiny VLM then treats the visual
tokens as a constant soft prompt (its answers do not change when the image is swapped for
noise) and learns nothing from any caption source. A real pretrained ViT hands the projector
features that already tell objects apart; this one learns to, on its own images.

Its images are scenes of the same kind as the world's, drawn here and never saved (so none is a
training or benchmark image), and its objective is supervised, like an ImageNet-pretrained ViT:
each merged token (one 28-px grid cell) predicts the colour, shape and size of the object in its
cell (or none), and, like a real ViT's tokens that carry the scene's gist, the background and the
scene's object's colour, shape and size. The whole checkpoint is saved back; init_vlm
keeps its vision tower and replaces the merger, as the paper's recipe does. Plain PyTorch, one
process, seeded.
"""

from __future__ import annotations

import random
from pathlib import Path

from embedded.pretrain_loop import pretrain


def pretrain_vit_source(model_dir: Path, *, images: int, steps: int, seed: int, batch_size: int = 32,
                        learning_rate: float = 3e-3, log=print) -> list[float]:
    """Train the vision tower of the Qwen2.5-VL checkpoint in `model_dir`, save it in place; return
    the mean loss of each tenth of the run."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from embedded.synthetic import BACKGROUNDS, COLOURS, COLUMNS, ROWS, SHAPES, SIZES, _draw_scene

    rng = random.Random(seed)
    scenes = [_draw_scene(rng) for _ in range(images)]
    processor = AutoProcessor.from_pretrained(model_dir)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    visual = model.model.visual
    colours, backgrounds = sorted(COLOURS), sorted(BACKGROUNDS)
    # per token: colour (none + 6), shape (none + 3), size (none + 2) of its cell; the background (3) and
    # the scene's object's colour (6), shape (3) and size (2)
    sizes = (1 + len(colours), 1 + len(SHAPES), 1 + len(SIZES), len(backgrounds), len(colours), len(SHAPES), len(SIZES))
    head = torch.nn.Linear(visual.merger.mlp[-1].out_features, sum(sizes))
    params = list(visual.parameters()) + list(head.parameters())

    def labels(scene: dict) -> torch.Tensor:
        (obj,) = scene["objects"]
        whole = [backgrounds.index(scene["background"]), colours.index(obj["colour"]), SHAPES.index(obj["shape"]),
                 SIZES.index(obj["size"])]
        cells = [[0, 0, 0] + whole for _ in range(9)]
        cell = ROWS.index(obj["row"]) * 3 + COLUMNS.index(obj["column"])   # merged tokens are in raster order
        cells[cell][:3] = [1 + colours.index(obj["colour"]), 1 + SHAPES.index(obj["shape"]), 1 + SIZES.index(obj["size"])]
        return torch.tensor(cells)

    def loss_of_step():
        batch = rng.sample(scenes, min(batch_size, len(scenes)))
        inputs = processor.image_processor(images=[s["image"] for s in batch], return_tensors="pt")
        tokens = visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        target = torch.cat([labels(s) for s in batch])
        logits = head(tokens).split(sizes, dim=-1)
        return sum(torch.nn.functional.cross_entropy(lg, target[:, k]) for k, lg in enumerate(logits))

    curve = pretrain(visual, params, steps=steps, learning_rate=learning_rate, loss_of_step=loss_of_step)
    model.save_pretrained(model_dir)   # the whole checkpoint: init_vlm takes its vision tower
    log(f"ViT source pretrained on {images} images of its own, {steps} steps: loss "
        + " ".join(f"{x:.2f}" for x in curve))
    return curve
