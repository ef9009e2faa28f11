"""From nothing to a verified data root: the sources' real layouts (configs/hydra, composed once),
archives in the published shapes served over loopback HTTP, unpacked by data_prep/unpack.py and
counted by data_prep/coverage.py. Expected counts are those of tests/data_root_world.py, by hand."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from data_prep.coverage import check_sources, coverage_problems
from data_prep.unpack import MARKERS, fill_layout, group_archives, unpack
from tests import data_root_world as world
from tests.conftest import REPO, run_harness

PLACEHOLDER = "/DATA_ROOT_PLACEHOLDER"


@pytest.fixture(scope="session")
def composed() -> dict[str, dict]:
    """The paper's sources as configs/hydra composes them, data_root a placeholder: name -> source."""
    from harness.config import compose_job

    out = {}
    for captions in ("caprl_sharegpt4v_1m", "sharegpt4v_1m", "densefusion_1m"):
        cfg = compose_job(["experiment=caprl2m", f"captions={captions}", f"paths.data_root={PLACEHOLDER}"])
        for role in ("align_data", "captions", "sft_data"):
            out[cfg[role]["name"]] = cfg[role]
    return out


def _rooted(node, root: str):
    if isinstance(node, str):
        return node.replace(PLACEHOLDER, root)
    if isinstance(node, dict):
        return {k: _rooted(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_rooted(v, root) for v in node]
    return node


def offline(source: dict, url: str) -> dict:
    """The source with its hub origins fetched from the loopback server instead (same file names),
    and origins on the internet left to the user (nothing leaves this machine)."""
    source = copy.deepcopy(source)
    for origin in (source.get("layout") or {}).get("origins", {}).values():
        if origin.get("hub"):
            origin["urls"] = [f"{url}/{f.rsplit('/', 1)[-1]}" for f in origin.pop("files")]
            origin.pop("hub")
        if any(not u.startswith(url) for u in origin.get("urls") or []):
            origin.pop("urls")
            origin["note"] = "on the internet (not fetched by the tests)"
    return source


@pytest.fixture
def data_root(tmp_path, composed):
    served, root = world.build(tmp_path)
    server, url = world.serve(served)
    sources = {name: offline(_rooted(src, str(root)), url) for name, src in composed.items()}
    # the hub's pattern images/DenseFusion-1M/*.zip: its three zips
    sources["densefusion_1m"]["layout"]["origins"]["zips"]["urls"] = [f"{url}/{k:06d}.zip" for k in (1, 2, 3)]
    (root / "urls" / "sam.txt").write_text("".join(f"{url}/sam.tar.part-{s}\n" for s in ("ab", "aa", "ac")))
    yield root, sources, url
    server.shutdown()


def _by_prefix(report, name: str) -> dict:
    source = next(s for s in report.sources if s.name == name)
    return {p.prefix: (p.rows, p.images, p.present, p.missing, p.examples) for p in source.prefixes}


def test_before_any_fetch_the_missing_images_are_counted_per_prefix_with_their_origin(data_root):
    root, sources, _ = data_root
    report = check_sources([("captions", sources["sharegpt4v_1m"])], root)
    assert _by_prefix(report, "sharegpt4v_1m") == {
        "coco/": (3, 3, 3, 0, []),
        "llava/llava_pretrain/images/": (2, 2, 0, 2, ["llava/llava_pretrain/images/00000/000000001.jpg",
                                                       "llava/llava_pretrain/images/00001/000010001.jpg"]),
        "sam/images/": (5, 5, 0, 5, ["sam/images/sa_1.jpg", "sam/images/sa_2.jpg", "sam/images/sa_3.jpg"]),
    }
    (problem,) = report.problems()
    assert "only 3 of 10 rows (30.0%)" in problem and "min_kept_fraction=0.9" in problem
    assert "sam/images/: 5 of 5 images missing (e.g. sam/images/sa_1.jpg); origin sam (URL list " in problem


def test_fill_unpacks_zips_and_split_tars_links_shared_folders_and_names_the_broken_zip(data_root):
    root, sources, _ = data_root
    logged = []
    manifests = {name: fill_layout(sources[name], root, log=logged.append)
                 for name in ("llava_558k", "densefusion_1m", "sharegpt4v_1m", "caprl_sharegpt4v_1m")}
    dense = manifests["densefusion_1m"]["origins"][0]["archives"]
    assert [(a["archive"], a["files"], a["error"] is not None) for a in dense] == [
        ("000001.zip", 4, False), ("000002.zip", 0, True), ("000003.zip", 4, False)]
    assert "BadZipFile" in dense[1]["error"]
    assert any("000002.zip BROKEN" in line for line in logged)
    assert sorted(p.name for p in (root / "DenseFusion-1M" / "images" / MARKERS).iterdir()) == [
        "000001.zip.json", "000003.zip.json"]
    sam = next(o for o in manifests["sharegpt4v_1m"]["origins"] if o["origin"] == "sam")["archives"]
    assert [(a["archive"], [Path(p).name for p in a["parts"]], a["files"]) for a in sam] == [
        ("sam.tar", ["sam.tar.part-aa", "sam.tar.part-ab", "sam.tar.part-ac"], 5)]
    assert sorted(os.listdir(root / "ShareGPT4V" / "data" / "sam" / "images")) == [
        ".unpacked", *[f"sa_{i}.jpg" for i in range(1, 6)]]
    assert (root / "images" / "sharegpt4v").resolve() == (root / "ShareGPT4V" / "data").resolve()
    assert not list(root.rglob(".unpacking-*"))   # no half-unpacked archive is left behind

    report = check_sources([("align_data", sources["llava_558k"]), ("captions", sources["densefusion_1m"]),
                            ("captions", sources["sharegpt4v_1m"])], root)
    assert _by_prefix(report, "llava_558k") == {"": (5, 5, 4, 1, ["00002/000020001.jpg"])}
    assert _by_prefix(report, "densefusion_1m") == {"": (12, 12, 8, 4, ["000002/0.jpg", "000002/1.jpg",
                                                                        "000002/2.jpg"])}
    assert [p.fix for p in report.sources[1].prefixes][0].endswith(
        "broken archive(s) 000002.zip: delete them from the data root's .downloads, then `python -m harness "
        "prefetch` again")
    assert [(s.name, s.covered, s.rows) for s in report.sources] == [
        ("llava_558k", 4, 5), ("densefusion_1m", 8, 12), ("sharegpt4v_1m", 10, 10)]
    assert len(report.problems()) == 2   # llava 80%, densefusion 67%: below 0.9


def test_a_second_fill_skips_what_is_unpacked(data_root):
    root, sources, _ = data_root
    first = fill_layout(sources["llava_558k"], root, log=lambda _: None)["origins"][0]["archives"][0]
    again = fill_layout(sources["llava_558k"], root, log=lambda _: None)
    (archive,) = again["origins"][0]["archives"]
    assert (first["unpacked_before"], archive["unpacked_before"]) == (False, True)
    assert (archive["archive"], archive["files"], archive["error"]) == ("images.zip", 4, None)
    assert (root / "LLaVA-Pretrain" / "images" / MARKERS / "images.zip.json").is_file()


def test_shared_images_are_counted_once_and_the_table2_pair_compared(data_root):
    root, sources, _ = data_root
    for name in ("llava_558k", "sharegpt4v_1m", "caprl_sharegpt4v_1m"):
        fill_layout(sources[name], root, log=lambda _: None)
    report = check_sources([("captions", sources["caprl_sharegpt4v_1m"]), ("captions", sources["sharegpt4v_1m"])],
                           root)
    caprl = report.sources[0]
    assert (caprl.rows, caprl.outside, caprl.covered) == (4, 2, 3)
    assert _by_prefix(report, "caprl_sharegpt4v_1m") == {
        "sharegpt4v/": (4, 4, 3, 1, ["sharegpt4v/coco/train2017/9.jpg"])}
    assert (report.on_disk, report.shared) == (10, 3)   # ShareGPT4V's 10 images; 3 of them CapRL's too
    (pair,) = report.pairs
    assert (pair.left, pair.right, pair.both, pair.only_left, pair.only_right) == (
        "caprl_sharegpt4v_1m", "sharegpt4v_1m", 3, 1, 7)
    assert pair.examples_left == ["coco/train2017/9.jpg"]


def test_a_download_cut_off_resumes_from_its_part_file(data_root):
    import hashlib

    root, sources, _ = data_root
    whole = (root.parent / "served" / "images.zip").read_bytes()
    part = root / ".downloads" / "llava_558k" / "images" / "images.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(whole[:100])   # what a killed download left
    world._Quiet.ranges.clear()
    manifest = fill_layout(sources["llava_558k"], root, log=lambda _: None)
    (archive,) = manifest["origins"][0]["archives"]
    assert world._Quiet.ranges == ["bytes=100-"]
    assert (archive["files"], archive["sha256"]) == (4, hashlib.sha256(whole).hexdigest())
    assert (part.parent / "images.zip").read_bytes() == whole and not part.exists()


def test_prefetch_fills_every_source_then_lists_what_is_still_missing(data_root, capsys):
    from data_prep.unpack import fill_sources

    root, sources, _ = data_root
    problems = fill_sources([("align_data", sources["llava_558k"]), ("captions", sources["densefusion_1m"])], root,
                            log=lambda _: None)
    assert [p.split(": ", 1)[0] for p in problems] == [
        "captions (densefusion_1m) origin zips", "align_data (llava_558k)", "captions (densefusion_1m)"]
    assert problems[0].endswith("000002.zip is broken: BadZipFile: not a zip file (truncated? no central directory)")
    assert "│ captions: densefusion_1m" in capsys.readouterr().out   # the coverage table ends it


def test_a_misspelt_layout_key_is_refused_with_its_path_and_the_near_name():
    from data_prep.schema import SCHEMA
    from stagekit.schema import undeclared_keys

    cfg = {"captions": {"name": "x", "layout": {"origins": {"coco": {"provides": ["coco/"], "unpak_to": "/d"}}}}}
    assert undeclared_keys(cfg, SCHEMA) == [
        "captions.layout.origins.coco.unpak_to: unknown key; did you mean unpack_to? valid keys: files, hub, "
        "link_to, note, provides, unpack_to, url_list, urls"]


@pytest.mark.parametrize("origins,message", [
    ({"a": {"provides": ["coco/"], "unpack_to": "/d", "urls": ["u"], "link_to": "/e"}},
     "layout.origins.a: give one of hub, urls, url_list, link_to, not ['urls', 'link_to']"),
    ({"a": {"unpack_to": "/d", "urls": ["u"]}}, "layout.origins.a.provides must list the row path prefixes"),
    ({"a": {"provides": "coco/", "urls": ["u"]}}, "layout.origins.a.unpack_to is required"),
    ({"a": {"provides": "coco/"}, "b": {"provides": ["coco/"]}},
     "layout.origins: prefix(es) ['coco/'] provided by more than one origin"),
], ids=["two-fetchers", "no-provides", "no-unpack-to", "prefix-twice"])
def test_a_layout_that_cannot_work_is_refused_naming_the_key(origins, message):
    from data_prep.errors import DataPrepError
    from data_prep.layout import parse_layout

    with pytest.raises(DataPrepError) as err:
        parse_layout({"name": "x", "layout": {"origins": origins}})
    assert str(err.value).startswith(f"source 'x': {message}")


def test_split_parts_group_in_order_whatever_order_they_are_listed(tmp_path):
    names = ["x.tar.part-ab", "b.zip", "x.tar.part-aa", "a.tgz.001", "a.tgz.000", "notes.txt"]
    archives = group_archives([tmp_path / n for n in names])
    assert [(a.name, [p.name for p in a.parts]) for a in archives] == [
        ("a.tgz", ["a.tgz.000", "a.tgz.001"]), ("b.zip", ["b.zip"]), ("x.tar", ["x.tar.part-aa", "x.tar.part-ab"])]


def test_an_interrupted_unpack_is_started_over(tmp_path):
    archive = tmp_path / "images.zip"
    world._zip(archive, ["a/1.jpg", "a/2.jpg"])
    dest = tmp_path / "out"
    (dest / ".unpacking-images.zip" / "a").mkdir(parents=True)   # what a killed run leaves
    (dest / ".unpacking-images.zip" / "a" / "half.jpg").write_bytes(b"half")
    (a,) = group_archives([archive])
    assert (unpack(a, dest).files, a.error, a.skipped) == (2, None, False)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.jpg")) == ["a/1.jpg", "a/2.jpg"]


def test_a_checksum_mismatch_names_the_archive_and_unpacks_nothing_of_it(data_root, tmp_path):
    import hashlib

    root, sources, url = data_root
    good = hashlib.sha256((root.parent / "served" / "000003.zip").read_bytes()).hexdigest()
    (root / "urls" / "df.txt").write_text(f"# DenseFusion zips\n{url}/000001.zip {'0' * 64}\n{url}/000003.zip {good}\n")
    origin = sources["densefusion_1m"]["layout"]["origins"]["zips"]
    origin.pop("urls")
    origin["url_list"] = str(root / "urls" / "df.txt")
    manifest = fill_layout(sources["densefusion_1m"], root, log=lambda _: None)
    first, third = manifest["origins"][0]["archives"]
    assert first["error"].startswith("sha256 ") and first["error"].endswith(f"differs from the published {'0' * 64}")
    assert (third["sha256"], third["files"], third["error"]) == (good, 4, None)
    assert sorted(os.listdir(root / "DenseFusion-1M" / "images")) == [".unpacked", "000003"]


def test_a_missing_url_list_says_which_file_to_write(data_root):
    root, sources, _ = data_root
    (root / "urls" / "sam.txt").unlink()
    manifest = fill_layout(sources["sharegpt4v_1m"], root, log=lambda _: None)
    sam = next(o for o in manifest["origins"] if o["origin"] == "sam")
    assert sam["error"].startswith(f"UnpackError: origin sam: URL list {root}/urls/sam.txt does not exist: "
                                   "write the archive URLs of sam/images/ into it")


def test_run_sources_leave_out_what_the_chain_builds_and_refuse_short_coverage(data_root):
    root, sources, _ = data_root
    cfg = {"paths": {"data_root": str(root)}, "align_data": sources["llava_558k"],
           "captions": {"name": "synthetic_dense", "reader": "caprl_jsonl", "paths": ["world://x.jsonl"],
                        "image_root": "world://images"},
           "sft_data": {"name": "vanilla", "reader": None}}
    (problem,) = coverage_problems(cfg)
    assert problem.startswith("align_data (llava_558k): only 0 of 5 rows (0.0%) have their images under ")


@pytest.mark.slow
def test_an_unpack_killed_midway_never_looks_done_and_the_next_run_completes_it(tmp_path):
    archive = tmp_path / "big.zip"
    world._zip(archive, [f"{i // 1000:03d}/{i}.jpg" for i in range(20000)])
    dest = tmp_path / "out"
    cmd = [sys.executable, "-m", "data_prep.unpack", str(archive), "--to", str(dest)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not (dest / ".unpacking-big.zip" / "005").exists():   # a quarter of it extracted
        assert proc.poll() is None, f"finished before the kill: {proc.stdout.read()}"
        assert time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.listdir(dest) == [".unpacking-big.zip"]   # no marker, no file in the target yet
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("big.zip: 20000 files, ")
    assert sorted(os.listdir(dest)) == [".unpacked", *[f"{k:03d}" for k in range(20)]]
    assert sum(len(files) for _, _, files in os.walk(dest / "019")) == 1000


@pytest.mark.slow
def test_data_check_prints_the_per_prefix_table_and_refuses_short_coverage(data_root, tmp_path):
    root, sources, _ = data_root
    for name in ("llava_558k", "densefusion_1m", "sharegpt4v_1m", "caprl_sharegpt4v_1m", "open_llava_next_mix1m"):
        fill_layout(sources[name], root, log=lambda _: None)
    args = ["data", "check", "experiment=caprl2m", "captions=caprl_sharegpt4v_1m", f"paths.data_root={root}"]
    proc = run_harness(tmp_path / "results", *args, "--json", check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    counts = {s["name"]: {p["prefix"]: [p["rows"], p["images"], p["present"], p["missing"]] for p in s["prefixes"]}
              for s in report["sources"]}
    assert counts == {
        "llava_558k": {"": [5, 5, 4, 1]},
        "caprl_sharegpt4v_1m": {"sharegpt4v/": [4, 4, 3, 1]},
        "open_llava_next_mix1m": {"(text-only)": [1, 0, 0, 0], "coco/": [2, 2, 2, 0]},
        "sharegpt4v_1m": {"coco/": [3, 3, 3, 0], "llava/llava_pretrain/images/": [2, 2, 2, 0],
                          "sam/images/": [5, 5, 5, 0]},
    }
    assert [(p["left"], p["right"], p["both"], p["only_left"], p["only_right"]) for p in report["pairs"]] == [
        ("caprl_sharegpt4v_1m", "sharegpt4v_1m", 3, 1, 7)]
    assert [s["name"] for s in report["sources"] if s["problem"]] == ["llava_558k", "caprl_sharegpt4v_1m"]   # 80%, 75%
    table = run_harness(tmp_path / "results", *args, check=False, timeout=300)
    print(table.stdout)
    assert table.returncode == 1
    assert "refused: align_data (llava_558k): only 4 of 5 rows (80.0%)" in table.stdout
    assert "│ sam/images/" in table.stdout


@pytest.mark.slow
def test_run_is_refused_before_stage_1_and_plan_names_the_prefix_when_coverage_is_short(data_root, tmp_path):
    root, sources, _ = data_root
    fill_layout(sources["densefusion_1m"], root, log=lambda _: None)   # 000002.zip is broken: 8 of 12
    results = tmp_path / "results"
    args = ["experiment=caprl2m", "captions=densefusion_1m", f"paths.data_root={root}"]
    refused = run_harness(results, "run", *args, check=False, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = next(x for x in refused.stderr.splitlines() if "(densefusion_1m)" in x)
    assert line.startswith("error: captions (densefusion_1m): only 8 of 12 rows (66.7%) have their images under ")
    assert "broken archive(s) 000002.zip" in line
    assert not (results / "store").exists()   # no stage started
    plan = run_harness(results, "plan", *args, check=False, timeout=300)
    assert plan.returncode == 1 and line in plan.stderr


def test_run_reuses_the_last_counts_until_a_folder_or_caption_file_changes(data_root, monkeypatch):
    import data_prep.coverage as coverage

    root, sources, _ = data_root
    fill_layout(sources["densefusion_1m"], root, log=lambda _: None)
    cfg = {"paths": {"data_root": str(root)}, "captions": sources["densefusion_1m"]}
    (first,) = coverage_problems(cfg)
    assert first.startswith("captions (densefusion_1m): only 8 of 12 rows (66.7%)")

    def no_reading(spec):
        raise AssertionError("rows read again although nothing changed")

    monkeypatch.setattr(coverage, "iter_images", no_reading)
    assert coverage_problems(cfg) == [first]
    monkeypatch.undo()
    folder = root / "DenseFusion-1M" / "images" / "000002"
    folder.mkdir()
    for i in range(4):   # the broken zip's images, put there by hand
        (folder / f"{i}.jpg").write_bytes(world.IMAGE)
    assert coverage_problems(cfg) == []


@pytest.mark.slow
def test_prefetch_downloads_and_unpacks_a_sources_archives_and_ends_with_the_table(data_root, tmp_path):
    root, _, url = data_root
    zips = ",".join(f'"{url}/{k:06d}.zip"' for k in (1, 2, 3))
    proc = run_harness(tmp_path / "results", "prefetch", "captions=densefusion_1m", f"paths.data_root={root}",
                       "captions.hub=null", "captions.layout.origins.zips.hub=null",
                       "captions.layout.origins.zips.files=null", f"+captions.layout.origins.zips.urls=[{zips}]",
                       check=False, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "densefusion_1m: zips: 000001.zip unpacked: 4 files" in proc.stdout
    assert "densefusion_1m: zips: 000002.zip BROKEN (BadZipFile: " in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "captions: densefusion_1m" in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]] == [
        "captions: densefusion_1m", "66.7% < 0.9 SHORT", "(root)", "zips", "12", "12", "8", "4",
        "000002/0.jpg, 000002/1.jpg, 000002/2.jpg"]
    assert ("error: captions (densefusion_1m) origin zips: 000002.zip is broken: BadZipFile: not a zip file "
            "(truncated? no central directory)") in proc.stderr.splitlines()
    manifest = json.loads((root / ".manifests" / "densefusion_1m.json").read_text())
    assert [(a["archive"], a["files"]) for a in manifest["origins"][0]["archives"]] == [
        ("000001.zip", 4), ("000002.zip", 0), ("000003.zip", 4)]


def test_a_source_that_cannot_be_counted_says_why_and_the_others_are_counted(data_root):
    root, sources, _ = data_root
    odd = root / "odd.jsonl"
    odd.write_text('{"picture": "a.jpg", "caption": "c"}\n')
    broken = {**sources["densefusion_1m"], "name": "odd", "paths": [str(odd)]}
    absent = {**sources["densefusion_1m"], "name": "absent", "paths": [str(root / "nothing.jsonl")]}
    report = check_sources([("captions", broken), ("captions", absent), ("align_data", sources["llava_558k"])], root)
    assert [s.rows for s in report.sources] == [0, 0, 5]
    assert report.problems()[0].startswith(f"captions (odd): {odd}:1: cannot find the image field for reader "
                                           "'densefusion'")
    assert "Set field_map" in report.problems()[0] and "prefetch" not in report.problems()[0]
    assert report.problems()[1] == (f"captions (absent): source 'absent': key 'paths': {root}/nothing.jsonl does not "
                                    "exist; `python -m harness prefetch` (same overrides) fetches it")
