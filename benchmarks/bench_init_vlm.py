"""Memory and time of init_vlm against the notebook's way (both source models loaded whole).

    .venv/bin/python benchmarks/bench_init_vlm.py --work /tmp/bench_init_vlm            # 3B shapes, ~5-10 min
    .venv/bin/python benchmarks/bench_init_vlm.py --work /tmp/bench_small --shape small  # 0.5B text, ~1 min
    .venv/bin/python benchmarks/bench_init_vlm.py --work /tmp/bench_q3 --shape qwen3vl-4b     # VL-4B ViT + Qwen3-4B
    .venv/bin/python benchmarks/bench_init_vlm.py --work /tmp/bench_q3s --shape qwen3vl-small # + Qwen3-0.6B text

Builds random-weight bf16 sources on disk tensor by tensor (Qwen2.5-VL-3B vision + text config as the
ViT source, Qwen2.5-3B as the LLM source; never a model in memory), then measures, each in a fresh
subprocess: (a) build_vlm with verification, (b) from_pretrained of both sources, held together.
The qwen3vl-* shapes do the same with Qwen3-VL-4B's vision config (DeepStack mergers, 16-px patches)
and a Qwen3-4B / Qwen3-0.6B-shaped LLM. `--sides init_vlm` skips (b) where memory is short.
Peak RSS is the kernel's high-water mark (ru_maxrss) of that subprocess. Target: (a) <= 1.3x the output
weights, and below (b)."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

GiB = 2**30
VISION_3B = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3, patch_size=14,
                 spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, window_size=112,
                 out_hidden_size=2048, fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu")
TEXT = {
    "3b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
               num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
               rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True),
    "small": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True),
}
# Qwen3-VL-4B-Instruct's vision_config and Qwen3 text shapes (tests/data/init_vlm/*.config.json).
VISION_Q3VL_4B = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, in_channels=3, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2560, num_position_embeddings=2304,
                      deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh")
TEXT_Q3 = {
    "qwen3vl-4b": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                       tie_word_embeddings=True),
    "qwen3vl-small": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                          num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                          rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                          tie_word_embeddings=True),
}
SHARD_BYTES = 4 * 10**9


# ------------------------------------------------------------------ building the sources


def build_sources(work: Path, shape: str) -> tuple[Path, Path]:
    from embedded.tiny_models import build_tiny_processor, build_tiny_qwen3vl_processor, tiny_corpus
    from embedded.tokenizer import train_tokenizer
    from transformers import AutoTokenizer

    tok_dir = train_tokenizer(tiny_corpus(), work / "tokenizer", vocab_size=512)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = dict(bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    token_ids = {f: tok.convert_tokens_to_ids(t) for f, t in (("image_token_id", "<|image_pad|>"),
                 ("video_token_id", "<|video_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
                 ("vision_end_token_id", "<|vision_end|>"))}
    qwen3 = shape in TEXT_Q3
    vit_cfg, llm_cfg, archs = (_qwen3_configs if qwen3 else _qwen25_configs)(shape, ids, token_ids)
    vit, llm = work / "vit_source", work / "llm_source"
    for folder, cfg, arch in ((vit, vit_cfg, archs[0]), (llm, llm_cfg, archs[1])):
        folder.mkdir(parents=True, exist_ok=True)
        cfg.architectures, cfg.dtype = [arch], "bfloat16"
        cfg.save_pretrained(folder)
        tok.save_pretrained(folder)
        write_random_weights(folder, cfg, arch, hub_layout=not qwen3)
    (build_tiny_qwen3vl_processor if qwen3 else build_tiny_processor)(tok).save_pretrained(vit)
    return vit, llm


def _qwen25_configs(shape: str, ids: dict, token_ids: dict):
    from transformers import Qwen2_5_VLConfig, Qwen2Config

    text = dict(TEXT[shape], **ids)
    vision = dict(VISION_3B, out_hidden_size=text["hidden_size"])
    vl_text = dict(text, rope_parameters=dict(text["rope_parameters"], mrope_section=[16, 24, 24]))
    vit_cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=vl_text, tie_word_embeddings=True, **token_ids)
    return vit_cfg, Qwen2Config(**text), ("Qwen2_5_VLForConditionalGeneration", "Qwen2ForCausalLM")


def _qwen3_configs(shape: str, ids: dict, token_ids: dict):
    from transformers import Qwen3Config, Qwen3VLConfig

    text = dict(TEXT_Q3[shape], **ids)
    vision = dict(VISION_Q3VL_4B, out_hidden_size=text["hidden_size"])
    vl_text = dict(text, rope_parameters=dict(text["rope_parameters"], mrope_section=[24, 20, 20],
                                              mrope_interleaved=True))
    vit_cfg = Qwen3VLConfig(vision_config=vision, text_config=vl_text, tie_word_embeddings=True, **token_ids)
    return vit_cfg, Qwen3Config(**text), ("Qwen3VLForConditionalGeneration", "Qwen3ForCausalLM")


def write_random_weights(folder: Path, cfg, arch: str, hub_layout: bool = True) -> None:
    """Random bf16 shards written tensor by tensor from the meta-device model's names and shapes."""
    import torch
    import transformers

    from init_vlm.safetensors_io import ShardWriter
    from init_vlm.weights import disk_name

    with torch.device("meta"):
        model = getattr(transformers, arch)(cfg)
    # Qwen2.5-VL checkpoints are published in the hub layout (visual.*, model.*), Qwen3-VL in runtime names.
    specs = [(disk_name(n) if hub_layout else n, "BF16", tuple(t.shape)) for n, t in sorted(model.state_dict().items())
             if not (cfg.tie_word_embeddings and n == "lm_head.weight")]
    shards, size = [[]], 0
    for spec in specs:
        nbytes = 2 * _numel(spec[2])
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    gen = torch.Generator().manual_seed(0)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        writer = ShardWriter(folder / name, shard, {"format": "pt"})
        for tname, _, shape in shard:
            writer.write_tensor(tname, _random(shape, gen))
            weight_map[tname] = name
        writer.close()
    index = {"metadata": {"total_size": sum(2 * _numel(s) for _, _, s in specs)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _random(shape, gen):
    import torch

    t = torch.empty(shape, dtype=torch.bfloat16)
    flat = t.view(-1)
    step = 1 << 24  # draw in float32 blocks so the transient stays small for the 300M-row embedding
    for start in range(0, flat.numel(), step):
        block = flat[start:start + step]
        block.copy_(torch.randn(block.numel(), generator=gen).mul_(0.02))
    return t


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ------------------------------------------------------------------ the two measured sides (run in subprocesses)


def side_init_vlm(vit: str, llm: str, out: str) -> dict:
    from init_vlm import build_vlm

    manifest = build_vlm(vit, llm, Path(out), log=lambda m: print(f"  {m}", flush=True))
    return {"verified": manifest["verification"]["copied_bit_exact"]}


def side_notebook(vit: str, llm: str, out: str) -> dict:
    """The ScaleCap notebook's steps, in the transformers 5 layout: load both whole, swap, new merger, save."""
    import json as _json

    import torch
    import transformers

    qwen3 = _json.loads((Path(vit) / "config.json").read_text())["model_type"] == "qwen3_vl"
    vl_cls, lm_cls = (("Qwen3VLForConditionalGeneration", "Qwen3ForCausalLM") if qwen3
                      else ("Qwen2_5_VLForConditionalGeneration", "Qwen2ForCausalLM"))
    vl = getattr(transformers, vl_cls).from_pretrained(vit, dtype=torch.bfloat16)
    lm = getattr(transformers, lm_cls).from_pretrained(llm, dtype=torch.bfloat16)
    vl.model.language_model.load_state_dict(lm.model.state_dict())
    visual = vl.model.visual
    mergers = [visual.merger, *visual.deepstack_merger_list] if qwen3 else [visual.merger]
    for merger in mergers:
        layers = (merger.linear_fc1, merger.linear_fc2) if qwen3 else (merger.mlp[0], merger.mlp[2])
        for layer in layers:
            layer.reset_parameters()  # PyTorch default init, as the notebook's fresh nn.Linear layers get
    vl.save_pretrained(Path(out).with_name("vlm_notebook"))
    return {"parameters_held": sum(p.numel() for p in vl.parameters()) + sum(p.numel() for p in lm.parameters())}


def measure(side: str, vit: Path, llm: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--side", side, str(vit), str(llm), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_side(side: str, vit: str, llm: str, out: str) -> None:
    start = time.perf_counter()
    extra = {"init_vlm": side_init_vlm, "notebook": side_notebook}[side](vit, llm, out)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"side": side, "wall_s": round(wall, 1), "peak_rss_bytes": peak, **extra}))


