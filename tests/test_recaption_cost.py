"""What `plan` says a captioning stage will cost (recaption/cost.py), on numbers worked by hand."""

from __future__ import annotations

from recaption.cost import cost_line, recaption_cost
from stagekit.plan import PlanView


def test_wall_clock_and_gpu_hours_from_the_throughput_of_one_replica():
    four = {"endpoints": ["http://a/v1", "http://b/v1", "http://c/v1", "http://d/v1"], "throughput_per_replica": 2.5,
            "gpus_per_replica": 1}
    # 1,000,000 / (4 x 2.5) = 100,000 s = 27.8 h; x 4 GPUs = 111.1 GPU-hours
    assert cost_line("captioner", 1_000_000, "in list.txt", 1, four, "images") == (
        "cost: 1,000,000 images (in list.txt), 1,000,000 completions; 4 replicas x 2.5/s -> 27.8 h wall-clock, "
        "111.1 GPU-hours (4 GPUs; estimate)")
    # Prism: 1,000 images x 4 samples = 4,000 completions / (2 x 4/s) = 500 s = 0.139 h; 2 replicas x 2 GPUs
    served = {"serve": {"replicas": 2}, "throughput_per_replica": 4, "gpus_per_replica": 2}
    assert cost_line("captioner", 1_000, "in the Prism files", 4, served, "images") == (
        "cost: 1,000 images (in the Prism files), 4,000 completions (1,000 x 4 samples); 2 replicas x 4/s -> "
        "0.139 h wall-clock, 0.556 GPU-hours (4 GPUs; estimate)")


def test_without_a_throughput_plan_says_which_key_to_set(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\nb.png\n# a comment\nc.png\n")
    view = PlanView(name="recaption", config={"image_list": str(listing), "image_root": str(tmp_path)},
                    settings={"captioner": {"base_url": "http://a/v1", "throughput_per_replica": None}},
                    out_dir=tmp_path / "out", inputs={}, run_cfg={}, redo="not done")
    assert recaption_cost(view) == [(
        f"cost: 3 images (in {listing}), 3 completions; 1 replica; set captioner.throughput_per_replica "
        "(completions/s one replica sustains, measured: benchmarks/bench_recaption.py) for wall-clock and GPU-hours")]


def test_plan_shows_the_recaption_cost_for_the_configured_replicas(results_dir):
    from harness.config import compose_config, to_plain
    from harness.plan import render_plan

    cfg = to_plain(compose_config(["captions=recaptioned_synthetic", "captions.recaption.images.subset_size=720000",
                                   "captioner=caprl_3b", "captioner.base_url=null",
                                   "captioner.endpoints=[http://a:8000/v1,http://b:8000/v1]",
                                   "captioner.throughput_per_replica=2", "captioner.gpus_per_replica=2"]))
    lines = render_plan(cfg).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("6. recaption [to do]"))
    # 720,000 / (2 x 2/s) = 180,000 s = 50 h; x 2 replicas x 2 GPUs = 200 GPU-hours
    assert lines[at + 3] == ("   cost: 720,000 images (at most: the source's subset_size), 720,000 completions; "
                             "2 replicas x 2/s -> 50.0 h wall-clock, 200.0 GPU-hours (4 GPUs; estimate)")
