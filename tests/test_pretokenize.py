"""Sharded pretokenization (train/pretokenize.py) gives exactly what LLaMA-Factory's own
single-process get_dataset saves at tokenized_path: every column (input_ids, attention_mask,
labels, images in order; packing columns when packed), row for row, and LLaMA-Factory loads it.

The embedded world's tiny model and caption data; preprocessing_batch_size 16 so that 48 rows
make 3 preprocessing batches: packed parts cut between them (4 parts: one is empty), unpacked
parts anywhere. ~1.5 min (LLaMA-Factory
imports, forked workers).
Run: .venv/bin/python -m pytest tests/test_pretokenize.py -q"""

from __future__ import annotations

import os

import pytest

from tests.test_train_packing import CUTOFF, world  # noqa: F401  (the embedded world fixture)
from train.recipe import LF_IMAGE_PIXELS

BATCH = 16


def lf_yaml(model, data, packing: bool) -> dict:
    y = {"model_name_or_path": str(model), "template": "qwen2_vl", "cutoff_len": CUTOFF, "dataset_dir": str(data),
         "dataset": "synthetic_dense", "media_dir": str(data), **LF_IMAGE_PIXELS, "preprocessing_batch_size": BATCH,
         "preprocessing_num_workers": 4, "learning_rate": 1e-3, "bf16": True, "deepspeed": "/nowhere.json"}
    return {**y, "packing": True, "neat_packing": True} if packing else y


def llamafactory_saved(args: dict, path) -> object:
    """What LLaMA-Factory's get_dataset saves at tokenized_path, in one process."""
    from datasets import load_from_disk
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, *_ = get_train_args({**args, "tokenized_path": str(path)})
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    return load_from_disk(str(path))


# packed, 4 parts over 3 preprocessing batches: one part gets no rows
@pytest.mark.slow   # real LLaMA-Factory preprocessing on a small embedded world built by the harness
@pytest.mark.parametrize("packing,parts", [(False, 2), (True, 4)], ids=["unpacked-2-parts", "packed-4-parts"])
def test_joined_parts_equal_llamafactory_single_process(world, tmp_path, packing, parts):  # noqa: F811
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from train.pretokenize import tokenize, tokenize_args

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args = tokenize_args(lf_yaml(*world, packing), tmp_path / "work")
    assert "learning_rate" not in args and "deepspeed" not in args and "preprocessing_num_workers" not in args
    summary = tokenize(args, tmp_path / "joined", parts=parts)
    reference = llamafactory_saved(args, tmp_path / "lf")
    from datasets import load_from_disk

    joined = load_from_disk(str(tmp_path / "joined"))
    assert list(joined) == list(reference) == ["train"]
    ours, theirs = joined["train"], reference["train"]
    assert ours.column_names == theirs.column_names
    assert {"input_ids", "attention_mask", "labels", "images"} <= set(ours.column_names)
    assert len(ours) == len(theirs) == summary["rows_out"]
    assert summary["rows_in"] == 48 and (len(ours) < 48) == packing
    for column in ours.column_names:
        assert ours[column] == theirs[column], column
    # and LLaMA-Factory trains from it: get_dataset loads the joined folder through tokenized_path
    model_args, data_args, training_args, *_ = get_train_args({**args, "tokenized_path": str(tmp_path / "joined")})
    tok = load_tokenizer(model_args)
    module = get_dataset(get_template_and_fix_tokenizer(tok["tokenizer"], data_args), model_args, data_args,
                         training_args, stage="sft", **tok)
    assert module["train_dataset"]["input_ids"] == theirs["input_ids"]


def test_chain_tokenizes_before_training_only_when_asked(results_dir):
    from harness.chain import build_chain
    from harness.config import compose_config, to_plain
    from harness.stage import chain_fingerprints

    plain = build_chain(to_plain(compose_config([])))
    assert not [s for s in plain if s.kind == "tokenize"]
    chain = build_chain(to_plain(compose_config(["train.common.pretokenize=4"])))
    names = [s.name for s in chain]
    for stage in ("alignment", "further_pretrain", "sft"):
        assert names.index(f"tokenize.{stage}") < names.index("train.alignment")
        train = next(s for s in chain if s.name == f"train.{stage}")
        assert train.inputs["tokenized"] == f"tokenize.{stage}"
    tok = next(s for s in chain if s.name == "tokenize.sft")
    assert tok.inputs == {"model": "init_vlm", "data": "data_prep.sft_data"} and tok.settings["parts"] == 4
    # the process count is run-only: any count gives the same rows
    other = chain_fingerprints(build_chain(to_plain(compose_config(["train.common.pretokenize=2"]))))
    assert other == chain_fingerprints(chain)
    # and pretokenizing at all is: training reads the same rows either way, so a stage trained
    # without it stays done with it
    trained = {k: v for k, v in chain_fingerprints(chain).items() if not k.startswith("tokenize.")}
    assert trained == chain_fingerprints(plain)


