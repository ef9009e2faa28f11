"""What the model sees up to its answer is the same in training and in evaluation, per backbone family.

Training side: LLaMA-Factory's own SFT encoding (load_tokenizer with the rendered image_min/max_pixels,
the backbone's template, SupervisedDatasetProcessor._encode_data_example), as a training run does it.
Evaluation side: lmms-eval 0.7.3's own model class (qwen2_5_vl / qwen3_vl), built from the --model_args
string and model the harness passes (evaluation.command.build_command), answering one request through generate_until;
the processor call it makes is recorded (the text it tokenizes and the image tokens it expands).

The models are tiny (embedded/tiny_models.py) and built by init_vlm (build_vlm) from a ViT source that
carries the published image processor settings of Qwen2.5-VL-3B-Instruct or Qwen3-VL-4B-Instruct, with
the pixel budget of the full-size backbone config (configs/hydra/backbone/*.yaml), which init_vlm writes
into the built image processor; the system prompt comes from the same config.
~45 s (two tiny model builds and loads, eight images per family), hence slow."""

from __future__ import annotations

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
#   2000x1500 -> over the budget, shrunk once from its own size by sqrt(3000000 / max_pixels) and floored:
#       Qwen2.5: / 1.7290 = 1156.7 x 867.6 px = 41.31 x 30.98 units of 28 -> 41 x 30 = 1230
#       Qwen3:   / 1.5129 = 1322.0 x 991.5 px = 41.31 x 30.98 units of 32 -> 41 x 30 = 1230
#     (both budgets are 1280 of their units). Shrinking first into the budget with int() sides
#     (1156 x 867) and rounding that again would give 41 x 31 = 1271.
EXPECTED = {
    "qwen2.5-3b": {(100, 100): 16, (224, 224): 64, (500, 375): 234, (2000, 1500): 1230},
    "qwen3vl-4b": {(100, 100): 64, (224, 224): 64, (500, 375): 192, (2000, 1500): 1230},
}
BACKBONES = {"qwen2.5-3b": "qwen2_5_vl", "qwen3vl-4b": "qwen3_vl"}
QUESTION = "What colour is the square?"


def _model_dir(root, family: str, cfg: dict):
    """A tiny model of the family built by the init_vlm stage from the backbone config's stage settings
    (the pixel budget, written into the image processor, among them), its sources swapped for tiny ones:
    a ViT source with the published image processor settings and an LLM source."""
    from transformers import AutoProcessor, Qwen2VLImageProcessor

    from embedded.tiny_models import build_tiny_pair
    from init_vlm.stage import run, stages
    from stagekit import StageRun

    vit, llm = build_tiny_pair(root / "sources", family=family)
    source = AutoProcessor.from_pretrained(vit)
    published = dict(PUBLISHED[family])
    if "size" not in published:
        published["size"] = {"shortest_edge": published.pop("min_pixels"), "longest_edge": published.pop("max_pixels")}
    source.image_processor = Qwen2VLImageProcessor(**published)
    source.save_pretrained(vit)
    (stage,) = stages(cfg, [])
    config = {**stage["config"], "vit_source": str(vit), "llm_source": str(llm), "dtype": None}
    run(StageRun(name="init_vlm", out_dir=root, inputs={}, config=config, log=lambda *_: None))
    return root / "model"


def backbone_cfg(name: str) -> dict:
    return to_plain(compose_config(["experiment=caprl2m", f"backbone={name}"]))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return {name: _model_dir(tmp_path_factory.mktemp(name), fam, backbone_cfg(name)) for name, fam in BACKBONES.items()}


def backbone_view(name: str) -> dict:
    cfg = backbone_cfg(name)
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
    keys = data_keys(model_dir=str(folder), dataset_dir=str(folder), dataset="parity", template=view["template"],
                     cutoff_len=8192, packing=False)
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
        assert n_eval == n_train, f"{backbone} {size}: {n_train} visual tokens in training, {n_eval} at evaluation"
        assert evaluated == trained, f"{backbone} {size}: prompts differ"
        assert n_train == EXPECTED[backbone][size], size
    # the system turn, exactly: Qwen2.5-VL's default one, none for Qwen3-VL's no-think template
    has_system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" in trained
    assert has_system == (backbone == "qwen2.5-3b")
