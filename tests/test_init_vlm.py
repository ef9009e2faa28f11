"""init_vlm on tiny sources built here: exact copies, projector, config, tokenizer, forward, bad inputs.

Run: .venv/bin/python -m pytest tests/test_init_vlm.py -q"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from embedded.tiny_models import build_tiny_pair
from init_vlm import InitVLMError, build_vlm, resolve_source
from init_vlm.qwen_vocab import CONFIG_TOKEN_FIELDS, VISION_TOKENS

QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """ViT source (text hidden 48, untied) and LLM source (hidden 64, tied): the sizes differ on purpose."""
    return build_tiny_pair(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out") / "vlm"
    return out, build_vlm(str(sources[0]), str(sources[1]), out, seed=7, **QUIET)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


# ---------------------------------------------------------------- weights


def test_vision_tower_and_llm_are_bit_exact_copies(sources, built):
    vit, llm = (weights(s) for s in sources)
    out = weights(built[0])
    vision = [n for n in vit if n.startswith("visual.") and not n.startswith("visual.merger.")]
    text = [n for n in llm if n.startswith("model.")]
    assert vision and text
    for name in vision:
        assert torch.equal(out[name], vit[name]), name
    for name in text:
        assert torch.equal(out[name], llm[name]), name
    # The ViT source's own text decoder must not leak into the output.
    assert out["model.embed_tokens.weight"].shape[1] == 64
    assert "lm_head.weight" not in out  # tied LLM: lm_head is the embedding, not stored


def test_output_holds_exactly_the_expected_tensors(sources, built):
    vit, llm = (weights(s) for s in sources)
    out = weights(built[0])
    expected = ({n for n in vit if n.startswith("visual.")} | {n for n in llm if n.startswith("model.")})
    assert set(out) == expected


def test_untied_llm_keeps_its_lm_head(tmp_path):
    vit, llm = build_tiny_pair(tmp_path / "src", llm_tied=False)
    build_vlm(str(vit), str(llm), tmp_path / "out", **QUIET)
    out, src = weights(tmp_path / "out"), weights(llm)
    assert torch.equal(out["lm_head.weight"], src["lm_head.weight"])
    assert config(tmp_path / "out")["tie_word_embeddings"] is False


def test_bf16_sources_stay_bf16(tmp_path):
    vit, llm = build_tiny_pair(tmp_path / "src", dtype="bfloat16")
    build_vlm(str(vit), str(llm), tmp_path / "out", **QUIET)
    out = weights(tmp_path / "out")
    assert {t.dtype for t in out.values()} == {torch.bfloat16}
    assert config(tmp_path / "out")["dtype"] == "bfloat16"
    src = weights(llm)
    assert torch.equal(out["model.layers.0.mlp.up_proj.weight"], src["model.layers.0.mlp.up_proj.weight"])


def test_sources_of_different_dtypes_need_an_explicit_dtype(sources, tmp_path):
    from embedded.tiny_models import build_tiny_llm_source

    llm = build_tiny_llm_source(tmp_path / "llm_bf16", sources[0].parent / "tokenizer", dtype="bfloat16")
    fails(sources[0], llm, tmp_path, "different dtypes", "ViT source", "['F32']", "['BF16']", "pass dtype=")


def test_explicit_dtype_casts_copies(sources, tmp_path):
    build_vlm(str(sources[0]), str(sources[1]), tmp_path / "out", dtype="bfloat16", **QUIET)
    out, src = weights(tmp_path / "out"), weights(sources[1])
    assert torch.equal(out["model.norm.weight"], src["model.norm.weight"].to(torch.bfloat16))


def test_sharded_output_and_sharded_source(sources, tmp_path, monkeypatch):
    import init_vlm.weights as w
    from transformers import Qwen2ForCausalLM

    sharded_llm = tmp_path / "llm_sharded"
    Qwen2ForCausalLM.from_pretrained(sources[1]).save_pretrained(sharded_llm, max_shard_size="100KB")
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(sources[1] / f, sharded_llm / f)
    assert (sharded_llm / "model.safetensors.index.json").is_file()
    monkeypatch.setattr(w, "MAX_SHARD_BYTES", 200_000)
    manifest = build_vlm(str(sources[0]), str(sharded_llm), tmp_path / "out", **QUIET)
    files = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert len(files) > 1 and set(manifest["output_files_sha256"]) == set(files)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(weights(tmp_path / "out"))
    assert len(manifest["sources"]["llm"]["files_sha256"]) > 1


def test_same_seed_same_bytes_other_seed_other_projector(sources, built, tmp_path):
    build_vlm(str(sources[0]), str(sources[1]), tmp_path / "same", seed=7, **QUIET)
    build_vlm(str(sources[0]), str(sources[1]), tmp_path / "other", seed=8, **QUIET)
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert sha(tmp_path / "same" / "model.safetensors") == sha(built[0] / "model.safetensors")
    a, b = weights(built[0]), weights(tmp_path / "other")
    assert not torch.equal(a["visual.merger.mlp.0.weight"], b["visual.merger.mlp.0.weight"])
    assert torch.equal(a["visual.blocks.0.attn.qkv.weight"], b["visual.blocks.0.attn.qkv.weight"])


# ---------------------------------------------------------------- projector


def test_projector_shapes_follow_vision_width_and_llm_hidden(built):
    out = weights(built[0])
    merged = 32 * 2 * 2  # vision hidden x spatial_merge^2
    assert out["visual.merger.ln_q.weight"].shape == (32,)
    assert out["visual.merger.mlp.0.weight"].shape == (merged, merged)
    assert out["visual.merger.mlp.2.weight"].shape == (64, merged)  # LLM hidden, not the ViT source's 48
    assert out["visual.merger.mlp.2.bias"].shape == (64,)
    assert torch.equal(out["visual.merger.ln_q.weight"], torch.ones(32))


def test_projector_torch_default_init_is_kaiming_uniform(built):
    out = weights(built[0])
    bound = 1 / math.sqrt(128)  # fan_in = 4 * 32 for both linears
    for name in ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"):
        t = out[f"visual.merger.{name}"]
        assert t.abs().max() <= bound, name
    big = out["visual.merger.mlp.0.weight"]  # 16k draws: mean ~0, std ~bound/sqrt(3)
    assert abs(big.mean().item()) < 0.05 * bound
    assert big.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert built[1]["projector"]["init"] == "torch_default" and built[1]["projector"]["seed"] == 7


def test_projector_normal_init(sources, tmp_path):
    build_vlm(str(sources[0]), str(sources[1]), tmp_path / "out", projector_init="normal", seed=3, **QUIET)
    out = weights(tmp_path / "out")
    w = out["visual.merger.mlp.0.weight"]
    assert abs(w.mean().item()) < 0.002
    assert w.std().item() == pytest.approx(0.02, rel=0.03)
    assert torch.equal(out["visual.merger.mlp.0.bias"], torch.zeros(128))
    assert torch.equal(out["visual.merger.mlp.2.bias"], torch.zeros(64))


def test_unknown_projector_init_is_rejected(sources, tmp_path):
    with pytest.raises(InitVLMError, match="projector_init 'xavier'"):
        build_vlm(str(sources[0]), str(sources[1]), tmp_path / "out", projector_init="xavier", **QUIET)


# ---------------------------------------------------------------- config and tokenizer


# Text fields of the LLM built below; each differs from the tiny ViT source's text part (checked too).
DISTINCT_LLM = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 4,
                "intermediate_size": 160, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
DISTINCT_THETA = 10000.0


def test_config_text_from_llm_vision_from_vit(sources, tmp_path):
    from embedded.tiny_models import build_tiny_llm_source

    rows = config(sources[1])["vocab_size"] + 40  # padded past the tokenizer, as Qwen's 151936 rows are
    llm = build_tiny_llm_source(tmp_path / "llm", sources[0].parent / "tokenizer", vocab_size=rows, **DISTINCT_LLM,
                                rope_parameters={"rope_type": "default", "rope_theta": DISTINCT_THETA})
    build_vlm(str(sources[0]), str(llm), tmp_path / "out", **QUIET)
    vit, out = config(sources[0]), config(tmp_path / "out")
    text, vit_text = out["text_config"], vit["text_config"]
    for field, value in {**DISTINCT_LLM, "vocab_size": rows}.items():
        assert text[field] == value != vit_text[field], field
    assert text["rope_parameters"]["rope_theta"] == DISTINCT_THETA != vit_text["rope_parameters"]["rope_theta"]
    assert out["tie_word_embeddings"] is True and text["tie_word_embeddings"] is True
    assert vit["tie_word_embeddings"] is False
    vision = dict(out["vision_config"])
    assert vision.pop("out_hidden_size") == 64
    expected = {k: v for k, v in vit["vision_config"].items() if k != "out_hidden_size"}
    assert vision == expected
    # head size 64/8 = 8: 4 rotary frequencies, split like Qwen's 16/24/24 of 64.
    assert text["rope_parameters"]["mrope_section"] == [1, 1, 2]


def test_mrope_section_derived_for_the_llm_head_size(sources, built):
    # The ViT source's own [1, 2, 3] fits its head size 12, not the LLM's 64/4 = 16.
    assert config(sources[0])["text_config"]["rope_parameters"]["mrope_section"] == [1, 2, 3]
    assert config(built[0])["text_config"]["rope_parameters"]["mrope_section"] == [2, 3, 3]


@pytest.mark.parametrize("hidden, fragment", [
    (16, "head size 4 is too small to split into the 3 M-RoPE sections"),
    (20, "hidden_size 20 / 4 heads gives no even head size"),
])
def test_llm_head_size_without_valid_mrope_sections(sources, tmp_path, hidden, fragment):
    from embedded.tiny_models import build_tiny_llm_source

    llm = build_tiny_llm_source(tmp_path / "llm", sources[0].parent / "tokenizer", hidden=hidden)
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", fragment)


def test_config_token_ids_equal_tokenizer_ids(built):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(built[0])
    cfg = config(built[0])
    for field, token in CONFIG_TOKEN_FIELDS.items():
        assert cfg[field] == processor.tokenizer.convert_tokens_to_ids(token), field
    assert processor.image_processor.size["longest_edge"] == 28 * 28 * 16
    rendered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}], add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>" in rendered


@pytest.mark.parametrize("tied", [False, True])
def test_missing_vision_tokens_are_added_and_embeddings_grow(tmp_path, tied):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    vit, llm = build_tiny_pair(tmp_path / "src", llm_tied=tied, llm_vision_tokens=False)
    manifest = build_vlm(str(vit), str(llm), tmp_path / "out", **QUIET)
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    src, out = weights(llm), weights(tmp_path / "out")
    old_rows = src["model.embed_tokens.weight"].shape[0]
    assert manifest["tokenizer"]["added_tokens"][-1] == "<|video_pad|>"
    assert len(tok) == old_rows + len(manifest["tokenizer"]["added_tokens"])
    for token in VISION_TOKENS:
        assert tok(token, add_special_tokens=False).input_ids == [tok.convert_tokens_to_ids(token)]
    grown_names = ("model.embed_tokens.weight",) if tied else ("model.embed_tokens.weight", "lm_head.weight")
    assert ("lm_head.weight" in out) is (not tied)
    for name in grown_names:
        grown = out[name]
        assert grown.shape == (len(tok), 64)
        assert torch.equal(grown[:old_rows], src[name])
        mean = src[name].mean(dim=0)
        assert torch.equal(grown[old_rows:], mean.expand(len(tok) - old_rows, -1))
    cfg = config(tmp_path / "out")
    assert cfg["text_config"]["vocab_size"] == len(tok)
    assert cfg["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>") == old_rows + 9
    assert cfg["tie_word_embeddings"] is tied
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert model.lm_head.weight.shape == (len(tok), 64)
    shares = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert shares is tied


# ---------------------------------------------------------------- loading, forward, generate, manifest


def test_loads_forwards_and_generates_with_an_image(built):
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(built[0])
    processor = AutoProcessor.from_pretrained(built[0])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (80, 60), (10, 200, 30))], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // 4
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4


def test_manifest_records_sources_counts_init_and_versions(sources, built):
    out, manifest = built
    on_disk = json.loads((out / "init_vlm_manifest.json").read_text())
    assert on_disk == manifest
    src = manifest["sources"]["vit"]
    assert src["source"] == str(sources[0])
    assert src["files_sha256"]["model.safetensors"] == hashlib.sha256(
        (sources[0] / "model.safetensors").read_bytes()).hexdigest()
    assert manifest["output_files_sha256"]["model.safetensors"] == hashlib.sha256(
        (out / "model.safetensors").read_bytes()).hexdigest()
    groups = manifest["parameter_groups"]
    assert groups["projector"]["source"] == "new (this stage)"
    assert groups["vision"]["source"].startswith("ViT source") and groups["layers"]["source"].startswith("LLM source")
    assert groups["vision"]["files"] == ["model.safetensors"] and groups["projector"]["files"] == []
    total = sum(t.numel() for t in weights(out).values())
    assert manifest["parameters_per_module"]["total"] == total == sum(g["parameters"] for g in groups.values())
    assert manifest["library_versions"]["transformers"] == version("transformers")
    assert manifest["verification"]["copied_bit_exact"] == manifest["verification"]["tensors_checked"] - 5


# ---------------------------------------------------------------- output folder handling


def test_out_dir_must_be_new_or_empty(sources, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(InitVLMError, match="not an empty folder"):
        build_vlm(str(sources[0]), str(sources[1]), tmp_path / "busy", **QUIET)
    (tmp_path / "empty").mkdir()
    build_vlm(str(sources[0]), str(sources[1]), tmp_path / "empty", verify=False, **QUIET)
    assert (tmp_path / "empty" / "config.json").is_file()


def test_a_failed_verification_publishes_nothing(sources, tmp_path, monkeypatch):
    import init_vlm.build as b

    def broken(*_a, **_k):
        raise InitVLMError("verification of x failed: simulated")

    monkeypatch.setattr(b, "verify_output", broken)
    with pytest.raises(InitVLMError, match="simulated"):
        build_vlm(str(sources[0]), str(sources[1]), tmp_path / "out", **QUIET)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its hidden partial copy


def test_verification_catches_a_tampered_copy(sources, tmp_path, monkeypatch):
    import init_vlm.build as b
    import init_vlm.weights as w

    real = w.write_shards

    def tamper(plan, out_dir, *a, **k):
        digests = real(plan, out_dir, *a, **k)
        f = out_dir / "model.safetensors"
        tensors = load_file(f)
        tensors["model.norm.weight"][0] += 1
        save_file(tensors, f, metadata={"format": "pt"})
        return digests

    monkeypatch.setattr(b, "write_shards", tamper)
    with pytest.raises(InitVLMError, match="model.norm.weight differs from LLM source"):
        build_vlm(str(sources[0]), str(sources[1]), tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- bad inputs: one line naming the source


def copy_source(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def fails(vit, llm, tmp_path, *fragments) -> str:
    with pytest.raises(InitVLMError) as err:
        build_vlm(str(vit), str(llm), tmp_path / "out", **QUIET)
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert not (tmp_path / "out").exists()
    return msg


def test_vit_source_without_vision_weights(sources, tmp_path):
    vit = copy_source(sources[0], tmp_path / "vit_no_vision")
    tensors = {k: v for k, v in load_file(vit / "model.safetensors").items() if not k.startswith("visual.")}
    save_file(tensors, vit / "model.safetensors", metadata={"format": "pt"})
    fails(vit, sources[1], tmp_path, f"ViT source {vit}", "no vision weights")


def test_llm_source_given_as_vit_source(sources, tmp_path):
    fails(sources[1], sources[1], tmp_path, f"ViT source {sources[1]}", "'qwen2' is not a Qwen2.5-VL checkpoint")


def test_llm_that_is_not_qwen2_family(sources, tmp_path):
    llm = copy_source(sources[1], tmp_path / "llama")
    cfg = config(llm)
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (llm / "config.json").write_text(json.dumps(cfg))
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "'llama'", "not a Qwen2-family")


def test_vl_checkpoint_given_as_llm(sources, tmp_path):
    fails(sources[0], sources[0], tmp_path, f"LLM source {sources[0]}", "not a Qwen2-family")


def test_llm_config_and_weights_disagree(sources, tmp_path):
    llm = copy_source(sources[1], tmp_path / "llm_3_layers")
    cfg = config(llm)
    cfg.update(num_hidden_layers=3, layer_types=None)
    (llm / "config.json").write_text(json.dumps(cfg))
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "missing tensor model.layers.2.")


def test_llm_weights_of_another_size(sources, tmp_path):
    llm = copy_source(sources[1], tmp_path / "llm_wrong_width")
    cfg = config(llm)
    cfg.update(intermediate_size=96)
    (llm / "config.json").write_text(json.dumps(cfg))
    fails(sources[0], llm, tmp_path, f"LLM source {llm}",
          "tensor model.layers.0.mlp.down_proj.weight has shape [64, 128], its config implies [64, 96]")


def test_tokenizer_larger_than_embeddings(sources, tmp_path):
    llm = copy_source(sources[1], tmp_path / "llm_small_vocab")
    tensors = load_file(llm / "model.safetensors")
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"][:100].clone()
    save_file(tensors, llm / "model.safetensors", metadata={"format": "pt"})
    cfg = config(llm)
    cfg.update(vocab_size=100)
    (llm / "config.json").write_text(json.dumps(cfg))
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "tokenizer has", "only 100 rows")


def test_missing_config_and_missing_weights(sources, tmp_path):
    llm = copy_source(sources[1], tmp_path / "llm_no_config")
    (llm / "config.json").unlink()
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "no config.json")
    vit = copy_source(sources[0], tmp_path / "vit_no_weights")
    (vit / "model.safetensors").unlink()
    fails(vit, sources[1], tmp_path, f"ViT source {vit}", "no model.safetensors")


def test_index_names_a_missing_shard(sources, tmp_path):
    llm = copy_source(sources[1], tmp_path / "llm_index")
    names = list(load_file(llm / "model.safetensors"))
    index = {"metadata": {}, "weight_map": {n: "model-00001-of-00002.safetensors" for n in names}}
    (llm / "model.safetensors.index.json").write_text(json.dumps(index))
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "missing shard", "model-00001-of-00002.safetensors")


def test_corrupt_shard(sources, tmp_path):
    llm = copy_source(sources[1], tmp_path / "llm_truncated")
    shard = llm / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "corrupt or truncated")
    vit = copy_source(sources[0], tmp_path / "vit_garbage")
    (vit / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    fails(vit, sources[1], tmp_path, f"ViT source {vit}", "unreadable header")


def test_not_a_folder_nor_a_hub_id(tmp_path):
    with pytest.raises(InitVLMError, match="no such folder, and not a hub id"):
        resolve_source(str(tmp_path / "nowhere" / "deep" / "x"))


def test_hub_id_offline_names_the_id_and_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InitVLMError) as err:
        resolve_source("caprl-test/definitely-not-cached-model")
    msg = str(err.value)
    assert "caprl-test/definitely-not-cached-model" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg


def test_vit_source_with_extra_vision_tensors(sources, tmp_path):
    vit = copy_source(sources[0], tmp_path / "vit_deeper")
    tensors = load_file(vit / "model.safetensors")
    tensors["visual.blocks.2.norm1.weight"] = torch.ones(32)
    save_file(tensors, vit / "model.safetensors", metadata={"format": "pt"})
    fails(vit, sources[1], tmp_path, f"ViT source {vit}", "visual.blocks.2.norm1.weight")


def test_vit_source_without_video_processor_config(sources, tmp_path):
    """Older Qwen2.5-VL folders have only preprocessor_config.json: a video processor is derived from it."""
    from transformers import AutoProcessor, Qwen2VLImageProcessor

    vit = copy_source(sources[0], tmp_path / "vit_old_processor")
    image = AutoProcessor.from_pretrained(vit).image_processor
    (vit / "processor_config.json").unlink()
    Qwen2VLImageProcessor(size=dict(image.size)).save_pretrained(vit)
    build_vlm(str(vit), str(sources[1]), tmp_path / "out", **QUIET)
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert processor.video_processor.size["longest_edge"] == image.size["longest_edge"]
    assert processor.video_processor.merge_size == 2


@pytest.fixture
def shards_written(monkeypatch) -> list:
    """Records every call that writes output weights, so a test can show a check ran before any of them."""
    import init_vlm.build as b

    calls, real = [], b.write_shards

    def recording(plan, out_dir, *args, **kwargs):
        calls.append(out_dir)
        return real(plan, out_dir, *args, **kwargs)

    monkeypatch.setattr(b, "write_shards", recording)
    return calls


def test_llm_without_tokenizer(sources, tmp_path, shards_written):
    llm = copy_source(sources[1], tmp_path / "llm_no_tokenizer")
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (llm / f).unlink()
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "tokenizer cannot be loaded")
    assert shards_written == []


def test_vit_without_image_processor_fails_before_any_weight_is_written(sources, tmp_path, shards_written):
    vit = copy_source(sources[0], tmp_path / "vit_no_processor")
    (vit / "processor_config.json").unlink()
    assert not list(vit.glob("*preprocessor_config.json"))
    fails(vit, sources[1], tmp_path, f"ViT source {vit}", "no usable image processor")
    assert shards_written == []