def test_where_the_parts_run_is_run_only_and_checked(results_dir):
    """tokenize=slurm changes no fingerprint (the SLURM array writes the same rows:
    tests/test_pretokenize_slurm.py); its sbatch keys reach the stage as settings; a bad value is
    named before any work."""
    from harness.chain import build_chain
    from harness.config import BadOverride, compose_config, to_plain, validate_overrides
    from harness.stage import chain_fingerprints

    local = build_chain(to_plain(compose_config(["train.common.pretokenize=4"])))
    slurm = build_chain(to_plain(compose_config(["train.common.pretokenize=4", "tokenize=slurm",
                                                 "tokenize.partition=cpu", "tokenize.max_parallel=2"])))
    assert chain_fingerprints(slurm) == chain_fingerprints(local)
    tok = next(s for s in slurm if s.name == "tokenize.sft")
    assert tok.resumable and tok.settings["where"] == {"name": "slurm", "partition": "cpu", "cpus_per_task": 2,
                                                      "mem_gb": 16, "timeout_min": 240, "max_parallel": 2}
    assert tok.summary.endswith(", 4 SLURM array tasks")
    assert next(s for s in local if s.name == "tokenize.sft").settings["where"] == {"name": "local"}
    nodes = build_chain(to_plain(compose_config(["train.common.pretokenize=4", "tokenize=nodes",
                                                 "launcher=multinode", "launcher.nnodes=2"])))
    on_nodes = next(s for s in nodes if s.name == "tokenize.sft")
    assert on_nodes.every_node and not tok.every_node and on_nodes.summary.endswith(", 4 parts over 2 nodes")
    assert {s.name: fp for s, fp in zip(nodes, chain_fingerprints(nodes).values()) if s.kind == "tokenize"} == \
        {s.name: fp for s, fp in zip(local, chain_fingerprints(local).values()) if s.kind == "tokenize"}
    with pytest.raises(BadOverride, match=r"tokenize.mem_gb: 0; a number above 0"):
        validate_overrides(["train.common.pretokenize=4", "tokenize=slurm", "tokenize.mem_gb=0"])
    with pytest.raises(BadOverride, match=r"tokenize.gpus_per_node: unknown key; did you mean cpus_per_task\? valid keys: cpus_per_task, "):
        validate_overrides(["tokenize=slurm", "+tokenize.gpus_per_node=1"])   # tokenizing asks for no GPU


def test_sbatch_asks_for_cpus_memory_and_time_never_gpus():
    from train.pretokenize_slurm import sbatch_parameters

    on = {"name": "slurm", "partition": None, "cpus_per_task": 2, "mem_gb": 16, "timeout_min": 240, "max_parallel": None}
    assert sbatch_parameters(on, 64) == {"job_name": "tokenize", "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": 2,
                                         "mem": "16GB", "time": 240, "array_parallelism": 64}
    assert sbatch_parameters({**on, "partition": "cpu", "mem_gb": 1.5, "max_parallel": 8}, 64) == {
        "job_name": "tokenize", "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": 2, "mem": "1536MB", "time": 240,
        "array_parallelism": 8, "partition": "cpu"}


def test_a_part_counts_only_once_renamed_into_place(tmp_path):
    """What a killed part leaves (its temporary folder, even with files in it) is not a part;
    a part of another count is not one of this count's."""
    from train.pretokenize import PART_INFO, _publish, missing_parts, part_dir

    shards = tmp_path / "dataset.parts"
    half = shards / ".part-00001-of-00003.vm-123"
    half.mkdir(parents=True)
    (half / PART_INFO).write_text("{}")
    other = part_dir(shards, 0, 2)
    other.mkdir()
    (other / PART_INFO).write_text("{}")
    assert missing_parts(shards, 3) == [0, 1, 2]
    whole = shards / ".part-00000-of-00003.vm-124"
    whole.mkdir()
    (whole / PART_INFO).write_text("{}")
    _publish(whole, part_dir(shards, 0, 3))
    assert missing_parts(shards, 3) == [1, 2] and not whole.exists()
    again = shards / ".part-00000-of-00003.vm-125"   # a second attempt at a part already there
    again.mkdir()
    (again / "x").write_text("")
    _publish(again, part_dir(shards, 0, 3))
    assert not again.exists() and sorted(p.name for p in part_dir(shards, 0, 3).iterdir()) == [PART_INFO]


