"""Fetch and unpack the archives of a source's layout (data_prep/layout.py) into the data root.

    fill_sources([(role, source), ...], data_root) -> problems   what `python -m harness prefetch` calls
    fill_layout(source, data_root) -> manifest   one source
    python -m data_prep.unpack ARCHIVE... --to FOLDER    the same unpack by hand

Archives: zip, tar (any compression), and tars split into parts (x.tar.part-aa, x.tar.00, x.tar.001,
...: read back to back as one stream, never joined on disk). An interrupted unpack never looks
complete: each archive is extracted into a hidden folder beside its target, its files are then
moved in (a rename each), and only then is its marker `<target>/.unpacked/<archive>.json`
written; a re-run skips marked archives and starts the others over. A broken archive (truncated,
bad CRC, checksum mismatch) is named in the manifest and on the console, and the others go on.
Downloads resume (HTTP Range) from their `.part` file.

The manifest, `<data_root>/.manifests/<source>.json`, lists per origin each archive with its
files, bytes, sha256 (computed while downloading, or the hub's when it publishes one) and error."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_prep.coverage import MANIFESTS
from data_prep.layout import Origin, parse_layout
from stagekit import write_json_atomic

MARKERS = ".unpacked"
DOWNLOADS = ".downloads"
# x.tar.part-aa / x.tar.partaa / x.tar.aa / x.tar.00 / x.tgz.001 ...: parts of one split archive
_PART = re.compile(r"^(?P<base>.+\.(?:tar|tgz|tar\.gz|tar\.bz2|tar\.xz))\.(?:part[-_]?)?(?P<part>[a-z]{2,3}|\d{2,4})$")
_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
CHUNK = 1 << 20
BROKEN = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError, ValueError)


class UnpackError(RuntimeError):
    pass


@dataclass
class Archive:
    name: str                   # what it is called in markers and manifests (a split tar: its base name)
    parts: list[Path]
    sha256_expected: str | None = None
    sha256: str | None = None   # measured (download or check)
    files: int = 0
    bytes: int = 0
    error: str | None = None
    skipped: bool = False       # unpacked by an earlier run (its marker)


@dataclass
class OriginReport:
    origin: str
    how: str
    unpack_to: str | None
    archives: list[Archive] = field(default_factory=list)
    error: str | None = None    # the origin could not be fetched at all (no URL list, offline, ...)


# -- archives --------------------------------------------------------------------------------------

def group_archives(paths: list[Path]) -> list[Archive]:
    """Archives in name order; the parts of a split tar become one archive, parts in order."""
    split: dict[str, list[Path]] = {}
    out: list[Archive] = []
    for path in sorted(paths, key=lambda p: p.name):
        m = _PART.match(path.name)
        if m:
            split.setdefault(m["base"], []).append(path)
        elif path.name.endswith(_SUFFIXES):
            out.append(Archive(path.name, [path]))
    out += [Archive(base, parts) for base, parts in split.items()]
    return sorted(out, key=lambda a: a.name)


class _Chain:
    """The parts of a split archive read back to back, as one stream."""

    def __init__(self, parts: list[Path], progress=None):
        self.parts, self.progress, self._i, self._f = list(parts), progress, 0, None

    def read(self, n: int = -1) -> bytes:
        while self._i < len(self.parts):
            if self._f is None:
                self._f = open(self.parts[self._i], "rb")
            data = self._f.read(n if n is not None and n >= 0 else -1)
            if data:
                if self.progress:
                    self.progress(len(data))
                return data
            self._f.close()
            self._f, self._i = None, self._i + 1
        return b""

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def marker(dest: Path, archive: Archive) -> Path:
    return dest / MARKERS / f"{archive.name}.json"


def unpacked_info(dest: Path, archive: Archive) -> dict | None:
    """The marker of an archive unpacked into dest, when it is of these very parts (same bytes)."""
    try:
        info = json.loads(marker(dest, archive).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return info if info.get("archive_bytes") == sum(p.stat().st_size for p in archive.parts) else None


def unpack(archive: Archive, dest: Path, progress=None) -> Archive:
    """Unpack one archive into dest, or record why not (archive.error); never leaves a half
    archive looking done. Skips one whose marker says it is in already."""
    dest.mkdir(parents=True, exist_ok=True)
    if (info := unpacked_info(dest, archive)) is not None:
        archive.files, archive.bytes, archive.skipped = info["files"], info["bytes"], True
        archive.sha256 = archive.sha256 or info.get("sha256")
        return archive
    if archive.sha256_expected:
        archive.sha256 = archive.sha256 or _sha256(archive.parts)
        if archive.sha256 != archive.sha256_expected:
            archive.error = f"sha256 {archive.sha256} differs from the published {archive.sha256_expected}"
            return archive
    staging = dest / f".unpacking-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)   # what a killed run left: start this archive over
    staging.mkdir(parents=True)
    try:
        _extract(archive, staging, progress)
    except BROKEN as exc:
        archive.error = f"{type(exc).__name__}: {exc}"
        shutil.rmtree(staging, ignore_errors=True)
        return archive
    archive.files, archive.bytes = _count(staging)
    _merge(staging, dest)
    shutil.rmtree(staging, ignore_errors=True)
    (dest / MARKERS).mkdir(exist_ok=True)
    write_json_atomic(marker(dest, archive), {
        "archive": archive.name, "parts": [str(p) for p in archive.parts], "files": archive.files,
        "bytes": archive.bytes, "archive_bytes": sum(p.stat().st_size for p in archive.parts),
        "sha256": archive.sha256, "unpacked_at": time.time()})
    return archive


def _extract(archive: Archive, staging: Path, progress) -> None:
    first = archive.parts[0]
    if len(archive.parts) == 1 and zipfile.is_zipfile(first):
        with zipfile.ZipFile(first) as zf:
            for info in zf.infolist():
                zf.extract(info, staging)   # zipfile drops '..' and absolute parts of names
                if progress:
                    progress(info.compress_size)
        return
    if len(archive.parts) == 1 and first.suffix == ".zip":
        raise zipfile.BadZipFile("not a zip file (truncated? no central directory)")
    stream = _Chain(archive.parts, progress)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tf:
            for member in tf:
                tf.extract(member, staging, filter="data")   # no links or paths out of the folder
    finally:
        stream.close()


def _count(folder: Path) -> tuple[int, int]:
    files = size = 0
    for base, _, names in os.walk(folder):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(base, name)).st_size
    return files, size


def _merge(src: Path, dst: Path) -> None:
    """Move src's tree into dst: a folder dst lacks moves whole (one rename); files replace."""
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False) and target.is_dir():
            _merge(Path(entry.path), target)
        else:
            os.replace(entry.path, target)


