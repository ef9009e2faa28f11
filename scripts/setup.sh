#!/usr/bin/env bash
# Idempotent set-up of .venv with exactly requirements/lock.txt (the README's two commands start
# with it). Order matters: torch first and by itself, at the version pyproject.toml pins, so pip
# takes the build this machine should have (the local CPU wheel here; the CUDA build with its
# nvidia-* runtime on a GPU machine) and never swaps one for the other; then every other
# distribution from the lock, hashes checked; then the project, editable, without dependencies;
# then the CPU-only import fix for torchvision/torchaudio (harness/cpu_compat.py, a no-op with
# CUDA torch). A stamp of the dependency files plus a check of the installed set against the
# lock (scripts/check_lock.py, ~0.2 s) skip all of it when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
PIP_VERSION=26.3
VPY=.venv/bin/python
# harness/cpu_compat.py too: a changed post-install fix must reach an existing .venv.
stamp_of() { cat pyproject.toml requirements/lock.txt scripts/setup.sh harness/cpu_compat.py | sha256sum | cut -c1-16; }
fail() { echo "[setup] error: $*" >&2; exit 1; }
if [ ! -x "$VPY" ]; then
  "$PY" -m venv .venv
fi
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" = "$(stamp_of)" ] && "$VPY" scripts/check_lock.py --quiet; then
  exit 0
fi
echo "[setup] installing requirements/lock.txt into .venv (first time: a few minutes)"
rm -f .venv/.setup-stamp
"$VPY" -m pip install -q "pip==$PIP_VERSION"
TORCH=$("$VPY" -c 'import sys; sys.path.insert(0, "scripts"); import check_lock; print(check_lock.torch_pin())')
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
# The lock without hashes, as constraints: torch's own dependencies come at their locked versions.
sed -n 's/^\([A-Za-z0-9][^ ]*==[^ ]*\).*/\1/p' requirements/lock.txt > "$pins"
"$VPY" -m pip install -q -c "$pins" "torch==$TORCH" \
  || fail "torch==$TORCH does not install beside the locked versions (see pip's message above)"
"$VPY" -m pip install -q --require-hashes -r requirements/lock.txt \
  || fail "requirements/lock.txt does not install as locked: pip would have to change a locked version or \
add an unlocked one (see pip's message above). Re-resolve with 'bash scripts/lock.sh' (README, 'The lock')."
extra=$("$VPY" scripts/check_lock.py --extraneous)
if [ -n "$extra" ]; then
  echo "[setup] removing what the lock does not hold: $extra"
  "$VPY" -m pip uninstall -q -y $extra
fi
# --no-build-isolation: build with the locked setuptools instead of fetching an unpinned one.
"$VPY" -m pip install -q --no-deps --no-build-isolation -e .
"$VPY" -m harness.cpu_compat
"$VPY" scripts/check_lock.py || fail "the installed set differs from requirements/lock.txt (listed above)"
stamp_of > .venv/.setup-stamp
echo "[setup] done"
