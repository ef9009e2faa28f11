#!/usr/bin/env bash
# Re-resolve requirements/lock.txt from the direct requirements (pyproject.toml, extra `test`)
# and requirements/constraints.in. Online (package registry), a few minutes. Afterwards run
#   bash scripts/setup.sh && .venv/bin/python -m pytest
# and commit the lock with the change that needed it.
#
# Every distribution is pinned with its hashes except torch: setup.sh installs torch 2.13.0 first
# and by itself, because its build differs by machine (the local CPU wheel here, the CUDA build
# with its nvidia-* runtime on a GPU machine) while everything else is the same everywhere.
# pip-tools (pip's own resolver) is used rather than uv because uv does not read pip's
# configuration, which is where this machine's local CPU torch wheel is found.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
PIP_TOOLS_VERSION=7.6.2
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PY" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q "pip-tools==$PIP_TOOLS_VERSION"
"$tools/venv/bin/pip-compile" --quiet --extra test --generate-hashes --strip-extras \
  --unsafe-package torch --no-allow-unsafe --no-emit-index-url --no-emit-find-links \
  --constraint requirements/constraints.in --output-file requirements/lock.txt pyproject.toml
echo "# torch is left out on purpose: scripts/setup.sh installs it first, at the version pyproject.toml pins (its build differs by machine: CPU here, CUDA on a GPU machine)." >> requirements/lock.txt
echo "[lock] wrote requirements/lock.txt ($(grep -c '^[A-Za-z0-9].*==' requirements/lock.txt) pinned distributions)"