def test_node_0_waits_for_the_other_nodes_parts_bounded(tmp_path):
    from train.pretokenize import wait_for_parts

    lines: list[str] = []
    with pytest.raises(TimeoutError) as err:
        wait_for_parts(tmp_path / "dataset.parts", 4, 0.2, 2, lines.append, poll_s=0.05)
    assert lines == ["waiting for parts [0, 1, 2, 3] from nodes [0, 1]"]
    assert str(err.value) == (f"tokenized parts [0, 1, 2, 3] of 4 (nodes [0, 1]) did not appear under "
                              f"{tmp_path / 'dataset.parts'} within 0.2 s; re-run every node with the same "
                              "command: only the missing parts are redone")


@pytest.mark.slow   # real LLaMA-Factory preprocessing in forked parts
def test_each_part_records_a_thread_budget_that_fits_the_cores(world, tmp_path, monkeypatch):  # noqa: F811
    """More parts than cores: no more processes run at once than there are cores, and each part's
    recorded threads x processes never exceed the cores it was given."""
    import json

    from stagekit.threads import CEILING_VAR, cores_given
    from train.pretokenize import PART_INFO, part_dir, run_forked, tokenize_args

    monkeypatch.delenv(CEILING_VAR, raising=False)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args = tokenize_args(lf_yaml(*world, False), tmp_path / "work")
    parts = cores_given() + 1
    shards = tmp_path / "parts"
    shards.mkdir()
    run_forked(args, shards, list(range(parts)), parts)
    infos = [json.loads((part_dir(shards, p, parts) / PART_INFO).read_text()) for p in range(parts)]
    for info in infos:
        assert info["cores"] == cores_given() and info["processes"] == min(parts, cores_given())
        assert info["threads"] >= 1 and info["threads"] * info["processes"] <= info["cores"]
    assert sum(i["rows_in"] for i in infos) == 48


# Image sizes a caption source holds: photos over the pixel budget, small and odd sizes, long thin
# ones (the real processor is the reference; LLaMA-Factory has already enlarged anything under
# 28 px and cut aspect ratios over 200 before the processor sees them).
SIZES = [(2000, 1500), (1500, 2000), (1231, 917), (640, 480), (224, 224), (100, 100), (28, 28),
         (29, 57), (1001, 999), (3001, 57), (57, 3001), (5600, 28), (300, 7000)]
# (patch_size, pixel budget): Qwen2.5-VL's 14 px patches, Qwen3-VL's 16 px, at budgets both small and large
FAMILIES = [(14, 3136, 12544), (14, 3136, 1003520), (16, 4096, 16384), (16, 65536, 1048576)]


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
@pytest.mark.parametrize("patch,min_pixels,max_pixels", FAMILIES)
def test_the_grid_without_the_pixels_equals_the_image_processors_own(backend, patch, min_pixels, max_pixels):
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from train.pretokenize import GridOnlyImages

    cls = Qwen2VLImageProcessor if backend == "torchvision" else Qwen2VLImageProcessorPil
    real = cls(patch_size=patch, merge_size=2, size={"shortest_edge": min_pixels, "longest_edge": max_pixels})
    images = [Image.new("RGB", size, (120, 30, 200)) for size in SIZES]
    expected = real(images, return_tensors="pt")["image_grid_thw"].tolist()
    grid = GridOnlyImages(real)
    got = [grid([image])["image_grid_thw"].tolist()[0] for image in images]   # one row's image at a time
    assert got == expected
    assert grid(images)["image_grid_thw"].tolist() == expected                # and several in one row
    assert grid.merge_size == 2 and grid.patch_size == patch                  # what LLaMA-Factory reads from it


def test_the_grid_only_processor_fails_on_a_broken_image_and_on_a_changed_count(tmp_path, monkeypatch):
    import io

    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from train.pretokenize import GridOnlyImages

    real = Qwen2VLImageProcessor(patch_size=14, merge_size=2, size={"shortest_edge": 3136, "longest_edge": 12544})
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (1, 2, 3)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:2000])     # a download cut off mid-file
    # PIL's default, as in a tokenizing part; lmms-eval turns it off for the whole process when
    # imported, which another test in this worker may have done
    monkeypatch.setattr("PIL.ImageFile.LOAD_TRUNCATED_IMAGES", False)
    with pytest.raises(OSError, match=r"cut\.jpg: .*truncated"):   # names the file, which PIL does not
        GridOnlyImages(real)([Image.open(tmp_path / "cut.jpg")])

    grid = GridOnlyImages(real)   # a transformers release whose resize no longer follows smart_resize
    monkeypatch.setattr(grid, "smart_resize", lambda h, w, **_: (h // 28 * 28, w // 28 * 28))
    with pytest.raises(RuntimeError, match=r"the image token count of Qwen2VLImageProcessor changed: \[\[1, 34, 44\]\] here"):
        grid([Image.new("RGB", (640, 480))])
