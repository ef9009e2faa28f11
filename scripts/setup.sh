#!/usr/bin/env bash
# Idempotent set-up of .venv (the README's two commands start with it).
# Order matters (shared/reference/stack.md): torch 2.13.0 first, then the pinned stack under
# constraints so pip never swaps in a CUDA torch, then the CPU-only import fix (a no-op on GPU).
# A stamp of the dependency files skips all of it when nothing changed (~0.1 s).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
stamp_of() { cat pyproject.toml requirements/constraints.txt scripts/setup.sh | sha256sum | cut -c1-16; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" = "$(stamp_of)" ]; then
  exit 0
fi
echo "[setup] installing into .venv (first time: a few minutes)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[test]"
.venv/bin/python -m harness.cpu_compat
stamp_of > .venv/.setup-stamp
echo "[setup] done"
