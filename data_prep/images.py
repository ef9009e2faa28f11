"""Image paths and image checks.

Paths: every image path resolves against image_root and may never leave it (a row of a downloaded
JSON file must not make training read /etc/passwd). The check is lexical; symlinks inside
image_root are followed, since the user laid them out.

Checks (what kills a training run hours in, LF #8733): missing, unreadable, zero bytes, unknown
format, 0x0 or tiny, too many pixels (decompression bombs), truncated. By default only the header
and the last KiB are read: PNG / JPEG / GIF / WebP / BMP sizes are parsed here (several times faster
than PIL and able to tell a 0x0 image from a corrupt one), other formats go through PIL's lazy
open; a missing end marker (JPEG EOI, PNG IEND, GIF trailer, RIFF/BMP size) reads as truncated.
full_decode=True decodes every image with PIL."""

from __future__ import annotations

import os
import struct
from contextlib import contextmanager

from data_prep.errors import (IMAGE_CORRUPT, IMAGE_MISSING, IMAGE_OUTSIDE_ROOT, IMAGE_PATH_INVALID,
                              IMAGE_TOO_LARGE, IMAGE_TOO_SMALL, IMAGE_TRUNCATED, IMAGE_UNREADABLE, RowReject)

HEAD_BYTES = 1 << 16
TAIL_BYTES = 1 << 10


def image_list(value) -> list:
    """A row's image field as a list of path strings (a string, a list, or {path: ...} like HF Image)."""
    if value is None:
        return []
    if type(value) is str:
        return [value]
    if type(value) is dict and "path" in value:
        return [value["path"]]
    if type(value) is list:
        return [v["path"] if type(v) is dict and "path" in v else v for v in value]
    raise RowReject(IMAGE_PATH_INVALID, f"image field is a {type(value).__name__}")


def resolve(path, root: str) -> tuple[str, str]:
    """(path relative to root, absolute path) of one image path; root is normalized and absolute."""
    if type(path) is not str or not path or "\x00" in path:
        raise RowReject(IMAGE_PATH_INVALID, f"image path {path!r}")
    if path[0] not in "/." and "/." not in path and "//" not in path:
        return path, f"{root}/{path}"  # already normal: skip normpath on the hot path
    full = os.path.normpath(os.path.join(root, path))
    if not full.startswith(root + "/"):
        raise RowReject(IMAGE_OUTSIDE_ROOT, f"{path!r} resolves to {full}, outside image_root {root}")
    return full[len(root) + 1:], full


