"""Does the running interpreter's environment hold exactly requirements/lock.txt?

    .venv/bin/python scripts/check_lock.py               # differences, one a line; exit 1 if any
    .venv/bin/python scripts/check_lock.py --extraneous  # names installed but not locked (for pip uninstall)

Every distribution must be installed at its locked version, and nothing else may be installed,
with three explained exceptions:
- torch: installed first and by itself by scripts/setup.sh at the version pyproject.toml pins;
  its build differs by machine (a local "+cpu" wheel here, the CUDA build on a GPU machine), so
  only the public version is compared;
- what torch itself requires and the lock does not hold: its CUDA runtime (nvidia-*, triton) on a
  GPU machine, exact-pinned by torch's own metadata;
- pip (the installer, pinned by setup.sh) and this project (installed editable, not locked).
No network, no imports beyond the standard library: fast enough for every setup.sh call and test.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements" / "lock.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
INSTALLERS = ("pip",)


def normalize(name: str) -> str:
    """PEP 503: Foo_Bar, foo-bar and foo.bar are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{normalized name: version} of every `name==version` line of a pip-compile lock."""
    pins = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def torch_pin() -> str:
    """The torch version pyproject.toml pins (setup.sh installs exactly that, first)."""
    for req in project()["dependencies"]:
        m = _PIN.match(req.replace(" ", ""))
        if m and normalize(m.group(1)) == "torch":
            return m.group(2)
    raise SystemExit("pyproject.toml must pin torch with == (setup.sh installs that version first)")


def torch_requires() -> set[str]:
    """Names torch's own metadata requires: its CUDA runtime on a GPU machine."""
    try:
        requires = metadata.requires("torch") or []
    except metadata.PackageNotFoundError:
        return set()
    return {normalize(m.group(1)) for r in requires if (m := _REQ_NAME.match(r))}


def differences(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """Each way `have` differs from the lock, one line each; [] when it is exactly the lock."""
    out = []
    want_torch = torch_pin()
    if have.get("torch", "").split("+")[0] != want_torch:
        out.append(f"torch: installed {have.get('torch', 'nothing')}, pyproject.toml pins {want_torch}")
    for name, version in sorted(lock.items()):
        if name not in have:
            out.append(f"{name}: locked at {version}, not installed")
        elif have[name] != version:
            out.append(f"{name}: installed {have[name]}, the lock says {version}")
    out += [f"{name}: installed {have[name]}, not in the lock" for name in extraneous(lock, have)]
    return out


def extraneous(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """Installed, not locked, and none of the explained exceptions."""
    allowed = set(INSTALLERS) | {normalize(project()["name"])} | (torch_requires() - set(lock))
    return sorted(n for n in have if n not in lock and n != "torch" and n not in allowed)


def main(argv: list[str]) -> int:
    lock, have = read_lock(), installed()
    if "--extraneous" in argv:
        print(" ".join(extraneous(lock, have)))
        return 0
    problems = differences(lock, have)
    if problems and "--quiet" not in argv:
        print(f"{sys.prefix} differs from {LOCK.relative_to(REPO)}:", file=sys.stderr)
        print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
