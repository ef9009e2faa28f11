"""Post-install step that makes the registry's CUDA-built torchvision/torchaudio importable
next to a CPU-only torch: the registry's torchvision and torchaudio wheels are CUDA builds.

- torchvision registers fake kernels for `torchvision::nms`/`qnms` at import; without its
  compiled ops (they need CUDA libraries here) that raises "operator torchvision::nms does
  not exist". We make those two registrations conditional on the ops being loaded.
- torchaudio crashes loading its compiled extension (libc10_cuda.so missing). We move the
  extension aside, so its loader reports "unavailable" instead of raising.
- torch cannot load a checkpoint onto "cpu:0": accelerate gives every rank of a multi-process
  CPU run the device cpu:<index>, the Trainer resumes the optimizer state with that device as
  map_location, and torch's CPU deserializer accepts only "cpu" ("don't know how to restore
  data location ... (tagged with cpu:0)"), so resuming multi-process (and multi-node) CPU
  training failed. We let the CPU deserializer accept "cpu:<index>" too (CPU has one memory).

Nothing in this pipeline uses the compiled ops. The step is idempotent and does nothing
when torch has CUDA (or ROCm): on a GPU machine the wheels are used untouched.

Run: `python -m harness.cpu_compat` (scripts/setup.sh does it after every install).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MARKER = "# caprl-harness: cpu_compat"
_FAKE = '@torch.library.register_fake("torchvision::'
_GUARDED = '@_register_fake_if_ops("torchvision::'
_HELPER = f'''
{MARKER}: register fake kernels only where the compiled ops exist.
def _register_fake_if_ops(name):
    if torchvision.extension._has_ops():
        return torch.library.register_fake(name)
    return lambda fn: fn
'''
_DISABLED_SUFFIX = ".disabled-cpu-only"
_CPU_ONLY = 'def _cpu_deserialize(obj, location):\n    if location == "cpu":'
_CPU_ANY = f'def _cpu_deserialize(obj, location):\n    if location == "cpu" or location.startswith("cpu:"):  {MARKER}'


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates without importing (import would crash)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def patch_torchvision(pkg: Path) -> str:
    meta = pkg / "_meta_registrations.py"
    text = meta.read_text()
    if MARKER in text:
        return "torchvision: already patched"
    if _FAKE not in text:
        return "torchvision: no fake registrations found, left alone"
    anchor = "import torchvision.extension  # noqa: F401\n"
    if anchor not in text:
        raise RuntimeError(f"{meta}: layout changed (no {anchor.strip()!r}); cannot patch")
    text = text.replace(anchor, anchor + _HELPER, 1).replace(_FAKE, _GUARDED)
    meta.write_text(text)
    return f"torchvision: patched {meta}"


def disable_torchaudio_ext(pkg: Path) -> str:
    moved = []
    for so in sorted((pkg / "lib").glob("*.so")):
        so.rename(so.with_name(so.name + _DISABLED_SUFFIX))
        moved.append(so.name)
    return f"torchaudio: disabled {', '.join(moved)}" if moved else "torchaudio: already disabled"


def patch_torch_cpu_location(pkg: Path) -> str:
    ser = pkg / "serialization.py"
    text = ser.read_text()
    if MARKER in text:
        return "torch: already patched"
    if _CPU_ONLY not in text:
        raise RuntimeError(f"{ser}: layout changed (no CPU deserializer found); cannot patch")
    ser.write_text(text.replace(_CPU_ONLY, _CPU_ANY, 1))
    return f"torch: patched {ser}"


def apply() -> list[str]:
    import torch

    if torch.version.cuda or getattr(torch.version, "hip", None):
        return ["torch has GPU support: nothing to do"]
    done = [patch_torch_cpu_location(Path(torch.__file__).parent)]
    if (tv := _package_dir("torchvision")) is not None:
        done.append(patch_torchvision(tv))
    if (ta := _package_dir("torchaudio")) is not None:
        done.append(disable_torchaudio_ext(ta))
    return done


def main() -> int:
    for line in apply():
        print(f"[cpu_compat] {line}")
    # Prove the fix: both must import now.
    import torchaudio  # noqa: F401
    import torchvision  # noqa: F401

    return 0


if __name__ == "__main__":
    sys.exit(main())
