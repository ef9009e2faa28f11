"""Where a source's images come from and where they land: the `layout` block of a caption/SFT source.

    layout:
      same_images_as: sharegpt4v_1m      # Table 2: a source whose image set this one must equal
      origins:                           # one entry per archive set or folder that provides images
        coco:
          provides: [coco/]              # the row path prefixes (relative to image_root) it fills
          unpack_to: ${paths.data_root}/ShareGPT4V/data/coco
          hub: {repo_id: ..., repo_type: dataset}   # either: hub files matching `files`
          files: ["images/*.zip"]
          urls: [http://.../train2017.zip]          # or: archive URLs (or local paths)
          url_list: /path/urls.txt       # or: a file the user writes, one URL (and optional sha256) a line
          link_to: ${paths.data_root}/ShareGPT4V/data   # or: another source's folder (a symlink)
          note: where to get it when nothing above can fetch it

An origin with none of hub/urls/url_list/link_to is obtained by hand (its `note` says how); the
coverage check then names it as the fix. data_prep itself ignores the block: it decides nothing
about the prepared rows (prefetch and `data check` read it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from data_prep.errors import DataPrepError

ORIGIN_KEYS = ("provides", "unpack_to", "hub", "files", "urls", "url_list", "link_to", "note")
LAYOUT_KEYS = ("same_images_as", "origins")
_FETCHERS = ("hub", "urls", "url_list", "link_to")


@dataclass(frozen=True)
class Origin:
    name: str
    provides: tuple[str, ...]
    unpack_to: str | None
    repo_id: str | None = None
    repo_type: str = "dataset"
    files: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    url_list: str | None = None
    link_to: str | None = None
    note: str | None = None

    def how(self) -> str:
        """Where its images come from, in a few words (tables and fixes)."""
        if self.link_to:
            return f"link to {self.link_to}"
        if self.repo_id:
            return f"hub {self.repo_id} {', '.join(self.files)}"
        if self.urls:
            return f"{len(self.urls)} URL(s)" if len(self.urls) > 1 else self.urls[0]
        if self.url_list:
            return f"URL list {self.url_list}"
        return self.note or "obtained by hand"

    def fetchable(self) -> bool:
        return any((self.repo_id, self.urls, self.url_list, self.link_to))


@dataclass(frozen=True)
class Layout:
    source: str
    origins: tuple[Origin, ...] = ()
    same_images_as: str | None = None
    prefixes: tuple[str, ...] = field(default=())

    def origin_of(self, prefix: str) -> Origin | None:
        return next((o for o in self.origins if prefix in o.provides), None)


def parse_layout(source: Mapping) -> Layout:
    """The layout block of a source (empty when it has none); errors name the key."""
    name = source.get("name")
    block = source.get("layout") or {}
    if not isinstance(block, Mapping):
        raise DataPrepError(f"source {name!r}: layout must be a mapping with keys {', '.join(LAYOUT_KEYS)}")
    _unknown(name, "layout", block, LAYOUT_KEYS)
    origins = tuple(_origin(name, key, value) for key, value in (block.get("origins") or {}).items())
    prefixes = [p for o in origins for p in o.provides]
    twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
    if twice:
        raise DataPrepError(f"source {name!r}: layout.origins: prefix(es) {twice} provided by more than one origin")
    # longest first: a row belongs to the most specific declared prefix
    ordered = tuple(sorted(prefixes, key=len, reverse=True))
    return Layout(name, origins, block.get("same_images_as"), ordered)


def _origin(source: str, name: str, value) -> Origin:
    where = f"layout.origins.{name}"
    if not isinstance(value, Mapping):
        raise DataPrepError(f"source {source!r}: {where} must be a mapping with keys {', '.join(ORIGIN_KEYS)}")
    _unknown(source, where, value, ORIGIN_KEYS)
    provides = value.get("provides")
    provides = [provides] if isinstance(provides, str) else list(provides or [])
    if not provides or not all(isinstance(p, str) and not p.startswith(("/", "./")) for p in provides):
        raise DataPrepError(f"source {source!r}: {where}.provides must list the row path prefixes (relative to "
                            f"image_root, e.g. 'coco/'; '' for all rows) its images fill; got {value.get('provides')!r}")
    fetchers = [k for k in _FETCHERS if value.get(k)]
    if len(fetchers) > 1:
        raise DataPrepError(f"source {source!r}: {where}: give one of {', '.join(_FETCHERS)}, not {fetchers}")
    hub = value.get("hub") or {}
    if hub and (not hub.get("repo_id") or not value.get("files")):
        raise DataPrepError(f"source {source!r}: {where}: hub needs repo_id and `files` (patterns of the archives)")
    if fetchers and not value.get("unpack_to"):
        raise DataPrepError(f"source {source!r}: {where}.unpack_to is required (the folder its archives unpack "
                            f"into, or where the link to link_to is made)")
    return Origin(name=name, provides=tuple(provides), unpack_to=value.get("unpack_to"),
                  repo_id=hub.get("repo_id"), repo_type=hub.get("repo_type") or "dataset",
                  files=tuple(value.get("files") or ()), urls=tuple(value.get("urls") or ()),
                  url_list=value.get("url_list"), link_to=value.get("link_to"), note=value.get("note"))


def _unknown(source, where: str, block: Mapping, allowed: tuple) -> None:
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise DataPrepError(f"source {source!r}: {where}: unknown keys {unknown}; allowed: {', '.join(allowed)}")
