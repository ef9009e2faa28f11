"""data_prep's visual-token count follows the model folder's processor: Qwen3-VL's 32-px units.

The reference is the real thing: LLaMA-Factory's qwen3_vl plugin with the bounds training gives it
(train/recipe.py: its own pixel resize off), then the tiny Qwen3-VL processor (embedded/tiny_models.py)
resizes within its bounds and expands <|image_pad|>; its count of image tokens must equal data_prep's
prediction. ~15 s, mostly imports."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.tokens import DEFAULT_GRID, VisualGrid, max_visual_tokens, visual_tokens

PIXELS = {"min_pixels": 3136, "max_pixels": 12544}  # the embedded experiment's budget (56x56 .. 112x112)
# small, large, tiny, very wide (LF clamps aspect ratios over 200), tall, exact units, odd sizes
SIZES = [(200, 150), (1000, 700), (20, 20), (2900, 10), (30, 600), (64, 64), (97, 333), (1920, 1080), (128, 96)]
# The counts, by hand: transformers' smart_resize in 32-px units within the processor's [4096, 16384] px
# (4..16 units), from the image's own size; LF only lifts a side under 28 px to 28.
#   200x150   -> 6 x 5 units = 30720 px, over: / sqrt(30000/16384) = 147.8 x 110.9 px -> 4 x 3 = 12
#   1000x700  -> / 6.536 = 153.0 x 107.1 px -> 4 x 3 = 12;   1920x1080 -> / 11.25 = 170.7 x 96 -> 5 x 3 = 15
#   20x20     -> LF 28x28 -> 1 x 1 unit, under: x 64/28 = 64 x 64 px -> 2 x 2 = 4;   64x64 -> 2 x 2 = 4
#   2900x10   -> LF 2900x28 -> 91 x 1 units, over: / 2.226 = 1302.7 x 12.6 px -> 40 x max(1, 0) = 40
#               (the processor keeps one row of 32 px however far under a unit the short side falls)
#   30x600    -> 1 x 19 units, over: / 1.048 = 28.6 x 572.4 px -> max(1, 0) x 17 = 17
#   97x333    -> 3 x 10 units, over: / 1.404 = 69.1 x 237.2 px -> 2 x 7 = 14;   128x96 -> 4 x 3 = 12
EXPECTED = [12, 12, 4, 40, 17, 4, 14, 15, 12]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from embedded.tiny_models import build_tiny_qwen3vl_vit_source, build_tiny_vit_source, tiny_corpus
    from embedded.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    tok = train_tokenizer(tiny_corpus(), root / "tokenizer", vocab_size=512)
    return {"qwen3_vl": build_tiny_qwen3vl_vit_source(root / "qwen3vl", tok),
            "qwen2_5_vl": build_tiny_vit_source(root / "qwen25vl", tok)}


def test_grid_read_from_the_processor_config(models):
    assert VisualGrid.from_model_dir(models["qwen3_vl"]) == VisualGrid(unit=32, min_pixels=4096, max_pixels=16384)
    # The tiny Qwen2.5-VL processor's bounds are the embedded budget: same counts as the default grid.
    assert VisualGrid.from_model_dir(models["qwen2_5_vl"]) == VisualGrid(unit=28, min_pixels=3136, max_pixels=12544)


def test_bad_processor_config_names_file_and_key(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text('{"patch_size": 16}')
    with pytest.raises(ValueError, match=r"preprocessor_config.json: key 'merge_size' must be a positive integer"):
        VisualGrid.from_model_dir(tmp_path)


def test_visual_tokens_equal_the_qwen3vl_processors_own_count(models):
    from llamafactory.data.mm_plugin import get_mm_plugin
    from PIL import Image
    from transformers import AutoProcessor

    from train.recipe import LF_IMAGE_PIXELS

    processor = AutoProcessor.from_pretrained(models["qwen3_vl"])
    plugin = get_mm_plugin(name="qwen3_vl", image_token="<|image_pad|>", video_token="<|video_pad|>")
    grid = VisualGrid.from_model_dir(models["qwen3_vl"])
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    theirs, ours = [], []
    for width, height in SIZES:
        image = plugin._regularize_images([Image.new("RGB", (width, height), "gray")], **LF_IMAGE_PIXELS)["images"][0]
        ids = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[image])["input_ids"][0]
        theirs.append(sum(1 for i in ids if i == pad))
        ours.append(visual_tokens(width, height, PIXELS["min_pixels"], PIXELS["max_pixels"], grid))
    assert ours == theirs == EXPECTED
    # The same images counted in Qwen2.5-VL's 28-px units give other numbers: the unit matters.
    assert [visual_tokens(w, h, PIXELS["min_pixels"], PIXELS["max_pixels"]) for w, h in SIZES] != EXPECTED


def test_upper_bound_uses_the_models_unit():
    assert max_visual_tokens(3136, 12544) == 16                           # 12544 / 28^2
    assert max_visual_tokens(3136, 12544, VisualGrid(unit=32)) == 12      # 12544 / 32^2, rounded down
    assert max_visual_tokens(3136, 1003520, DEFAULT_GRID) == 1280
    assert max_visual_tokens(3136, 1003520, VisualGrid(unit=32)) == 980


def test_prepare_dataset_counts_in_the_models_units(models, tmp_path):
    """One caption row, one 100x100 image: 3 x 3 units of 32 px (9216 px, inside [4096, 16384]) with the
    Qwen3-VL model folder, 4 x 4 units of 28 px (12544 px, inside [3136, 12544]) with Qwen2.5-VL."""
    import json

    from data_prep import prepare_dataset
    from tests.test_data_prep import make_image, source

    make_image(tmp_path / "img" / "a.jpg", (100, 100))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"image": "a.jpg", "caption": "a red square"}) + "\n")
    totals = {}
    for name, model in models.items():
        src = source("one", "caprl_jsonl", [rows], tmp_path / "img")
        manifest = prepare_dataset(src, tmp_path / name, dataset_name="one", pixels=PIXELS, cutoff_len=512,
                                   tokenizer_dir=model, log=lambda *_: None)
        totals[name] = (manifest["total_visual_tokens"], manifest["token_count"].get("visual_unit_px"))
    assert totals == {"qwen3_vl": (9, 32), "qwen2_5_vl": (16, None)}


def test_llamafactory_qwen3vl_nothink_agrees_on_lengths(models, tmp_path, monkeypatch):
    """LLaMA-Factory's own pipeline (template qwen3_vl_nothink, the Qwen3-VL backbones' template) tokenizes
    what data_prep wrote to exactly the lengths data_prep predicted: 32-px visual units, no default system turn."""
    import json

    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from data_prep import prepare_dataset
    from tests.test_data_prep import SAMPLES, images_of, make_image, source
    from train.recipe import LF_IMAGE_PIXELS

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    root, n = tmp_path / "images", 0
    for sample in ("sharegpt4v_pt.json", "open_llava_next_mix1m.json", "caprl_2m.jsonl"):
        for rel in images_of(SAMPLES / sample):
            make_image(root / rel, SIZES[n % len(SIZES)])
            n += 1
    sources = [source("captions", "sharegpt4v", [SAMPLES / "sharegpt4v_pt.json"], root),
               source("sft", "open_llava_next", [SAMPLES / "open_llava_next_mix1m.json"], root),
               source("caprl", "caprl_jsonl", [SAMPLES / "caprl_2m.jsonl"], root)]
    model, info, manifests = models["qwen3_vl"], {}, []
    for src in sources:
        out = tmp_path / "data" / src["name"]
        manifests.append(prepare_dataset(src, out, dataset_name=src["name"], pixels=PIXELS, cutoff_len=512,
                                         tokenizer_dir=model, log=lambda *a: None))
        info.update(json.loads((out / "dataset_info.json").read_text()))
    (tmp_path / "lf").mkdir()
    (tmp_path / "lf" / "dataset_info.json").write_text(json.dumps(info))
    args = dict(model_name_or_path=str(model), stage="sft", do_train=True, finetuning_type="full",
                dataset="captions,sft,caprl", dataset_dir=str(tmp_path / "lf"), template="qwen3_vl_nothink",
                cutoff_len=512, output_dir=str(tmp_path / "o"), overwrite_cache=True,
                **LF_IMAGE_PIXELS, report_to="none", bf16=False)
    model_args, data_args, training_args, *_ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    lengths = [len(ids) for ids in module["train_dataset"]["input_ids"]]
    assert len(lengths) == sum(m["rows_kept"] for m in manifests)
    assert sum(lengths) == sum(m["total_text_tokens"] + m["total_visual_tokens"] for m in manifests)
    assert all(m["token_count"]["template"] == "qwen3_vl_nothink: no default system turn" for m in manifests)
