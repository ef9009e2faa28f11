"""init_vlm for Qwen3-VL: a Qwen3-VL checkpoint's ViT + a Qwen3 causal LM + new merger and DeepStack mergers.

Everything runs on the tiny offline sources (embedded/tiny_models.py) with the real transformers, except
the config test, which merges the published Qwen3-VL-4B-Instruct and Qwen3-4B configs (tests/data/init_vlm)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from embedded.tiny_models import build_tiny_pair
from init_vlm import build_vlm
from tests.test_init_vlm import QUIET, config, fails, weights

DATA = Path(__file__).parent / "data" / "init_vlm"
NEW_PREFIXES = ("model.visual.merger.", "model.visual.deepstack_merger_list.")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """Qwen3-VL ViT source (text hidden 48, head_dim 16, untied) and Qwen3 LLM source (hidden 64, head_dim 32,
    3 layers, tied)."""
    return build_tiny_pair(tmp_path_factory.mktemp("q3src"), family="qwen3_vl")


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("q3out") / "vlm"
    return out, build_vlm(str(sources[0]), str(sources[1]), out, seed=7, **QUIET)


# ---------------------------------------------------------------- the published config


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("id2label", "label2id"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_merged_config_equals_published_qwen3_vl_4b_instruct(tmp_path):
    from transformers import Qwen3VLConfig

    from init_vlm.config_merge import merge_config, read_configs
    from init_vlm.sources import Checkpoint

    for role, name in (("vit", "Qwen3-VL-4B-Instruct"), ("llm", "Qwen3-4B")):
        (tmp_path / role).mkdir()
        shutil.copy(DATA / f"{name}.config.json", tmp_path / role / "config.json")
    vit, llm = Checkpoint("ViT", "vit", tmp_path / "vit", None), Checkpoint("LLM", "llm", tmp_path / "llm", None)
    family, vit_cfg, llm_cfg = read_configs(vit, llm)
    published = Qwen3VLConfig.from_pretrained(tmp_path / "vit")
    ids = {k: getattr(published, k) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                              "vision_end_token_id")}
    merged = merge_config(vit_cfg, llm_cfg, llm, vocab_rows=151936, token_ids=ids, dtype="bfloat16", family=family)
    ours, theirs = _flat(merged.to_dict()), _flat(published.to_dict())
    diff = {k: (ours.get(k), theirs.get(k)) for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    assert diff == {
        # Qwen3-VL's LLM was trained on to a 256K context with a larger RoPE base after it left Qwen3-4B;
        # a fresh build keeps the LLM's own values, which is what that LLM was trained with.
        "text_config.max_position_embeddings": (40960, 262144),
        "text_config.rope_parameters.rope_theta": (1000000, 5000000),
        # Not architecture: the published file states the dtype in text_config only.
        "dtype": ("bfloat16", None),
    }
    # The fields that make the architecture, spelled out (they are inside the equality above too).
    assert merged.text_config.head_dim == 128 and merged.tie_word_embeddings is True
    assert merged.text_config.rope_parameters["mrope_section"] == [24, 20, 20]
    assert merged.text_config.rope_parameters["mrope_interleaved"] is True
    assert merged.vision_config.out_hidden_size == 2560
    assert list(merged.vision_config.deepstack_visual_indexes) == [5, 11, 17]


@pytest.mark.parametrize("head_dim, own, expected", [
    (128, [24, 20, 20], [24, 20, 20]),   # every dense Qwen3 (0.6B-32B) has head_dim 128: Qwen3-VL's own split
    (128, None, [24, 20, 20]),
    (64, [24, 20, 20], [12, 10, 10]),    # derived in Qwen3-VL's proportions when the ViT source's does not fit
    (32, [4, 2, 2], [6, 5, 5]),
    (16, [4, 2, 2], [4, 2, 2]),
])
def test_interleaved_mrope_section_for_the_llm_head_dim(head_dim, own, expected):
    from init_vlm.config_merge import mrope_section
    from init_vlm.families import families

    llm_cfg = SimpleNamespace(head_dim=head_dim, hidden_size=2560, num_attention_heads=32)
    vit_cfg = SimpleNamespace(text_config=SimpleNamespace(rope_parameters={"mrope_section": own} if own else {}))
    assert mrope_section(llm_cfg, vit_cfg, None, families()["qwen3_vl"]) == expected


# ---------------------------------------------------------------- the built model


def test_built_model_loads_with_auto_classes_and_runs(built):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(built[0])
    processor = AutoProcessor.from_pretrained(built[0])
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert processor.image_processor.patch_size == 16 and processor.image_processor.merge_size == 2
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")  # no default system
    inputs = processor(text=[text], images=[Image.new("RGB", (96, 64), "red")], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]]  # 64x96 px = 4x6 patches of 16 px -> 2x3 tokens
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 6
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == model.config.text_config.vocab_size and torch.isfinite(logits).all()


def test_vision_tower_and_llm_are_bit_exact_copies(sources, built):
    vit, llm = (weights(s) for s in sources)
    out = weights(built[0])
    vision = [n for n in vit if n.startswith("model.visual.") and not n.startswith(NEW_PREFIXES)]
    assert len(vision) == 27
    for name in vision:
        assert torch.equal(out[name], vit[name]), name
    text = [n for n in llm if n.startswith("model.")]
    for name in text:
        assert torch.equal(out["model.language_model." + name[len("model."):]], llm[name]), name
    expected = set(vision) | {"model.language_model." + n[len("model."):] for n in text} | {
        n for n in vit if n.startswith(NEW_PREFIXES)}
    assert set(out) == expected  # tied LLM: no lm_head; nothing of the ViT source's text decoder


def test_new_projector_is_merger_and_deepstack_mergers_sized_for_the_llm(sources, built):
    vit, out = weights(sources[0]), weights(built[0])
    new = {n: tuple(t.shape) for n, t in out.items() if n.startswith(NEW_PREFIXES)}
    assert len(new) == 18
    for prefix, norm in (("model.visual.merger.", 32), ("model.visual.deepstack_merger_list.0.", 128),
                         ("model.visual.deepstack_merger_list.1.", 128)):
        assert new[prefix + "norm.weight"] == (norm,)
        assert new[prefix + "linear_fc1.weight"] == (128, 128)
        assert new[prefix + "linear_fc2.weight"] == (64, 128)          # LLM hidden 64, not the ViT source's 48
        assert vit[prefix + "linear_fc2.weight"].shape == (48, 128)
        assert torch.equal(out[prefix + "norm.weight"], torch.ones(norm))
        assert torch.equal(out[prefix + "norm.bias"], torch.zeros(norm))
        bound = 1 / 128 ** 0.5
        assert out[prefix + "linear_fc1.weight"].abs().max() <= bound   # torch_default: U(-1/sqrt(fan_in), ..)
    manifest = built[1]
    assert manifest["parameter_groups"]["projector"]["tensors"] == 18
    assert manifest["parameter_groups"]["projector"]["parameters"] == 74880
    assert manifest["family"] == "Qwen3-VL"


def test_text_config_from_the_llm(sources, built):
    out, vit, llm = config(built[0]), config(sources[0]), config(sources[1])
    text = out["text_config"]
    assert text["head_dim"] == 32 == llm["head_dim"] != llm["hidden_size"] // llm["num_attention_heads"]
    assert text["hidden_size"] == 64 and out["tie_word_embeddings"] is True and text["tie_word_embeddings"] is True
    assert text["rope_parameters"] == {"mrope_interleaved": True, "mrope_section": [6, 5, 5],
                                       "rope_theta": 1000000.0, "rope_type": "default"}
    assert vit["text_config"]["rope_parameters"]["rope_theta"] == 5000000.0  # the ViT source's is not used
    vision = dict(out["vision_config"])
    assert vision.pop("out_hidden_size") == 64
    assert vision == {k: v for k, v in vit["vision_config"].items() if k != "out_hidden_size"}
    assert out["architectures"] == ["Qwen3VLForConditionalGeneration"] and out["model_type"] == "qwen3_vl"


def test_manifest_and_verification(built):
    manifest = built[1]
    assert manifest["config"] == {"dtype": "float32", "tie_word_embeddings": True, "out_hidden_size": 64,
                                  "mrope_section": [6, 5, 5], "mrope_interleaved": True, "head_dim": 32,
                                  "deepstack_visual_indexes": [0, 1]}
    # 80 tensors: 27 vision + 35 of the 3-layer LLM copied bit for bit, 18 new projector tensors.
    assert manifest["verification"] == {"tensors_checked": 80, "copied_bit_exact": 62,
                                        "forward_logits_shape": [1, 27, 413],
                                        "reload": "Qwen3VLForConditionalGeneration + AutoProcessor"}
    assert manifest["tokenizer"]["chat_template"] == "qwen3_vl_nothink"
    on_disk = json.loads((built[0] / "init_vlm_manifest.json").read_text())
    assert on_disk["output_files_sha256"] == manifest["output_files_sha256"]


def test_same_seed_same_bytes(sources, built, tmp_path):
    again = build_vlm(str(sources[0]), str(sources[1]), tmp_path / "again", seed=7, **QUIET)
    assert again["output_files_sha256"] == built[1]["output_files_sha256"]


# ---------------------------------------------------------------- mixed families


def test_qwen25vl_vit_with_qwen3_llm_refused(sources, tmp_path):
    qwen25_vit, _ = build_tiny_pair(tmp_path / "q25")
    msg = fails(qwen25_vit, sources[1], tmp_path, f"LLM source {sources[1]}", "'qwen3' is a Qwen3-family LM",
                "is a Qwen2.5-VL checkpoint", "q/k/v biases, no q/k norms")
    assert "Pair a Qwen2.5-VL ViT with a Qwen2-family LM, or a Qwen3-VL ViT with this LM" in msg


def test_qwen3vl_vit_with_qwen2_llm_refused(sources, tmp_path):
    _, qwen2_llm = build_tiny_pair(tmp_path / "q25")
    fails(sources[0], qwen2_llm, tmp_path, f"LLM source {qwen2_llm}", "'qwen2' is a Qwen2-family LM",
          "is a Qwen3-VL checkpoint", "q/k RMSNorms, no q/k/v biases")


def test_llm_without_a_layer_after_the_deepstack_layers_refused(sources, tmp_path):
    from embedded.tiny_models import build_tiny_qwen3_llm_source

    llm = build_tiny_qwen3_llm_source(tmp_path / "llm2", sources[0].parent / "tokenizer", layers=2)
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "num_hidden_layers 2 leaves no text layer after the 2 layers",
          "the LLM needs more than 2 layers")
