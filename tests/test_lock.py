"""The environment the tests run in is exactly requirements/lock.txt, so a drifted package can
never pass CI silently (filelock 4.x once broke lmms-eval through an unpinned transitive pin)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("check_lock", REPO / "scripts" / "check_lock.py")
check_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_lock)

# `pip check` findings that are known and harmless, each with its reason.
PIP_CHECK_EXCEPTIONS = {
    # decord's only Linux wheel is tagged cp36-cp36m, but it is a ctypes wrapper around its own
    # shared library (no CPython extension), so it imports and decodes on CPython 3.11;
    # lmms-eval's qwen2_5_vl model imports it without declaring it.
    "decord 0.6.0 is not supported on this platform",
}


def test_installed_distributions_equal_the_lock():
    problems = check_lock.differences(check_lock.read_lock(), check_lock.installed())
    assert problems == [], "\n".join(problems) + "\nrun: bash scripts/setup.sh"


def test_lock_pins_the_stack_that_was_tested():
    lock = check_lock.read_lock()
    assert lock["filelock"] == "3.32.7"            # 4.x lacks filelock._api, which lmms-eval imports
    assert (lock["llamafactory"], lock["transformers"], lock["lmms-eval"]) == ("0.9.5", "5.6.0", "0.7.3")
    assert (lock["torchvision"], lock["torchaudio"]) == ("0.28.0", "2.11.0")
    assert "torch" not in lock                     # installed first by setup.sh, build per machine
    assert len(lock) == 200                      # 198 + pytest-xdist and its execnet (two test workers)


def test_every_locked_line_has_hashes():
    text = (REPO / "requirements" / "lock.txt").read_text()
    blocks = [b for b in text.split("\n") if check_lock._PIN.match(b)]
    assert blocks and all(b.rstrip().endswith("\\") for b in blocks)   # each pin continues with its hashes
    assert text.count("--hash=sha256:") >= len(blocks)


def test_a_version_changed_by_hand_is_reported():
    lock = check_lock.read_lock()
    have = {**check_lock.installed(), "filelock": "4.3.1"}
    assert check_lock.differences(lock, have) == ["filelock: installed 4.3.1, the lock says 3.32.7"]


def test_missing_and_unlocked_distributions_are_reported():
    lock = {**check_lock.read_lock(), "not-a-real-dist": "1.0"}
    have = {**check_lock.installed(), "Stray_Package": "2.0"}
    have = {check_lock.normalize(k): v for k, v in have.items()}
    assert check_lock.differences(lock, have) == ["not-a-real-dist: locked at 1.0, not installed",
                                                  "stray-package: installed 2.0, not in the lock"]


def test_pip_check_is_clean_but_for_the_explained_exceptions():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    findings = {line.strip() for line in proc.stdout.splitlines() if line.strip()} - {"No broken requirements found."}
    assert findings - PIP_CHECK_EXCEPTIONS == set(), proc.stdout
