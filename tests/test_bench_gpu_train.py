"""benchmarks/bench_gpu_train.py runs end to end on CPU with the tiny shape: init_vlm, data_prep,
the train stage kind and raw llamafactory-cli on the YAML it wrote, unpacked and packed, DeepSpeed
ZeRO-2 (gloo, one process). Slow: four real LLaMA-Factory runs (~3.5 min on 2 shared cores).
Run: .venv/bin/python -m pytest tests/test_bench_gpu_train.py -q -m slow"""

from __future__ import annotations

import sys

import pytest
import yaml

from tests.conftest import REPO


@pytest.mark.slow
def test_bench_gpu_train_tiny(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_gpu_train

    results = bench_gpu_train.main(["--tiny", "--no-warmup", "--workers", "1", "--workdir", str(tmp_path)])
    for mode in ("unpacked", "packed"):
        for runner in ("harness", "raw"):
            r = results[mode][runner]
            assert r["runtime"] > 0 and r["tokens_per_s"] > 0
            assert r["mfu"] is None   # no GPU here: never a made-up figure
        runs = tmp_path / "tiny" / "runs"
        harness = yaml.safe_load((runs / f"{mode}-harness" / "llamafactory.yaml").read_text())
        raw = yaml.safe_load((runs / f"{mode}-raw" / "llamafactory.yaml").read_text())
        assert {k for k in harness if harness[k] != raw.get(k)} == {"output_dir"}
        assert harness["deepspeed"].endswith("deepspeed_zero2.json")
        assert harness.get("neat_packing", False) == (mode == "packed")
