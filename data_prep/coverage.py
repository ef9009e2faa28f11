"""Coverage before any work: which of the images a source's rows name are on disk, per path prefix.

Cheap by design (a 2M-row source is checked in seconds, before a GPU is allocated): the rows are
parsed only for their image field, and presence comes from listing each folder the rows point
into once (os.scandir), never from opening or decoding an image. A folder is listed once per real
path, so sources that share images through links (CapRL-2M over ShareGPT4V's and DenseFusion's
folders) are counted once on disk and checked for each. data_prep's own checks (headers,
truncation, sizes) still run when the stage runs; this only answers "is the file there".

    check_sources([(role, source), ...], data_root) -> Report
    coverage_problems(cfg) -> [str]      the refusals for a run config (empty: go on)"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from data_prep.errors import DataPrepError, RowReject
from data_prep.images import image_list, match_key, resolve
from data_prep.layout import Layout, parse_layout
from data_prep.readers import READERS, resolve_fields
from data_prep.source import SourceSpec, input_files, parse_source
from data_prep.stream_json import ArrayReader, BadJson, is_json_array
from stagekit import write_json_atomic

MAX_EXAMPLES = 3
TICK_ROWS = 20_000          # rows between progress updates
TEXT_ONLY = "(text-only)"
UNREADABLE = "(bad path)"
MANIFESTS = ".manifests"   # under paths.data_root: one JSON per source, written by prefetch (unpack.py)


@dataclass
class PrefixCoverage:
    prefix: str
    origin: str                 # the layout origin that provides it, or why none does
    rows: int = 0               # rows whose (first) image is under this prefix
    images: int = 0             # distinct images referenced
    present: int = 0
    missing: int = 0
    examples: list[str] = field(default_factory=list)   # up to MAX_EXAMPLES missing paths
    fix: str = ""               # what fills it (origin, broken archives), when images are missing


@dataclass
class SourceCoverage:
    role: str
    name: str
    label: str
    image_root: str
    rows: int = 0               # rows in the dataset (path_prefix applied), text-only included
    outside: int = 0            # rows outside path_prefix: not part of this dataset
    covered: int = 0            # rows whose every image is present
    min_kept_fraction: float = 0.9
    prefixes: list[PrefixCoverage] = field(default_factory=list)
    error: str | None = None    # why nothing was counted (caption files missing, no image field)

    @property
    def fraction(self) -> float:
        return self.covered / self.rows if self.rows else 1.0

    def problem(self) -> str | None:
        """The refusal line when coverage is below min_kept_fraction: the worst prefixes and their fix."""
        if self.error:
            return f"{self.role} ({self.name}): {self.error}"
        if self.fraction >= self.min_kept_fraction:
            return None
        worst = sorted((p for p in self.prefixes if p.missing), key=lambda p: -p.missing)[:3]
        parts = [f"{p.prefix or '(all)'}: {p.missing:,} of {p.images:,} images missing (e.g. {p.examples[0]}); "
                 f"{p.fix}" for p in worst if p.examples]
        return (f"{self.role} ({self.name}): only {self.covered:,} of {self.rows:,} rows ({self.fraction:.1%}) have "
                f"their images under {self.image_root}, below min_kept_fraction={self.min_kept_fraction:g}. "
                + " | ".join(parts))


@dataclass
class MatchedPair:
    left: str
    right: str
    match_key: str
    both: int
    only_left: int
    only_right: int
    examples_left: list[str]
    examples_right: list[str]


@dataclass
class Report:
    sources: list[SourceCoverage]
    pairs: list[MatchedPair]
    on_disk: int               # distinct present images over all sources (a shared image once)
    shared: int                # of them, referenced by more than one source
    folders_listed: int

    def problems(self) -> list[str]:
        return [p for s in self.sources if (p := s.problem())]

    def as_json(self) -> dict:
        out = asdict(self)
        for s, js in zip(self.sources, out["sources"]):
            js["fraction"] = round(s.fraction, 6)
            js["problem"] = s.problem()
        return out


class Folders:
    """Listings of the folders images live in, each listed once per real path: a shared folder (a
    link from another source's layout) is read once and its images counted once."""

    def __init__(self):
        self._real: dict[str, str] = {}                    # folder as named -> its real path
        self._names: dict[str, frozenset[str] | None] = {}  # real path -> file names (None: absent)
        self.referenced: dict[tuple[str, str], str] = {}   # present image -> the first source naming it
        self.shared: set[tuple[str, str]] = set()           # present images other sources name too

    def present(self, folder: str, name: str, source: str) -> bool:
        real = self._real.get(folder)
        if real is None:
            real = self._real[folder] = os.path.realpath(folder)
        names = self._names.get(real, False)
        if names is False:
            names = self._names[real] = _list(real)
        if names is None or name not in names:
            return False
        key = (real, name)
        first = self.referenced.setdefault(key, source)
        if first != source:
            self.shared.add(key)
        return True

    def listed(self) -> int:
        return len(self._names)


def _list(folder: str) -> frozenset[str] | None:
    try:
        with os.scandir(folder) as it:
            return frozenset(e.name for e in it if e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return None


# -- rows -> image paths -------------------------------------------------------------------------

def iter_images(spec: SourceSpec):
    """(row id, [image path, ...] | None) of every row of a source's files; None for an unparseable row."""
    reader = READERS[spec.reader]
    for path in input_files(spec):
        fields = resolve_fields(reader, path, spec.field_map)
        img_key, id_key = fields["image"], fields["id"]
        for obj in _objects(path):
            if type(obj) is not dict:
                yield None, None
                continue
            try:
                yield (obj.get(id_key) if id_key else None), image_list(obj.get(img_key))
            except RowReject:
                yield None, None


def _objects(path: Path):
    if is_json_array(path):
        for _, _, value in ArrayReader(path):
            yield None if isinstance(value, BadJson) else value
        return
    loads = orjson.loads
    with open(path, "rb") as f:
        for n, raw in enumerate(f):
            if n == 0:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if raw.strip():
                try:
                    yield loads(raw)
                except orjson.JSONDecodeError:
                    yield None


# -- one source --------------------------------------------------------------------------------

def prefix_of(rel: str, layout: Layout) -> str:
    """The declared prefix a path falls under (the longest), else its first folder (undeclared)."""
    for prefix in layout.prefixes:
        if rel.startswith(prefix):
            return prefix
    head, sep, _ = rel.partition("/")
    return head + sep if sep else ""


def check_source(role: str, source: Mapping, folders: Folders, keys: set | None = None,
                 manifests: Path | None = None, tick=None, reuse: bool = False) -> SourceCoverage:
    """Count one source's rows and images per prefix; `keys` (a set) collects its match keys.
    The counts are kept in `manifests` (when given); reuse=True takes them from there while its
    caption files and every folder its images are in are unchanged (files, sizes, mtimes)."""
    spec = parse_source(source)
    if spec.image_root is None:
        raise DataPrepError(f"source {spec.name!r}: key 'image_root' is required (image paths resolve against it)")
    memo = _Memo(manifests, spec, source) if manifests is not None and keys is None else None
    if reuse and memo is not None and (known := memo.load()) is not None:
        return known
    out = _count_source(role, spec, source, folders, keys, tick, stamps := {})
    broken = broken_archives(manifests, spec.name) if manifests else {}
    layout = parse_layout(source)
    for group in out.prefixes:
        if group.missing:
            group.fix = _fix(group.prefix, layout, broken)
    if memo is not None:
        memo.save(out, stamps)
    return out


def _count_source(role: str, spec: SourceSpec, source: Mapping, folders: Folders, keys: set | None, tick,
                  stamps: dict) -> SourceCoverage:
    """The counting pass; `stamps` gets each folder's mtime as it was first consulted."""
    layout = parse_layout(source)
    root = os.path.normpath(os.path.abspath(spec.image_root))
    out = SourceCoverage(role, spec.name, spec.label or spec.name, root, min_kept_fraction=spec.min_kept_fraction)
    groups: dict[str, PrefixCoverage] = {}
    seen: dict[str, bool] = {}          # image rel path -> present
    keep = spec.path_prefix
    for n, (row_id, images) in enumerate(iter_images(spec)):
        if tick is not None and n % TICK_ROWS == 0:
            tick(n)
        rels = _relative(images, root)
        if keep is not None and rels is not None and not (rels and rels[0].startswith(keep)):
            out.outside += 1
            continue
        out.rows += 1
        if rels is None or not rels:
            group = _group(groups, UNREADABLE if rels is None else TEXT_ONLY, layout)
            group.rows += 1
            out.covered += rels is not None
            continue
        _group(groups, prefix_of(rels[0], layout), layout).rows += 1
        ok = True
        for rel in rels:
            found = seen.get(rel)
            if found is None:
                folder, _, name = f"{root}/{rel}".rpartition("/")
                if folder not in stamps:   # before its listing is read: a later change shows
                    stamps[folder] = _stamp(folder)
                found = seen[rel] = folders.present(folder, name, spec.name)
                group = _group(groups, prefix_of(rel, layout), layout)
                group.images += 1
                if found:
                    group.present += 1
                else:
                    group.missing += 1
                    if len(group.examples) < MAX_EXAMPLES:
                        group.examples.append(rel)
            ok = ok and found
        out.covered += ok
        if keys is not None:
            keys.add(match_key(spec.match_key, rels[0], row_id, spec.match_strip_prefix))
    out.prefixes = sorted(groups.values(), key=lambda g: g.prefix)
    return out


def _stamp(folder: str) -> int | None:
    try:
        return os.stat(folder).st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return None


class _Memo:
    """A source's last counts in <data_root>/.manifests/coverage-<name>.json, valid while its
    config, caption files, prefetch manifest and every folder its images are in are unchanged: a
    folder's mtime moves when a file is added, removed or renamed in it. So `run` and `plan` check
    a 2M-row source in the time of a few thousand stat calls once it was counted."""

    def __init__(self, manifests: Path, spec: SourceSpec, source: Mapping):
        import hashlib

        self.path = manifests / f"coverage-{spec.name}.json"
        stats = [(str(f), st.st_size, st.st_mtime_ns) for f in input_files(spec) for st in [f.stat()]]
        prefetch = manifests / f"{spec.name}.json"
        stats.append((str(prefetch), _stamp(str(prefetch))))
        payload = orjson.dumps({"source": spec.as_dict(), "layout": source.get("layout"), "files": stats},
                               option=orjson.OPT_SORT_KEYS, default=str)
        self.key = hashlib.sha256(payload).hexdigest()

    def load(self) -> SourceCoverage | None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        if data.get("key") != self.key or any(_stamp(f) != t for f, t in data["folders"].items()):
            return None
        known = data["coverage"]
        return SourceCoverage(**{**known, "prefixes": [PrefixCoverage(**p) for p in known["prefixes"]]})

    def save(self, out: SourceCoverage, stamps: dict) -> None:
        if not self.path.parent.is_dir():   # made by prefetch or a run's check: a data root, not any folder
            return
        try:
            write_json_atomic(self.path, {"key": self.key, "folders": stamps, "coverage": asdict(out)})
        except OSError:   # a read-only data root: the next check counts again
            pass


def _relative(images, root: str) -> list[str] | None:
    if images is None:
        return None
    try:
        return [resolve(p, root)[0] for p in images]
    except RowReject:
        return None


def _group(groups: dict, prefix: str, layout: Layout) -> PrefixCoverage:
    group = groups.get(prefix)
    if group is None:
        origin = layout.origin_of(prefix)
        what = (origin.name if origin else "-" if prefix in (TEXT_ONLY, UNREADABLE) else "(not in layout)")
        group = groups[prefix] = PrefixCoverage(prefix, what)
    return group


def _fix(prefix: str, layout: Layout, broken: dict[str, list[str]]) -> str:
    origin = layout.origin_of(prefix)
    if origin is None:
        return (f"no origin of layout.origins provides {prefix or 'these paths'!r}: add one to the source's "
                f"config, or put the images under the image root yourself")
    where = f"origin {origin.name} ({origin.how()}) into {origin.unpack_to}"
    bad = broken.get(origin.name)
    if bad:
        return (f"{where}: broken archive(s) {', '.join(bad)}: delete them from the data root's .downloads, "
                f"then `python -m harness prefetch` again")
    if origin.link_to:
        return f"{where}: fill {origin.link_to} (the source that owns it), then `python -m harness prefetch`"
    if origin.fetchable():
        return f"{where}: run `python -m harness prefetch` with the same overrides"
    return f"{where}: {origin.note or 'obtain these images by hand'}"


def broken_archives(manifests: Path, source: str) -> dict[str, list[str]]:
    """origin -> archives its last unpack found broken (the source's prefetch manifest), if any."""
    try:
        data = orjson.loads((manifests / f"{source}.json").read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    return {o["origin"]: [a["archive"] for a in o.get("archives", []) if a.get("error")]
            for o in data.get("origins", [])}


# -- several sources ---------------------------------------------------------------------------

def check_sources(sources: list[tuple[str, Mapping]], data_root: str | Path | None = None,
                  progress: bool = False, reuse: bool = False) -> Report:
    """Coverage of every (role, source), the matched pairs among them (layout.same_images_as), and
    the images on disk counted once however many sources refer to them. progress: a bar per source
    on a terminal (stderr). reuse: a source's counts kept from an earlier check while nothing it
    reads changed (then the on-disk totals leave it out: only its own counts are known)."""
    folders = Folders()
    names = {s["name"] for _, s in sources}
    pairs = [(s["name"], parse_layout(s).same_images_as) for _, s in sources]
    pairs = [(a, b) for a, b in pairs if b in names]
    paired = {n for pair in pairs for n in pair}
    keys: dict[str, set] = {}
    manifests = Path(data_root) / MANIFESTS if data_root else None
    out = []
    with _bars(progress) as bars:
        for role, source in sources:
            keys[source["name"]] = set() if source["name"] in paired else None
            task = bars.add_task(f"{source['name']}: rows read", total=None) if bars else None
            tick = (lambda n, t=task: bars.update(t, completed=n)) if bars else None
            out.append(_checked(role, source, folders, keys[source["name"]], manifests, tick, reuse))
            if out[-1].error:   # the other sources are still worth counting
                keys[source["name"]] = None
    kinds = {s["name"]: parse_source(s).match_key for _, s in sources}
    matched = [_pair(a, b, keys[a], keys[b], kinds[a]) for a, b in pairs if keys[a] is not None and keys[b] is not None]
    return Report(out, matched, len(folders.referenced), len(folders.shared), folders.listed())


def _checked(role: str, source: Mapping, folders: Folders, keys, manifests, tick, reuse) -> SourceCoverage:
    """check_source, or the source with the reason it could not be counted."""
    try:
        input_files(parse_source(source))
    except DataPrepError as exc:
        error = f"{exc}; `python -m harness prefetch` (same overrides) fetches it"
    else:
        try:
            return check_source(role, source, folders, keys, manifests, tick, reuse)
        except DataPrepError as exc:   # e.g. no image field found: its message says which key to set
            error = str(exc)
    return SourceCoverage(role, source["name"], source.get("label") or source["name"], str(source.get("image_root")),
                          error=error)


def _pair(a: str, b: str, left: set, right: set, kind: str) -> MatchedPair:
    left.discard(None)
    right.discard(None)
    only_l, only_r = left - right, right - left
    return MatchedPair(a, b, kind, len(left & right), len(only_l), len(only_r),
                       sorted(only_l)[:MAX_EXAMPLES], sorted(only_r)[:MAX_EXAMPLES])


def _bars(enabled: bool):
    import contextlib
    import sys

    if not (enabled and sys.stderr.isatty()):
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import Progress

    return Progress(console=Console(stderr=True), transient=True)


def render(report: Report, console=None) -> None:
    """The per-source, per-prefix table (rich), the matched pairs, and the refusals."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:   # logs and pipes: wide enough for a row per prefix
            console = Console(width=220)
    table = Table(title="image coverage (files on disk; nothing decoded)")
    for col in ("source", "covered", "prefix", "origin", "rows", "images", "present", "missing", "missing, e.g."):
        table.add_column(col, justify="right" if col in ("rows", "images", "present", "missing") else "left",
                         no_wrap=col != "missing, e.g.")
    for s in report.sources:
        verdict = (f">= {s.min_kept_fraction:g} ok" if s.problem() is None
                   else f"< {s.min_kept_fraction:g} [red]SHORT[/red]")
        head = [f"{s.role}: {s.name}", "[red]not counted[/red]" if s.error else f"{s.fraction:.1%} {verdict}"]
        for p in s.prefixes or [PrefixCoverage("-", "-")]:
            table.add_row(*head, p.prefix or "(root)", p.origin, f"{p.rows:,}", f"{p.images:,}", f"{p.present:,}",
                          f"{p.missing:,}", ", ".join(p.examples))
            head = ["", ""]
        table.add_section()
    console.print(table)
    console.print(f"images on disk referenced: {report.on_disk:,} (shared by several sources: {report.shared:,}); "
                  f"{report.folders_listed:,} folder(s) listed")
    for s in report.sources:
        if s.outside:
            console.print(f"{s.name}: {s.outside:,} rows outside its path_prefix (another source's images) not counted")
    if report.pairs:
        pairs = Table(title="matched pairs (layout.same_images_as)")
        for col in ("source", "same images as", "match key", "both", "only left", "only right"):
            pairs.add_column(col)
        for p in report.pairs:
            pairs.add_row(p.left, p.right, p.match_key, f"{p.both:,}", f"{p.only_left:,}", f"{p.only_right:,}")
        console.print(pairs)
    for line in report.problems():
        console.print(f"[red]refused:[/red] {line}", soft_wrap=True)


# -- a run config ------------------------------------------------------------------------------

_GENERATED = ("world://", "recaption://")   # made by the chain itself: nothing to find before it runs


def run_sources(cfg: Mapping, *, built_by_chain: bool = False) -> list[tuple[str, Mapping]]:
    """The (role, source) pairs of a run whose images are read: a recaptioned caption source by
    its image source. With built_by_chain=False those pointing into what the chain itself
    builds (the embedded world) are left out: nothing is there to check before it runs."""
    from data_prep.stage import ROLES

    out = []
    for role in ROLES:
        source = cfg.get(role) or {}
        if source.get("reader") is None:
            continue
        images = (source.get("recaption") or {}).get("images")
        if isinstance(images, Mapping):
            role, source = f"{role} (images re-captioned)", images
        if not built_by_chain and _generated(source):
            continue
        out.append((role, source))
    return out


def _generated(source: Mapping) -> bool:
    paths = source.get("paths") or []
    values = [source.get("image_root"), *([paths] if isinstance(paths, str) else paths)]
    return any(isinstance(v, str) and v.startswith(_GENERATED) for v in values)


def coverage_problems(cfg: Mapping) -> list[str]:
    """Before stage 1: a line per source whose images fall short of its min_kept_fraction, or
    whose caption files cannot be read; [] when the run may start."""
    sources = run_sources(cfg)
    if not sources:
        return []
    manifests = Path(cfg["paths"]["data_root"]) / MANIFESTS
    try:   # where the counts are kept for the next run (no data root yet: nothing worth keeping)
        manifests.mkdir(exist_ok=True)
    except OSError:   # no data root, or a read-only one: counted again each time
        pass
    try:
        report = check_sources(sources, cfg["paths"]["data_root"], reuse=True)
    except DataPrepError as exc:   # a bad layout or field map: refused before any work too
        return [f"data check: {exc}"]
    return report.problems()
