"""What the model sees up to its answer is the same in training and in evaluation, per backbone family.

Training side: LLaMA-Factory's own SFT encoding (load_tokenizer with the rendered image_min/max_pixels,
the backbone's template, SupervisedDatasetProcessor._encode_data_example), as a training run does it.
Evaluation side: lmms-eval 0.7.3's own model class (qwen2_5_vl / qwen3_vl), built from the --model_args
string and model the harness passes (evaluation.command.build_command), answering one request through generate_until;
the processor call it makes is recorded (the text it tokenizes and the image tokens it expands).

The models are tiny (embedded/tiny_models.py) but carry the published image processor settings of
Qwen2.5-VL-3B-Instruct and Qwen3-VL-4B-Instruct and the chat template init_vlm writes; the pixel budget
and system prompt come from the full-size backbone configs (configs/hydra/backbone/*.yaml).
~40 s (two tiny model loads, eight images per family), hence slow."""

from __future__ import annotations

import json

import pytest

from evaluation.command import build_command, eval_settings
from harness.config import compose_config, to_plain

pytestmark = pytest.mark.slow

# Published preprocessor_config.json values (hub files of the two checkpoints, as released).
PUBLISHED = {
    "qwen2_5_vl": {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                   "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711]},
    "qwen3_vl": {"size": {"shortest_edge": 65536, "longest_edge": 16777216}, "patch_size": 16,
                 "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                 "image_std": [0.5, 0.5, 0.5]},
}
SIZES = [(100, 100), (224, 224), (500, 375), (2000, 1500)]
# Visual tokens, by hand: Qwen2.5-VL 28-px units in [3136, 1003520]; Qwen3-VL 32-px units in [65536, 1310720].
#   100x100 -> Qwen2.5: round(100/28)=4 -> 4x4 = 16; Qwen3: 96x96 < 65536 px, lifted to 256x256 = 8x8 = 64
#   224x224 -> 8x8 = 64; Qwen3: 224x224 < 65536, lifted to 256x256 = 64
#   500x375 -> Qwen2.5: 504x378 = 18x13.5 -> round: 18 x 13 = 234; Qwen3: 512x384 = 16x12 = 192
EXPECTED = {
    "qwen2.5-3b": {(100, 100): 16, (224, 224): 64, (500, 375): 234},
    "qwen3vl-4b": {(100, 100): 64, (224, 224): 64, (500, 375): 192},
}
# (training, evaluation) visual tokens of an image over max_pixels: the same in both families, whose
# budgets are both 1280 of their units (2000x1500 -> 1156x867 in LLaMA-Factory, then 31 x 41 units).
OVER_BUDGET = {(2000, 1500): (1271, 1230)}
BACKBONES = {"qwen2.5-3b": "qwen2_5_vl", "qwen3vl-4b": "qwen3_vl"}
QUESTION = "What colour is the square?"


def _model_dir(root, family: str):
    """A tiny model of the family with the published image processor and init_vlm's chat template."""
    from transformers import AutoProcessor, AutoTokenizer, Qwen2VLImageProcessor

    from embedded.tiny_models import build_tiny_qwen3vl_vit_source, build_tiny_vit_source, tiny_corpus
    from embedded.tokenizer import train_tokenizer
    from init_vlm.families import QWEN3_VL_CHAT_TEMPLATE
    from init_vlm.qwen_vocab import QWEN2_VL_CHAT_TEMPLATE

    tok = train_tokenizer(tiny_corpus(), root / "tokenizer", vocab_size=512)
    build = build_tiny_qwen3vl_vit_source if family == "qwen3_vl" else build_tiny_vit_source
    folder = build(root / family, tok)
    chat = QWEN3_VL_CHAT_TEMPLATE if family == "qwen3_vl" else QWEN2_VL_CHAT_TEMPLATE
    processor = AutoProcessor.from_pretrained(folder)
    published = dict(PUBLISHED[family])
    if "size" not in published:
        published["size"] = {"shortest_edge": published.pop("min_pixels"), "longest_edge": published.pop("max_pixels")}
    processor.image_processor = Qwen2VLImageProcessor(**published)
    processor.chat_template = chat
    processor.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = chat
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({**processor.image_processor.to_dict(),
                                                                  "processor_class": type(processor).__name__}))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return {name: _model_dir(tmp_path_factory.mktemp(name), fam) for name, fam in BACKBONES.items()}


def backbone_view(name: str) -> dict:
    cfg = to_plain(compose_config(["experiment=caprl2m", f"backbone={name}"]))
    return {"template": cfg["backbone"]["template"], "eval_model": cfg["backbone"]["eval_model"],
            "pixels": cfg["pixels"], "system_prompt": cfg["backbone"]["system_prompt"], "benchmarks": cfg["benchmarks"]}


def train_side(folder, view: dict, image) -> tuple[str, int]:
    """The prompt LLaMA-Factory trains on (tokens before the answer's first label) and its image tokens."""
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments
    from llamafactory.model.loader import load_tokenizer

    from train.recipe import data_keys

    # the keys the training YAML gets (train/render.py renders these), not the config's values
    keys = data_keys(model_dir=str(folder), dataset_dir=str(folder), dataset="parity", pixels=view["pixels"],
                     template=view["template"], cutoff_len=8192, packing=False)
    margs = ModelArguments(model_name_or_path=keys["model_name_or_path"], image_max_pixels=keys["image_max_pixels"],
                           image_min_pixels=keys["image_min_pixels"])
    loaded = load_tokenizer(margs)
    tokenizer, processor = loaded["tokenizer"], loaded["processor"]
    dargs = DataArguments(template=keys["template"], cutoff_len=keys["cutoff_len"])
    template = get_template_and_fix_tokenizer(tokenizer, dargs)
    enc = SupervisedDatasetProcessor(template=template, tokenizer=tokenizer, processor=processor, data_args=dargs)
    ids, labels = enc._encode_data_example(
        prompt=[{"role": "user", "content": "<image>" + QUESTION}], response=[{"role": "assistant", "content": "red"}],
        system="", tools="", images=[image], videos=[], audios=[])
    prompt = ids[:next(i for i, label in enumerate(labels) if label != -100)]
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return tokenizer.decode(prompt, skip_special_tokens=False), prompt.count(pad)


class _Recorded:
    """lmms-eval's processor, unchanged, with each call's output kept."""

    def __init__(self, processor):
        self._processor, self.outputs = processor, []

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        out = self._processor(*args, **kwargs)
        self.outputs.append(out)
        return out


def eval_model(folder, view: dict):
    """lmms-eval's model class, built from the model_args string the harness passes."""
    from lmms_eval.models import get_model
    from lmms_eval.utils import simple_parse_args_string

    cfg = eval_settings({"model": view["eval_model"], "device": "cpu"})
    argv, _ = build_command(folder, folder / "eval", benchmarks=view["benchmarks"], pixels=view["pixels"],
                            eval_cfg=cfg, system_prompt=view["system_prompt"])
    args = simple_parse_args_string(argv[argv.index("--model_args") + 1])
    model = get_model(argv[argv.index("--model") + 1], force_simple="--force_simple" in argv)(**args)
    model.processor = _Recorded(model.processor)
    return model


def eval_side(model, image) -> tuple[str, int]:
    from lmms_eval.api.instance import Instance

    model.task_dict = {"parity": {"test": [{"image": image}]}}
    request = Instance(request_type="generate_until", idx=0, metadata={"task": "parity", "doc_id": 0, "repeats": 1},
                       arguments=(QUESTION, {"max_new_tokens": 1, "until": ["\n"]}, lambda doc: [doc["image"]], 0,
                                  "parity", "test"))
    model.generate_until([request])
    out = model.processor.outputs[-1]
    ids = out["input_ids"][0].tolist()
    pad = model.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return model.tokenizer.decode(ids, skip_special_tokens=False), ids.count(pad)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_training_and_evaluation_see_the_same_prompt_and_visual_tokens(models, backbone):
    from PIL import Image

    view = backbone_view(backbone)
    model = eval_model(models[backbone], view)
    for size in SIZES:
        image = Image.new("RGB", size, "gray")
        trained, n_train = train_side(models[backbone], view, image)
        evaluated, n_eval = eval_side(model, image)
        if size in OVER_BUDGET:
            # Known difference above max_pixels: LLaMA-Factory shrinks into the budget (int()) and the
            # processor then rounds to whole units (41 x 31 = 1271, 996464 px); qwen_vl_utils in
            # lmms-eval floors instead (41 x 30 = 1230). Pinned so a change on either side shows.
            assert (n_train, n_eval) == OVER_BUDGET[size], size
            assert evaluated.replace("<|image_pad|>", "") == trained.replace("<|image_pad|>", "")
            continue
        assert n_eval == n_train, f"{backbone} {size}: {n_train} visual tokens in training, {n_eval} at evaluation"
        assert evaluated == trained, f"{backbone} {size}: prompts differ"
        assert n_train == EXPECTED[backbone][size], size
    # the system turn, exactly: Qwen2.5-VL's default one, none for Qwen3-VL's no-think template
    has_system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" in trained
    assert has_system == (backbone == "qwen2.5-3b")