def _sha256(parts: list[Path]) -> str:
    return _hasher(parts).hexdigest()


def _hasher(parts: list[Path]):
    h = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    return h


# -- fetching ------------------------------------------------------------------------------------

def url_entries(origin: Origin) -> list[tuple[str, str | None]]:
    """(url, sha256 or None) of an origin's urls or URL list file ('URL [sha256]' a line, # comments)."""
    if origin.urls:
        return [(u, None) for u in origin.urls]
    path = Path(origin.url_list)
    if not path.is_file():
        raise UnpackError(f"origin {origin.name}: URL list {path} does not exist: write the archive URLs of "
                          f"{', '.join(origin.provides)} into it, one a line ({origin.note or 'see the README'})")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and not re.fullmatch(r"[0-9a-f]{64}", words[1])):
            raise UnpackError(f"{path}:{n}: expected 'URL [sha256]', got {line.strip()!r}")
        out.append((words[0], words[1] if len(words) == 2 else None))
    return out


def download(url: str, folder: Path, bar=None) -> tuple[Path, str | None]:
    """A URL's file in folder (resumed from its .part), with its sha256; a local path or file://
    URL is used where it is. Returns (path, sha256 or None when not computed: a local file, or
    one downloaded by an earlier run)."""
    if not url.startswith(("http://", "https://")):
        return Path(url.removeprefix("file://")), None
    import httpx

    name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    target = folder / name
    if target.is_file():
        return target, None
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(name + ".part")
    have = part.stat().st_size if part.exists() else 0
    h = _hasher([part] if have else [])   # resumed: the hash covers the bytes already there
    headers = {"Range": f"bytes={have}-"} if have else {}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as r:
        if r.status_code == 416:   # the .part is already whole
            r.close()
        else:
            r.raise_for_status()
            if have and r.status_code != 206:   # the server ignores Range: start over
                have, h = 0, hashlib.sha256()
            total = have + int(r.headers.get("content-length", 0))
            if bar:
                bar(name, total, have)
            with open(part, "ab" if have else "wb") as f:
                for chunk in r.iter_bytes(CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    if bar:
                        bar(name, total, len(chunk))
    os.replace(part, target)
    return target, h.hexdigest()


def hub_archives(origin: Origin, data_root: Path) -> list[Archive]:
    """The origin's files from the hub (its patterns), with the sha256 the hub publishes for LFS files."""
    from fnmatch import fnmatch

    from huggingface_hub import HfApi, snapshot_download

    local = data_root / DOWNLOADS / "hub" / origin.repo_id
    snapshot_download(repo_id=origin.repo_id, repo_type=origin.repo_type, allow_patterns=list(origin.files),
                      local_dir=local)
    known = {}
    try:
        for entry in HfApi().list_repo_tree(origin.repo_id, repo_type=origin.repo_type, recursive=True):
            lfs = getattr(entry, "lfs", None)
            if lfs is not None and any(fnmatch(entry.path, p) for p in origin.files):
                known[entry.path.rsplit("/", 1)[-1]] = lfs.sha256
    except Exception:  # noqa: BLE001 - checksums are a bonus; the files are what matter
        pass
    paths = [p for pattern in origin.files for p in local.glob(pattern) if p.is_file()]
    archives = group_archives(paths)
    for a in archives:
        a.sha256_expected = known.get(a.name)
    return archives


def origin_archives(origin: Origin, source: str, data_root: Path, bar=None) -> list[Archive]:
    if origin.repo_id:
        return hub_archives(origin, data_root)
    folder = data_root / DOWNLOADS / source / origin.name
    paths, sums, expected = [], {}, {}
    for url, sha in url_entries(origin):
        path, measured = download(url, folder, bar)
        if not path.exists():
            raise UnpackError(f"origin {origin.name}: {url}: no such file")
        paths.append(path)
        sums[path.name], expected[path.name] = measured, sha
    archives = group_archives(paths)
    for a in archives:
        if len(a.parts) == 1:
            a.sha256, a.sha256_expected = sums.get(a.name), expected.get(a.name)
    return archives


def link(origin: Origin) -> OriginReport:
    """An origin that is another source's folder: a symlink, so the images are on disk once."""
    report = OriginReport(origin.name, origin.how(), origin.unpack_to)
    where, target = Path(origin.unpack_to), Path(origin.link_to)
    if where.is_symlink() or not where.exists():
        where.parent.mkdir(parents=True, exist_ok=True)
        if where.is_symlink():
            where.unlink()
        where.symlink_to(target, target_is_directory=True)
    if not target.is_dir():
        report.error = f"{target} does not exist yet (the source that owns it fills it)"
    return report


# -- one source ----------------------------------------------------------------------------------

def fill_layout(source: Mapping, data_root: str | Path, log=print) -> dict:
    """Fetch and unpack every origin of a source's layout; write and return its manifest. A
    broken archive or an unreachable origin is recorded and named; the rest goes on."""
    layout = parse_layout(source)
    data_root = Path(data_root)
    reports = []
    with _Bars() as bars:
        for origin in layout.origins:
            reports.append(_fill_origin(origin, layout.source, data_root, bars, log))
    manifest = {"source": layout.source, "written_at": time.time(),
                "origins": [{**{k: v for k, v in asdict(r).items() if k != "archives"},
                             "archives": [_archive_json(a) for a in r.archives]} for r in reports]}
    (data_root / MANIFESTS).mkdir(parents=True, exist_ok=True)
    write_json_atomic(data_root / MANIFESTS / f"{layout.source}.json", manifest)
    for r in reports:
        for problem in ([r.error] if r.error else []) + [f"{a.name}: {a.error}" for a in r.archives if a.error]:
            log(f"{layout.source}: origin {r.origin}: {problem}")
    return manifest


def fill_sources(sources: list[tuple[str, Mapping]], data_root: str | Path, log=print) -> list[str]:
    """Fill every (role, source)'s layout, then print the coverage table; the problems left, each
    naming its origin, archive or prefix (empty: the data root is complete)."""
    from data_prep.coverage import check_sources, render

    problems = []
    for role, source in sources:
        if not source.get("layout"):
            continue
        for o in fill_layout(source, data_root, log=log)["origins"]:
            where = f"{role} ({source['name']}) origin {o['origin']}"
            problems += [f"{where}: {o['error']}"] if o["error"] else []
            problems += [f"{where}: {a['archive']} is broken: {a['error']}" for a in o["archives"] if a["error"]]
    if sources:
        report = check_sources(sources, data_root, progress=True)
        render(report)
        problems += report.problems()
    return problems


def _fill_origin(origin: Origin, source: str, data_root: Path, bars, log) -> OriginReport:
    if origin.link_to:
        return link(origin)
    report = OriginReport(origin.name, origin.how(), origin.unpack_to)
    if not origin.fetchable():
        report.error = f"not fetched here: {origin.note or 'obtain it by hand'} into {origin.unpack_to}"
        return report
    try:
        archives = origin_archives(origin, source, data_root, bars.download)
    except Exception as exc:  # noqa: BLE001 - one origin's failure (offline, 404) must not stop the others
        report.error = f"{type(exc).__name__}: {exc}"
        return report
    if not archives:
        report.error = "no archive (zip, tar, split tar parts) found among its files"
    for archive in archives:
        total = sum(p.stat().st_size for p in archive.parts)
        report.archives.append(unpack(archive, Path(origin.unpack_to), bars.unpacking(archive.name, total)))
        a = report.archives[-1]
        state = f"BROKEN ({a.error})" if a.error else "in already" if a.skipped else "unpacked"
        log(f"{source}: {origin.name}: {a.name} {state}: {a.files:,} files, {a.bytes / 2**20:,.1f} MiB")
    return report


def _archive_json(a: Archive) -> dict:
    return {"archive": a.name, "parts": [str(p) for p in a.parts], "files": a.files, "bytes": a.bytes,
            "sha256": a.sha256, "sha256_published": a.sha256_expected, "error": a.error,
            "unpacked_before": a.skipped}


class _Bars:
    """rich progress bars (download bytes, unpacked bytes) on a terminal; nothing elsewhere."""

    def __enter__(self):
        self.progress = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self.progress.start()
        self.tasks: dict[str, int] = {}
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def download(self, name: str, total: int, advance: int) -> None:
        if self.progress is None:
            return
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(f"download {name}", total=total or None)
        self.progress.update(self.tasks[name], advance=advance)

    def unpacking(self, name: str, total: int):
        if self.progress is None:
            return None
        task = self.progress.add_task(f"unpack {name}", total=total or None)
        return lambda n: self.progress.update(task, advance=n)


def main(argv: list[str]) -> int:
    """python -m data_prep.unpack ARCHIVE... --to FOLDER: exit 1 when an archive is broken."""
    if "--to" not in argv or argv.index("--to") == len(argv) - 1:
        print("usage: python -m data_prep.unpack ARCHIVE... --to FOLDER", file=sys.stderr)
        return 2
    i = argv.index("--to")
    dest, paths = Path(argv[i + 1]), [Path(p) for p in argv[:i] + argv[i + 2:]]
    bad = 0
    with _Bars() as bars:
        for archive in group_archives(paths):
            total = sum(p.stat().st_size for p in archive.parts)
            a = unpack(archive, dest, bars.unpacking(archive.name, total))
            bad += a.error is not None
            print(f"{a.name}: " + (f"BROKEN: {a.error}" if a.error else f"{a.files} files, {a.bytes} bytes"
                                    + (" (in already)" if a.skipped else "")), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