# ------------------------------------------------------------------ main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        run_side(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_init_vlm"))
    parser.add_argument("--shape", choices=sorted(TEXT) + sorted(TEXT_Q3), default="3b")
    parser.add_argument("--sides", choices=["both", "init_vlm"], default="both",
                        help="init_vlm: skip loading both sources whole (needs ~2x the output in memory)")
    parser.add_argument("--keep", action="store_true", help="keep the sources and output on disk")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    t0 = time.perf_counter()
    vit, llm = build_sources(args.work, args.shape)
    print(f"sources built in {time.perf_counter() - t0:.0f} s: ViT {_gib(vit)} GiB, LLM {_gib(llm)} GiB", flush=True)
    out = args.work / "vlm"
    ours = measure("init_vlm", vit, llm, out)
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    base = measure("notebook", vit, llm, out) if args.sides == "both" else None
    report(args.shape, weights, ours, base)
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


def report(shape: str, weights: int, ours: dict, base: dict | None) -> None:
    rows = [("init_vlm (stream + verify)", ours)] + ([("notebook (both models whole)", base)] if base else [])
    print(f"\nshape {shape}: output weights {weights / GiB:.2f} GiB (bf16)")
    print(f"{'':32} {'wall s':>8} {'peak RSS GiB':>13} {'x output':>9}")
    for name, r in rows:
        print(f"{name:32} {r['wall_s']:>8.1f} {r['peak_rss_bytes'] / GiB:>13.2f} {r['peak_rss_bytes'] / weights:>9.2f}")
    within = ours["peak_rss_bytes"] <= 1.3 * weights
    if base is None:
        print(f"target (<= 1.3x output): {'met' if within else 'NOT met'} (notebook side not measured)")
        return
    ratio = ours["peak_rss_bytes"] / base["peak_rss_bytes"]
    print(f"init_vlm / notebook peak RSS: {ratio:.2f}   target (<= 1.3x output, below notebook): "
          f"{'met' if within and ratio < 1 else 'NOT met'}")


def _gib(folder: Path) -> str:
    return f"{sum(p.stat().st_size for p in folder.glob('*.safetensors')) / GiB:.2f}"


if __name__ == "__main__":
    main()
