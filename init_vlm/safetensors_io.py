"""Minimal safetensors reading and writing on plain file handles, one tensor at a time.

Why not safetensors' own API: `safe_open` memory-maps whole shards, and every touched page of the map
counts in the process's resident memory until the handle closes, so reading two sources through it
costs their full size. `save_file` wants every tensor of a shard in memory at once. Here headers are
parsed, byte ranges are copied with bounded buffers, and an output shard's header is written up
front from the planned shapes, so memory stays at about one tensor."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

# safetensors dtype tag -> bytes per element
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
TORCH_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_MAX_HEADER = 100_000_000  # the format's own limit; anything bigger means a corrupt length prefix
CHUNK = 64 << 20


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: str          # safetensors tag, e.g. "BF16"
    shape: tuple[int, ...]
    start: int          # absolute byte offsets in `file`
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and sanity-check a shard's header; ValueError says what is wrong (truncation, bad offsets...)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", prefix)
        if n > _MAX_HEADER or 8 + n > size:
            raise ValueError(f"{path.name} has an invalid header length ({n}) for a {size}-byte file")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path.name} has an unreadable header ({err.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} has a header that is a JSON {type(header).__name__}, not an object; "
                         f"the shard is corrupt")
    header.pop("__metadata__", None)
    return {name: _entry(path, name, info, 8 + n, size) for name, info in header.items()}


def _entry(path: Path, name: str, info, base: int, size: int) -> TensorEntry:
    problem = _malformed(info)
    if problem:
        raise ValueError(f"{path.name}: header entry of tensor {name} {problem}; the shard is corrupt")
    dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    if start > end or end - start != _numel(shape) * DTYPE_SIZES[dtype] or base + end > size:
        raise ValueError(f"{path.name}: tensor {name} ({dtype}, shape {list(shape)}) does not fit the file "
                         f"(offsets {start}..{end}, data size {size - base}); the shard is corrupt or truncated")
    return TensorEntry(path, dtype, shape, base + start, base + end)


def _malformed(info) -> str | None:
    """What is wrong with one header entry's fields, checked before they are used as numbers."""
    if not isinstance(info, dict):
        return f"is a JSON {type(info).__name__}, not an object"
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            return f"has no {key}"
    if not isinstance(info["dtype"], str) or info["dtype"] not in DTYPE_SIZES:
        return f"has an unknown dtype {info['dtype']!r}"
    if not _counts(info["shape"]):
        return f"has shape {info['shape']!r}, not a list of non-negative integers"
    if not _counts(info["data_offsets"]) or len(info["data_offsets"]) != 2:
        return f"has data_offsets {info['data_offsets']!r}, not [start, end] in bytes"
    return None


def _counts(value) -> bool:
    # bool is an int subclass in Python; JSON true/false is never a size.
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def read_weight_map(index: Path) -> dict[str, str]:
    """The tensor -> shard file map of a sharded checkpoint's index; ValueError says what is wrong."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(f"{index.name} is not a valid index (no weight_map)") from None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ValueError(f"{index.name} is not a valid index (weight_map is not tensor name -> shard file)")
    return weight_map


def read_tensor(entry: TensorEntry):
    """Load one tensor into memory (a private copy, no memory map)."""
    import torch

    buf = bytearray(entry.nbytes)
    with open(entry.file, "rb") as fh:
        fh.seek(entry.start)
        if fh.readinto(buf) != entry.nbytes:
            raise ValueError(f"{entry.file.name}: unexpected end of file")
    if not buf:
        return torch.empty(entry.shape, dtype=torch_dtype(entry.dtype))
    return torch.frombuffer(buf, dtype=torch_dtype(entry.dtype)).reshape(entry.shape)


def iter_chunks(entry: TensorEntry, chunk_bytes: int = CHUNK):
    """(element offset, flat tensor) pieces of a tensor, so big tensors can be compared in bounded memory."""
    import torch

    itemsize = DTYPE_SIZES[entry.dtype]
    step = max(chunk_bytes // itemsize, 1) * itemsize
    with open(entry.file, "rb") as fh:
        fh.seek(entry.start)
        for offset in range(0, entry.nbytes, step):
            buf = bytearray(min(step, entry.nbytes - offset))
            if fh.readinto(buf) != len(buf):
                raise ValueError(f"{entry.file.name}: unexpected end of file")
            yield offset // itemsize, torch.frombuffer(buf, dtype=torch_dtype(entry.dtype))


def torch_dtype(tag: str):
    import torch

    return getattr(torch, TORCH_DTYPES.get(tag, {"I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
                                                   "U8": "uint8", "BOOL": "bool"}.get(tag, "")))


def safetensors_tag(dtype) -> str:
    import torch

    return {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64"}[dtype]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ShardWriter:
    """Writes one safetensors file whose tensor list (name, tag, shape) is known before any data.

    Tensors must then be supplied in that order via `copy_from` (raw bytes of a source entry) or
    `write_tensor` (an in-memory tensor); the sha256 of the file is computed on the way."""

    def __init__(self, path: Path, specs: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]):
        self.path, self._order, self._pos = path, [name for name, _, _ in specs], 0
        header, offset = {"__metadata__": metadata}, 0
        self._sizes = {}
        for name, tag, shape in specs:
            nbytes = DTYPE_SIZES[tag] * _numel(shape)
            header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._sizes[name] = nbytes
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format aligns the data section to 8 bytes
        self._fh = open(path, "wb")
        self._sha = hashlib.sha256()
        self._write(struct.pack("<Q", len(raw)) + raw)

    def copy_from(self, name: str, entry: TensorEntry) -> None:
        self._expect(name, entry.nbytes)
        with open(entry.file, "rb") as src:
            src.seek(entry.start)
            left = entry.nbytes
            while left:
                chunk = src.read(min(CHUNK, left))
                if not chunk:
                    raise ValueError(f"{entry.file.name}: unexpected end of file while copying {name}")
                self._write(chunk)
                left -= len(chunk)

    def write_tensor(self, name: str, tensor) -> None:
        raw = _tensor_bytes(tensor)
        self._expect(name, len(raw))
        self._write(raw)

    def close(self) -> str:
        if self._pos != len(self._order):
            raise ValueError(f"{self.path.name}: {len(self._order) - self._pos} planned tensors were not written")
        self._fh.close()
        return self._sha.hexdigest()

    def _expect(self, name: str, nbytes: int) -> None:
        want = self._order[self._pos] if self._pos < len(self._order) else None
        if name != want or nbytes != self._sizes[name]:
            raise ValueError(f"{self.path.name}: got {name} ({nbytes} bytes), planned {want}")
        self._pos += 1

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self._sha.update(data)


def _numel(shape) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _tensor_bytes(tensor) -> memoryview:
    import torch

    flat = tensor.detach().contiguous().reshape(-1)
    # bfloat16 has no numpy dtype: reinterpret the same bytes as int16 to get at them.
    if flat.dtype in (torch.bfloat16, torch.float16):
        flat = flat.view(torch.int16)
    return memoryview(flat.numpy()).cast("B")
