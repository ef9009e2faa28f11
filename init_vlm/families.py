"""The two model families this stage builds, and which one a pair of sources asks for.

Qwen2.5-VL: a Qwen2.5-VL checkpoint's ViT + a Qwen2/Qwen2.5 causal LM; projector `visual.merger`.
Qwen3-VL:   a Qwen3-VL checkpoint's ViT + a Qwen3 causal LM; projector `visual.merger` and the
            DeepStack mergers `visual.deepstack_merger_list.*` (each feeds one early LLM layer, so
            all of them are sized for the LLM's hidden size and all are new).

The family is read from the ViT source's config.json model_type; the LLM must be of the same
family, because each VL text decoder has its own layer layout: Qwen2.5-VL's attention has q/k/v
biases and no q/k norms, Qwen3-VL's has q/k RMSNorms, no biases and an explicit head_dim."""

from __future__ import annotations

from dataclasses import dataclass

from init_vlm.qwen_vocab import QWEN2_VL_CHAT_TEMPLATE
from init_vlm.sources import Checkpoint

# Qwen3-VL-Instruct renders no default system turn (unlike Qwen2-VL) and no <think> block, like
# LLaMA-Factory's qwen3_vl_nothink template: training and evaluation prompts then agree.
QWEN3_VL_CHAT_TEMPLATE = QWEN2_VL_CHAT_TEMPLATE.replace(
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}", "").replace(
    # lmms-eval's qwen3_vl model always sends a system message; an empty one (the backbone's
    # system_prompt "") renders as no system turn, as in LLaMA-Factory's qwen3_vl_nothink.
    "{% for message in messages %}",
    "{% for message in messages if not (message['role'] == 'system' and message['content'] == '') %}")


@dataclass(frozen=True)
class Family:
    name: str                    # as people write it
    vit_model_type: str          # config.json model_type of the ViT source
    llm_model_type: str          # config.json model_type of the LLM source
    llm_name: str
    llm_architecture: str
    vl_config: str               # transformers class names (imported late: transformers is slow to import)
    vl_model: str
    llm_config: str
    processor: str
    projector_root: str          # projector tensor names in the manifest are relative to this
    projector_prefixes: tuple[str, ...]   # runtime names of every new (projector) tensor
    text_fields: tuple[str, ...]  # text-config fields taken over from the LLM unchanged
    mrope_base: tuple[int, int, int]      # the family's own M-RoPE split of 64 frequencies (head_dim 128)
    mrope_interleaved: bool
    hub_layout: bool             # write Qwen2.5-VL's hub names (visual.*, model.*) instead of runtime names
    patch_size: int              # pixels per ViT patch side (x merge 2 = pixels per visual token side)
    lf_template: str             # LLaMA-Factory template name
    chat_template: str = ""

    @property
    def token_px(self) -> int:
        return self.patch_size * 2


_COMMON_TEXT = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps",
                "attention_dropout", "initializer_range", "use_cache")


def _qwen25():
    from init_vlm.qwen_vocab import QWEN2_VL_CHAT_TEMPLATE

    return Family(
        name="Qwen2.5-VL", vit_model_type="qwen2_5_vl", llm_model_type="qwen2", llm_name="Qwen2-family",
        llm_architecture="Qwen2ForCausalLM", vl_config="Qwen2_5_VLConfig",
        vl_model="Qwen2_5_VLForConditionalGeneration", llm_config="Qwen2Config", processor="Qwen2_5_VLProcessor",
        projector_root="model.visual.merger.", projector_prefixes=("model.visual.merger.",),
        text_fields=_COMMON_TEXT + ("use_sliding_window", "sliding_window", "max_window_layers", "bos_token_id",
                                    "eos_token_id"),
        mrope_base=(16, 24, 24), mrope_interleaved=False, hub_layout=True, patch_size=14, lf_template="qwen2_vl",
        chat_template=QWEN2_VL_CHAT_TEMPLATE)


def _qwen3():
    return Family(
        name="Qwen3-VL", vit_model_type="qwen3_vl", llm_model_type="qwen3", llm_name="Qwen3-family",
        llm_architecture="Qwen3ForCausalLM", vl_config="Qwen3VLConfig", vl_model="Qwen3VLForConditionalGeneration",
        llm_config="Qwen3Config", processor="Qwen3VLProcessor", projector_root="model.visual.",
        projector_prefixes=("model.visual.merger.", "model.visual.deepstack_merger_list."),
        # head_dim: Qwen3 sets it explicitly (128 even where hidden/heads is not, e.g. Qwen3-0.6B/4B/32B).
        text_fields=_COMMON_TEXT + ("head_dim", "attention_bias", "bos_token_id", "eos_token_id"),
        mrope_base=(24, 20, 20), mrope_interleaved=True, hub_layout=False, patch_size=16,
        lf_template="qwen3_vl_nothink", chat_template=QWEN3_VL_CHAT_TEMPLATE)


def families() -> dict[str, Family]:
    """ViT-source model_type -> family."""
    return {f.vit_model_type: f for f in (_qwen25(), _qwen3())}


def family_of_model_type(model_type: str) -> Family | None:
    """The family of an output (or ViT source) config's model_type, None for another model."""
    return families().get(model_type)


def detect_family(vit: Checkpoint, llm: Checkpoint) -> Family:
    """The family both sources belong to; refuses a ViT of one family with an LLM of the other."""
    fams = families()
    vit_type, llm_type = vit.read_config().get("model_type"), llm.read_config().get("model_type")
    family = fams.get(vit_type)
    if family is None or "vision_config" not in vit.read_config():
        known = " or ".join(f"{f.vit_model_type} ({f.name})" for f in fams.values())
        raise vit.fail(f"config.json model_type {vit_type!r} is not a Qwen2.5-VL checkpoint, nor a Qwen3-VL one "
                       f"(expected {known}, with a vision_config)")
    if llm_type == family.llm_model_type:
        return family
    other = next((f for f in fams.values() if f.llm_model_type == llm_type), None)
    if other is None:
        raise llm.fail(f"config.json model_type {llm_type!r} is not a {family.llm_name} causal LM (expected "
                       f"model_type {family.llm_model_type}, {family.llm_architecture}, to pair with the "
                       f"{family.name} ViT source)")
    raise llm.fail(f"config.json model_type {llm_type!r} is a {other.llm_name} LM, but the ViT source "
                   f"{vit.source} is a {family.name} checkpoint ({vit_type}); {family.name}'s text decoder "
                   f"has the {family.llm_name} layer layout ({_layout(family)}), so a {other.llm_name} LM's "
                   f"weights do not fit it. Pair a {family.name} ViT with a {family.llm_name} LM, or a "
                   f"{other.name} ViT with this LM")


def _layout(family: Family) -> str:
    if family.vit_model_type == "qwen3_vl":
        return "q/k RMSNorms, no q/k/v biases"
    return "q/k/v biases, no q/k norms"
