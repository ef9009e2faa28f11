"""captioner.slurm without a cluster: the stable split of image keys into shards, what each array
task asks SLURM for, joining the parts' journals, and the config errors. The array itself runs on
the local SLURM cluster in test_recaption_slurm.py."""

from __future__ import annotations

import json

import pytest

from recaption.endpoint import EndpointConfigError, parse_endpoint
from recaption.slurm import join, part_dir, sbatch_parameters, split


def test_the_split_is_stable_crc32_of_the_key():
    # crc32 % 4: train/00000.png 0, bench/00000.png 2, a.png 3 (worked out once, by hand, with zlib)
    assert split(["train/00000.png", "bench/00000.png", "a.png", "train/00001.png"], 4) == [
        ["train/00000.png", "train/00001.png"], [], ["bench/00000.png"], ["a.png"]]
    assert split(["a.png", "train/00000.png"], 2) == [["train/00000.png"], ["a.png"]]


def test_each_task_asks_for_its_gpus_cpus_memory_and_time():
    slurm = {"shards": 8, "partition": "gpu", "gpus_per_task": 1, "cpus_per_task": 8, "mem_gb": 64,
             "timeout_min": 1440, "max_parallel": 4}
    assert sbatch_parameters(slurm, 8) == {"job_name": "recaption", "nodes": 1, "ntasks_per_node": 1,
                                           "cpus_per_task": 8, "mem": "64GB", "time": 1440,
                                           "array_parallelism": 4, "gpus_per_node": 1, "partition": "gpu"}
    cpu = {**slurm, "partition": None, "gpus_per_task": 0, "mem_gb": 2.5, "max_parallel": None}
    assert sbatch_parameters(cpu, 3) == {"job_name": "recaption", "nodes": 1, "ntasks_per_node": 1,
                                         "cpus_per_task": 8, "mem": "2560MB", "time": 1440, "array_parallelism": 3}


def test_the_parts_are_joined_into_the_stage_journal_a_torn_line_cut(tmp_path):
    for i, text in enumerate(['{"key": "a", "texts": ["x"]}\n', '{"key": "b", "texts": ["y"]}\n{"key": "c", "te']):
        part_dir(tmp_path, i).mkdir(parents=True)
        (part_dir(tmp_path, i) / "journal.jsonl").write_text(text)
    assert join(tmp_path, 3) == 2                                        # part 2 never started
    assert [json.loads(x)["key"] for x in (tmp_path / "journal.jsonl").read_text().splitlines()] == ["a", "b"]


def test_slurm_config_errors_name_the_key():
    base = {"name": "x", "model": "m"}
    with pytest.raises(EndpointConfigError, match=r"captioner.slurm: every array task serves its own replica; "
                                                  r"set captioner.serve"):
        parse_endpoint({**base, "base_url": "http://a/v1", "slurm": {"shards": 2}})
    with pytest.raises(EndpointConfigError, match=r"captioner.slurm: unknown keys gpus; valid keys: shards, "):
        parse_endpoint({**base, "serve": {"model_dir": "/m"}, "slurm": {"gpus": 2}})
    ep = parse_endpoint({**base, "serve": {"model_dir": "/m"}, "slurm": {"shards": 16}})
    assert (ep.slurm["shards"], ep.slurm["gpus_per_task"], ep.slurm["max_requeues"]) == (16, 1, 3)
