"""A data root in the published layouts, small: the archives as their origins ship them, served
from a folder by a loopback HTTP server standing in for the hub and the image sites.

    served/images.zip                     LLaVA-558K: 4 images in 00000/ and 00001/
    served/000001.zip ... 000003.zip      DenseFusion-1M: 4 images each in 0000NN/; 000002.zip truncated
    served/sam.tar.part-aa, -ab, -ac      SA-1B's sa_1.jpg ... sa_5.jpg as one tar split in three
    <root>/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json     5 rows, one naming 00002/000020001.jpg (in no archive)
    <root>/DenseFusion-1M/DenseFusion-1M.jsonl            12 rows, 4 per zip
    <root>/ShareGPT4V/share-captioner_coco_lcs_sam_1246k_1107.json
                                          10 rows: coco/ 3, llava/ 2, sam/ 5
    <root>/ShareGPT4V/data/coco/train2017/{1,2,3}.jpg     the tree as the user left it; sam/ absent
    <root>/CapRL-2M/caprl.jsonl           6 rows: sharegpt4v/ 4 (one image ShareGPT4V lacks), densefusion/ 2
    <root>/Open-LLaVA-NeXT-mix1M/open-llava-next_instruct_mix1M.json   3 rows: coco/ 2, text-only 1

The images are a few bytes each: nothing here decodes them."""

from __future__ import annotations

import functools
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

IMAGE = b"\xff\xd8 not decoded \xff\xd9"


def _zip(path: Path, names: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, IMAGE)


def _caption(image: str, n: int) -> dict:
    return {"id": str(n), "image": image,
            "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": f"cap {n}"}]}


def build(base: Path) -> tuple[Path, Path]:
    """(served folder, data root), both under base."""
    served, root = base / "served", base / "data"
    served.mkdir(parents=True)
    llava = ["00000/000000001.jpg", "00000/000000002.jpg", "00001/000010001.jpg", "00001/000010002.jpg"]
    _zip(served / "images.zip", llava)
    for k in (1, 2, 3):
        _zip(served / f"{k:06d}.zip", [f"{k:06d}/{i}.jpg" for i in range(4)])
    whole = (served / "000002.zip").read_bytes()
    (served / "000002.zip").write_bytes(whole[: len(whole) // 2])   # cut off: no central directory
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(1, 6):
            info = tarfile.TarInfo(f"sa_{i}.jpg")
            info.size = len(IMAGE)
            tf.addfile(info, io.BytesIO(IMAGE))
    data = buf.getvalue()
    third = len(data) // 3 + 1
    for j, suffix in enumerate(("aa", "ab", "ac")):
        (served / f"sam.tar.part-{suffix}").write_bytes(data[j * third:(j + 1) * third])

    (root / "LLaVA-Pretrain").mkdir(parents=True)
    rows = [_caption(p, n) for n, p in enumerate([*llava, "00002/000020001.jpg"])]
    (root / "LLaVA-Pretrain" / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(rows))
    (root / "DenseFusion-1M").mkdir()
    with open(root / "DenseFusion-1M" / "DenseFusion-1M.jsonl", "w") as f:
        for k in (1, 2, 3):
            for i in range(4):
                f.write(json.dumps({"image_id": f"{k}-{i}", "image_path": f"{k:06d}/{i}.jpg", "caption": "c"}) + "\n")
    sgpt = ([f"coco/train2017/{i}.jpg" for i in (1, 2, 3)]
            + ["llava/llava_pretrain/images/00000/000000001.jpg", "llava/llava_pretrain/images/00001/000010001.jpg"]
            + [f"sam/images/sa_{i}.jpg" for i in range(1, 6)])
    (root / "ShareGPT4V" / "data" / "coco" / "train2017").mkdir(parents=True)
    for i in (1, 2, 3):
        (root / "ShareGPT4V" / "data" / "coco" / "train2017" / f"{i}.jpg").write_bytes(IMAGE)
    (root / "ShareGPT4V" / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(
        json.dumps([_caption(p, n) for n, p in enumerate(sgpt)]))
    (root / "CapRL-2M").mkdir()
    caprl = ["sharegpt4v/coco/train2017/1.jpg", "sharegpt4v/coco/train2017/2.jpg", "sharegpt4v/coco/train2017/9.jpg",
             "sharegpt4v/sam/images/sa_1.jpg", "densefusion/000001/0.jpg", "densefusion/000003/1.jpg"]
    (root / "CapRL-2M" / "caprl.jsonl").write_text(
        "".join(json.dumps({"image": p, "caption": f"dense {n}"}) + "\n" for n, p in enumerate(caprl)))
    (root / "Open-LLaVA-NeXT-mix1M").mkdir()
    sft = [_caption("coco/train2017/1.jpg", 0), _caption("coco/train2017/3.jpg", 1),
           {"id": "t", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
    (root / "Open-LLaVA-NeXT-mix1M" / "open-llava-next_instruct_mix1M.json").write_text(json.dumps(sft))
    (root / "urls").mkdir()
    return served, root


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """Files of a folder, with HTTP Range ("bytes=N-") as the hub's CDN serves them; the Range
    headers asked for are kept in `ranges`."""
    ranges: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        asked = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not asked or not path.is_file():
            return super().do_GET()
        self.ranges.append(asked)
        data = path.read_bytes()
        start = int(asked.removeprefix("bytes=").split("-")[0])
        if start >= len(data):
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:])


def serve(folder: Path):
    """A loopback HTTP server over folder, in a daemon thread: (server, base URL)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
