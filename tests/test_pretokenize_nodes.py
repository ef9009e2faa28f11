"""tokenize=nodes for real: two harness processes as node 0 and node 1 of launcher=multinode on
one machine (tests/test_multinode.py's loopback pair); each tokenizes its share of the parts, node
0 joins. The joined dataset equals the one local processes write from the same rows, Arrow file
for Arrow file, byte for byte, under the same fingerprint. ~3 min.
Run: .venv/bin/python -m pytest tests/test_pretokenize_nodes.py -q"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import SMALL_WORLD, read_status, run_harness
from tests.test_multinode import nodes, start_both, two_nodes, wait_all  # noqa: F401  (nodes: a fixture)
from tests.test_pretokenize_slurm import arrow_files

pytestmark = pytest.mark.slow
# The small embedded world (48 captions): what is checked is where the parts run, not what they hold.
TOKENIZE = ["train.common.pretokenize=2", "until=tokenize.alignment", *SMALL_WORLD]


def test_two_nodes_tokenize_a_part_each_and_node_0_joins(shared_results, tmp_path, nodes):  # noqa: F811
    results = shared_results
    # forced: another test of the session may have tokenized the same rows already (one fingerprint)
    procs = start_both(results, [*two_nodes(29761), *TOKENIZE, "tokenize=nodes", "force=[tokenize.alignment]"],
                       "tokenize")
    nodes += procs
    assert wait_all(procs) == [0, 0], (results.parent / "tokenize.node0.out").read_text()[-4000:]
    run_dir = results / "runs" / "embedded" / "tiny-synthetic_dense"
    lead = (run_dir / "logs" / "tokenize.alignment.log").read_text()
    follow = (run_dir / "logs" / "tokenize.alignment.node1.log").read_text()
    assert "node 0 of 2: parts [0] of 2, one process each" in lead
    assert "tokenized 48 rows into 48 in 2 parts over 2 nodes" in lead
    assert re.search(r"joining tokenize.alignment as a follower node \((not done|forced)\)", follow)
    assert "node 1 of 2: parts [1] of 2, one process each" in follow
    node1 = json.loads((run_dir / "status.node1.json").read_text())
    assert node1["stages"]["tokenize.alignment"] == {**node1["stages"]["tokenize.alignment"], "state": "skipped",
                                                     "note": "done by node 0"}
    stage = read_status(run_dir)["stages"]["tokenize.alignment"]
    assert stage["state"] == "done"
    by_nodes = tmp_path / "by_nodes"
    shutil.copytree(f"{stage['dir']}/dataset", by_nodes)

    # the same stage on one machine: tokenize=local finds it done (one fingerprint); forced, its
    # local processes write the same bytes
    again = run_harness(results, "run", "-v", *TOKENIZE)
    assert "[tokenize.alignment] done already" in again.stdout
    run_harness(results, "run", *TOKENIZE, "force=[tokenize.alignment]")
    assert read_status(run_dir)["stages"]["tokenize.alignment"]["dir"] == stage["dir"]
    assert arrow_files(by_nodes) == arrow_files(Path(stage["dir"]) / "dataset") and arrow_files(by_nodes)