def probe(path: str, *, full_decode: bool, min_side: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) of a usable image, or RowReject saying what is wrong with it."""
    try:
        f = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        raise RowReject(IMAGE_MISSING, path) from None
    except OSError as exc:  # a directory, permissions, I/O
        raise RowReject(IMAGE_UNREADABLE, f"{path}: {exc.strerror or exc}") from None
    with f:
        try:
            fmt, width, height = _header(f, path)
        except OSError as exc:
            raise RowReject(IMAGE_UNREADABLE, f"{path}: {exc.strerror or exc}") from None
    if min(width, height) < min_side:
        raise RowReject(IMAGE_TOO_SMALL, f"{path}: {width}x{height} (min side {min_side})")
    if width * height > max_pixels:
        raise RowReject(IMAGE_TOO_LARGE, f"{path}: {width}x{height} = {width * height} px > {max_pixels}")
    if full_decode:
        _decode(path)
    return width, height


def _header(f, path: str) -> tuple[str, int, int]:
    head = f.read(HEAD_BYTES)
    if not head:
        raise RowReject(IMAGE_CORRUPT, f"{path}: zero-byte file")
    size = os.fstat(f.fileno()).st_size
    sniffed = _sniff(head, f)
    if sniffed is None:
        return _pil_header(f, path)
    fmt, width, height = sniffed
    if size > len(head):
        f.seek(size - TAIL_BYTES)
        tail = f.read(TAIL_BYTES)
    else:
        tail = head[-TAIL_BYTES:]
    if not _complete(fmt, head, tail, size):
        raise RowReject(IMAGE_TRUNCATED, f"{path}: {fmt} end marker missing ({size} bytes)")
    return fmt, width, height


def _sniff(head: bytes, f):
    """(format, width, height) for the common formats, None for anything else; RowReject if broken."""
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return ("png", *struct.unpack(">II", head[16:24]))
        if head[:2] == b"\xff\xd8":
            return ("jpeg", *_jpeg_size(head, f))
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return ("gif", *struct.unpack("<HH", head[6:10]))
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return ("webp", *_webp_size(head))
        if head[:2] == b"BM":
            return ("bmp", *_bmp_size(head))
    except struct.error:
        raise RowReject(IMAGE_CORRUPT, "header cut short") from None
    return None


def _jpeg_size(head: bytes, f) -> tuple[int, int]:
    """Walk the JPEG markers to the first SOFn frame header (EXIF thumbnails may push it past `head`)."""
    data, base, i = head, 0, 2
    while True:
        if i + 9 > base + len(data):  # need bytes beyond the window: read the next one
            f.seek(i)
            data, base = f.read(HEAD_BYTES), i
            if len(data) < 9:
                raise RowReject(IMAGE_CORRUPT, "JPEG without a frame header")
        j = i - base
        if data[j] != 0xFF:
            raise RowReject(IMAGE_CORRUPT, f"JPEG marker expected at byte {i}")
        marker = data[j + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            raise RowReject(IMAGE_CORRUPT, "JPEG without a frame header")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[j + 5:j + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[j + 2:j + 4])[0]


def _webp_size(head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 ":
        return struct.unpack("<H", head[26:28])[0] & 0x3FFF, struct.unpack("<H", head[28:30])[0] & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", head[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    raise RowReject(IMAGE_CORRUPT, f"unknown WebP chunk {chunk!r}")


def _bmp_size(head: bytes) -> tuple[int, int]:
    if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # negative height = top-down rows


def _complete(fmt: str, head: bytes, tail: bytes, size: int) -> bool:
    if fmt == "jpeg":
        return b"\xff\xd9" in tail  # EOI; some writers pad after it, hence a search, not endswith
    if fmt == "png":
        return b"IEND" in tail
    if fmt == "gif":
        return b";" in tail[-16:]
    if fmt == "webp":
        return size >= struct.unpack("<I", head[4:8])[0] + 8
    if fmt == "bmp":
        return size >= struct.unpack("<I", head[2:6])[0]  # 0 (unknown) passes
    return True


@contextmanager
def _own_pixel_bound():
    """Lift PIL's decompression-bomb limit for one open: our max_pixels applies instead, and PIL's
    error would come before we can name the reason. The global is restored, since inline (workers
    = 1) this runs in the caller's process, which may rely on PIL's default."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield Image
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _pil_header(f, path: str) -> tuple[str, int, int]:
    from PIL import UnidentifiedImageError

    f.seek(0)
    try:
        with _own_pixel_bound() as Image, Image.open(f) as im:
            return (im.format or "unknown").lower(), im.width, im.height
    except (UnidentifiedImageError, SyntaxError, ValueError, struct.error) as exc:
        raise RowReject(IMAGE_CORRUPT, f"{path}: {exc}") from None


def _decode(path: str) -> None:
    try:
        with _own_pixel_bound() as Image, Image.open(path) as im:  # bounded above, before decoding
            im.load()
    except OSError as exc:
        reason = IMAGE_TRUNCATED if "truncated" in str(exc) else IMAGE_CORRUPT
        raise RowReject(reason, f"{path}: {exc}") from None
    except Exception as exc:  # PIL raises many types on broken data
        raise RowReject(IMAGE_CORRUPT, f"{path}: {type(exc).__name__}: {exc}") from None


def match_key(kind: str, rel: str | None, row_id, strip: tuple[str, ...] = ()) -> str | None:
    """What makes two rows of different sources "the same image" for matched subsets and prompt
    choice; `strip` (match_strip_prefix) cuts a source's own folder prefix off the path first."""
    if kind == "id":
        return None if row_id is None else str(row_id)
    if rel is None:
        return None
    if kind == "basename":
        return rel.rsplit("/", 1)[-1]
    for prefix in strip:
        if rel.startswith(prefix):
            return rel[len(prefix):]
    return rel
