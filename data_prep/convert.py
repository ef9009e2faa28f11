"""One batch of source rows -> LLaMA-Factory sharegpt lines, rejects and counts.

This is what the worker processes run (prepare.py runs it inline with workers=1); it holds no
state between batches, so the output depends only on the input and the plan, never on how
batches were spread over workers. Per row, in this order (the first failure is the reason):
parse -> reader fields -> image path inside image_root -> [path_prefix, subset membership: rows
outside are counted, not rejected] -> caption / conversation checks -> image file checks ->
sequence length vs cutoff_len -> output line.

Output row: {"messages": [{"role": "user", "content": "<image>..."}, {"role": "assistant", ...}],
"images": ["/abs/path.jpg"]}: images always a list, exactly one <image> tag per image (LF #5658)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from zlib import crc32

import orjson

from data_prep import errors as E
from data_prep.errors import RowReject
from data_prep.images import image_list, match_key, probe, resolve
from data_prep.readers import READERS
from data_prep.stream_json import BadJson, Batch
from data_prep.subset import key_hash
from data_prep.tokens import (DEFAULT_GRID, DEFAULT_SYSTEM, IMAGE_TAG, TextCounter, VisualGrid, estimate,
                              max_visual_tokens, visual_tokens)

MIN_TRUNCATED_TOKENS = 16  # a caption cut shorter than this is not worth training on: drop instead
_OTHER_TAGS = ("<video>", "<audio>")
_NL = orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs, resolved once by prepare.py (picklable)."""
    reader: str
    files: tuple[str, ...]
    fields: tuple[dict, ...]            # per file: {image, text, id} key names
    image_root: str
    relative_paths: bool
    check_images: bool
    full_decode: bool
    min_image_side: int
    max_image_pixels: int
    prompts: tuple[str, ...] | None     # None: keep each row's own instruction
    seed: int
    match_key: str
    path_prefix: tuple[str, ...] | None  # keep only rows whose image path starts with one of these
    strip_prefix: tuple[str, ...]       # cut off the image path before it becomes the match key
    truncate: bool
    cutoff_len: int
    min_pixels: int
    max_pixels: int
    tokenizer_json: str | None = None
    grid: VisualGrid = DEFAULT_GRID     # the model's visual unit and processor bounds (Qwen2.5-VL: 28 px)
    default_system: str | None = DEFAULT_SYSTEM   # the template's system turn for rows without one (None: none)


@dataclass
class BatchResult:
    file_idx: int
    nbytes: int
    rows: int = 0                       # rows read (those outside the path prefix or subset excluded)
    outside: int = 0                    # rows left out by the matched subset
    outside_prefix: int = 0             # rows whose image path is not under path_prefix
    # Output lines, newline-terminated, in one buffer with their end offsets: thousands of retained
    # 1-2 KB bytes objects fragment glibc's large bins and made the loop ~3x slower (measured).
    out: bytearray = field(default_factory=bytearray)
    ends: list = field(default_factory=list)
    has_image: bytearray = field(default_factory=bytearray)
    rejects: list = field(default_factory=list)   # (line, index, id, reason, detail)
    text_tokens: int = 0
    visual_tokens: int = 0
    max_len: int = 0
    lengths: Counter = field(default_factory=Counter)   # sequence length (text + visual) -> rows
    truncated: int = 0
    hashes: list = field(default_factory=list)    # pass 1 only
    positions: list = field(default_factory=list)


class Converter:
    def __init__(self, plan: Plan):
        self.plan = plan
        reader = READERS[plan.reader]
        self.kind, self.parse = reader.kind, reader.parse
        self.counter = TextCounter(plan.tokenizer_json, plan.default_system)
        self.ovh = self.counter.overheads
        self.max_vis = max_visual_tokens(plan.min_pixels, plan.max_pixels, plan.grid)
        if plan.prompts is not None:
            self.prompt_contents = [IMAGE_TAG + p for p in plan.prompts]
            self.prompt_tokens = self.counter.count(list(plan.prompts))
        # system + user turn + image markers + assistant turn: the same for every caption row
        self.caption_base = self.ovh["default_system"] + self.ovh["user"] + self.ovh["image"] + self.ovh["assistant"]

    # -- pass 1: subset keys -------------------------------------------------------------------
    def keys(self, batch: Batch) -> BatchResult:
        res = BatchResult(batch.file_idx, batch.nbytes)
        fields = self.plan.fields[batch.file_idx]
        for line, index, pos, obj in self._rows(batch, res, count_bad=False):
            try:
                key = self._identify(obj, fields, batch.file_idx, pos)[0]
            except RowReject:
                continue  # no key: pass 2 reports the row
            if key is None:
                continue  # outside path_prefix: in no subset
            res.hashes.append(key_hash(key, self.plan.seed))
            res.positions.append(pos)
        return res

    # -- pass 2: convert ----------------------------------------------------------------------
    def convert(self, batch: Batch, threshold: tuple | None = None) -> BatchResult:
        res = BatchResult(batch.file_idx, batch.nbytes)
        if self.kind == "caption":
            pending = self._captions(batch, res, threshold)
            if self.plan.check_images:
                pending = self._check_images(pending, res)
            self._finish_captions(pending, res)
            res.has_image = bytearray(b"\x01") * len(res.ends)
        else:
            pending = self._conversations(batch, res, threshold)
            if self.plan.check_images:
                pending = self._check_images(pending, res)
            self._finish_conversations(pending, res)
        return res

    def _rows(self, batch: Batch, res: BatchResult, count_bad: bool):
        """(line, index, pos, obj) of each parseable row; bad JSON goes to the rejects."""
        if batch.kind == "lines":
            loads, line = orjson.loads, batch.first_line - 1
            for raw in batch.payload.split(b"\n"):
                line += 1
                if not raw:
                    continue
                try:
                    obj = loads(raw)
                except orjson.JSONDecodeError as exc:
                    bad = _bad_line(raw, exc)
                    if bad is not None and count_bad:
                        res.rows += 1
                        res.rejects.append((line, None, None, *bad))
                    continue
                yield line, None, line, obj
        else:
            for index, line, value in batch.payload:
                if isinstance(value, BadJson):
                    if count_bad:
                        res.rows += 1
                        res.rejects.append((line, index, None, value.reason, value.detail))
                    continue
                yield line, index, index, value

    def _identify(self, obj, fields: dict, file_idx: int, pos: int):
        """(match key, row id, parts): the reader's fields, images resolved inside image_root.
        The key is None for a row outside path_prefix."""
        p = self.plan
        if self.kind == "caption":
            rid, image, caption, instruction = self.parse(obj, fields)
            rel, full = self._caption_image(image)
            key = self._caption_key(rel, rid) if self._inside(rel) else None
            return key, rid, (rel, full, caption, instruction)
        rid, image, turns = self.parse(obj, fields)
        resolved = [resolve(path, p.image_root) for path in image_list(image)]
        first = resolved[0][0] if resolved else None
        if not self._inside(first):
            return None, rid, (resolved, turns)
        key = match_key(p.match_key, first, rid, p.strip_prefix)
        if key is None:  # a text-only row: its id, else its place in the file
            key = f"id:{rid}" if rid is not None else f"row:{p.files[file_idx]}:{pos}"
        return key, rid, (resolved, turns)

    def _inside(self, rel: str | None) -> bool:
        prefixes = self.plan.path_prefix
        return prefixes is None or (rel is not None and rel.startswith(prefixes))

    def _caption_image(self, image) -> tuple[str, str]:
        if type(image) is not str:
            images = image_list(image)
            if len(images) != 1:
                raise RowReject(E.IMAGE_PATH_INVALID, f"a caption row needs one image, got {len(images)}")
            image = images[0]
        return resolve(image, self.plan.image_root)

    def _caption_key(self, rel: str, rid) -> str:
        key = match_key(self.plan.match_key, rel, rid, self.plan.strip_prefix)
        if key is None:
            raise RowReject(E.MISSING_FIELD, "no id field (match_key: id)")
        return key

    # -- caption rows: the hot path (millions of rows), hence one flat loop ---------------------
    def _captions(self, batch: Batch, res: BatchResult, threshold) -> list:
        """Check every row; write out those that need nothing more, return the rest as pending
        (when images are checked or tokens counted exactly, that happens per batch afterwards)."""
        p, fields, fidx = self.plan, self.plan.fields[batch.file_idx], batch.file_idx
        parse, caption_image, seed, relative = self.parse, self._caption_image, p.seed, p.relative_paths
        plain_keys = p.match_key == "path" and not p.strip_prefix  # the key is the path itself
        prefixes = p.path_prefix
        root = p.image_root + "/"
        own_prompt = p.prompts is None
        if not own_prompt:
            contents, prompt_tokens, n_prompts = self.prompt_contents, self.prompt_tokens, len(self.prompt_contents)
        seed32 = seed & 0xFFFFFFFF
        direct = not p.check_images and not self.counter.exact
        base, vis, cutoff, dumps, newline = self.caption_base, self.max_vis, p.cutoff_len, orjson.dumps, _NL
        buf, ends, rejects, pending, lengths = res.out, res.ends, res.rejects, [], res.lengths
        rows = outside = outside_prefix = text_tokens = max_len = n_direct = 0
        for line, index, pos, obj in self._rows(batch, res, count_bad=True):
            rid = None
            rows += 1  # taken back below if path_prefix or the subset leaves the row out
            try:
                rid, image, caption, instruction = parse(obj, fields)
                # inlined fast path of _caption_image / images.resolve for a plain relative path
                if (type(image) is str and image and image[0] not in "/." and "/." not in image
                        and "//" not in image and "\x00" not in image):
                    rel, full = image, root + image
                else:
                    rel, full = caption_image(image)
                if prefixes is not None and not rel.startswith(prefixes):
                    rows -= 1
                    outside_prefix += 1
                    continue
                key = rel if plain_keys else self._caption_key(rel, rid)
                if threshold is not None and (key_hash(key, seed), fidx, pos) > threshold:
                    rows -= 1
                    outside += 1
                    continue
                if type(caption) is not str:
                    raise RowReject(E.CAPTION_NOT_TEXT, f"caption is a {type(caption).__name__}")
                if not caption or caption.isspace():
                    raise RowReject(E.CAPTION_EMPTY, "empty caption")
                if "<" in caption and (IMAGE_TAG in caption or any(t in caption for t in _OTHER_TAGS)):
                    raise RowReject(E.IMAGE_TAG_MISMATCH, "the caption holds an <image>/<video>/<audio> tag")
                if own_prompt:
                    user, user_tok = self._own_instruction(instruction)
                else:
                    choice = crc32(key.encode("utf-8", "surrogatepass"), seed32) % n_prompts  # = subset.pick
                    user, user_tok = contents[choice], prompt_tokens[choice]
                out = rel if relative else full
                if not direct:
                    pending.append((line, index, rid, [out, full, user, user_tok, caption, vis]))
                    continue
                cap_tok = (len(caption) + 3) >> 2 if caption.isascii() else estimate(caption)
                total = base + user_tok + vis + cap_tok
                if total > cutoff:
                    self._emit_caption(res, line, index, rid, out, user, user_tok, caption, cap_tok, vis)
                    continue
                buf += dumps({"messages": [{"role": "user", "content": user},
                                           {"role": "assistant", "content": caption}], "images": [out]}, option=newline)
                ends.append(len(buf))
                n_direct += 1
                text_tokens += total - vis
                lengths[total] += 1
                if total > max_len:
                    max_len = total
            except RowReject as rej:
                rejects.append((line, index, _jsonable(rid), rej.reason, rej.detail))
            except orjson.JSONEncodeError:  # lone surrogates (\udXXX escapes) cannot be written as UTF-8
                rejects.append((line, index, _jsonable(rid), E.BAD_ENCODING, "text is not valid Unicode"))
        res.rows += rows
        res.outside += outside
        res.outside_prefix += outside_prefix
        res.text_tokens += text_tokens
        res.visual_tokens += vis * n_direct
        res.max_len = max(res.max_len, max_len)
        return pending

    def _own_instruction(self, instruction) -> tuple[str, int | None]:
        """prompts: source -- the row's own instruction, its <image> tag moved to the front."""
        if type(instruction) is not str:
            raise RowReject(E.MISSING_FIELD, "no instruction in the row (prompts: source)")
        text = instruction.replace(IMAGE_TAG, "").strip()
        return IMAGE_TAG + text, (None if self.counter.exact else estimate(text))

    def _finish_captions(self, pending: list, res: BatchResult) -> None:
        """Count tokens for the pending rows in one tokenizer call, then write them out."""
        if not pending:
            return
        counter = self.counter
        if counter.exact:
            rows = [row for _, _, _, row in pending]
            caption_tokens = counter.count([row[4] for row in rows])
            own = [i for i, row in enumerate(rows) if row[3] is None]
            for i, n in zip(own, counter.count([rows[i][2][len(IMAGE_TAG):] for i in own])):
                rows[i][3] = n
        for n, (line, index, rid, row) in enumerate(pending):
            out, _, user, user_tok, caption, vis = row
            cap_tok = caption_tokens[n] if counter.exact else estimate(caption)
            try:
                self._emit_caption(res, line, index, rid, out, user, user_tok, caption, cap_tok, vis)
            except orjson.JSONEncodeError:
                res.rejects.append((line, index, _jsonable(rid), E.BAD_ENCODING, "text is not valid Unicode"))

    def _emit_caption(self, res, line, index, rid, out, user, user_tok, caption, cap_tok, vis) -> None:
        total = self.caption_base + user_tok + vis + cap_tok
        if total > self.plan.cutoff_len:
            caption, cap_tok = self._shorten(caption, self.plan.cutoff_len - (total - cap_tok), res)
            if caption is None:
                res.rejects.append((line, index, _jsonable(rid), E.OVER_CUTOFF,
                                    f"{total} tokens ({vis} visual) > cutoff_len {self.plan.cutoff_len}"))
                return
            total = self.caption_base + user_tok + vis + cap_tok
        res.out += orjson.dumps({"messages": [{"role": "user", "content": user},
                                              {"role": "assistant", "content": caption}], "images": [out]}, option=_NL)
        res.ends.append(len(res.out))
        res.text_tokens += total - vis
        res.visual_tokens += vis
        res.lengths[total] += 1
        res.max_len = max(res.max_len, total)

    # -- conversation rows (SFT data) ---------------------------------------------------------
    def _conversations(self, batch: Batch, res: BatchResult, threshold) -> list:
        fields, fidx, seed, pending = self.plan.fields[batch.file_idx], batch.file_idx, self.plan.seed, []
        for line, index, pos, obj in self._rows(batch, res, count_bad=True):
            rid = None
            res.rows += 1  # taken back below if path_prefix or the subset leaves the row out
            try:
                key, rid, (resolved, turns) = self._identify(obj, fields, fidx, pos)
                if key is None:
                    res.rows -= 1
                    res.outside_prefix += 1
                    continue
                if threshold is not None and (key_hash(key, seed), fidx, pos) > threshold:
                    res.rows -= 1
                    res.outside += 1
                    continue
                self._check_turns(turns, len(resolved))
                out = [rel if self.plan.relative_paths else full for rel, full in resolved]
                pending.append((line, index, rid, [out, [full for _, full in resolved], turns,
                                                   self.max_vis * len(resolved)]))
            except RowReject as rej:
                res.rejects.append((line, index, _jsonable(rid), rej.reason, rej.detail))
        return pending

    @staticmethod
    def _check_turns(turns: list, n_images: int) -> None:
        """What LLaMA-Factory's sharegpt converter and mm_plugin would reject or crash on."""
        start = 1 if turns[0][0] == "system" else 0
        body = len(turns) - start
        if not body or body % 2:
            raise RowReject(E.BAD_CONVERSATION, f"{body} turns after the system turn: need user/assistant pairs")
        tags = 0
        for i, (role, text) in enumerate(turns):
            if i >= start and role != ("user" if (i - start) % 2 == 0 else "assistant"):
                raise RowReject(E.BAD_CONVERSATION, f"turn {i} is {role!r}: roles must alternate user/assistant")
            if type(text) is not str:
                raise RowReject(E.CAPTION_NOT_TEXT, f"turn {i} ({role}) text is a {type(text).__name__}")
            n = text.count(IMAGE_TAG)
            if (n and role != "user") or any(t in text for t in _OTHER_TAGS):
                raise RowReject(E.IMAGE_TAG_MISMATCH, f"turn {i} ({role}) holds a media tag")
            if not n and (not text or text.isspace()):
                raise RowReject(E.CAPTION_EMPTY, f"turn {i} ({role}) is empty")
            tags += n
        if tags != n_images:
            raise RowReject(E.IMAGE_TAG_MISMATCH, f"{tags} <image> tags for {n_images} images")

    def _finish_conversations(self, pending: list, res: BatchResult) -> None:
        counts = self._turn_counts([row[2] for _, _, _, row in pending])
        cutoff, ovh = self.plan.cutoff_len, self.ovh
        for (line, index, rid, row), turn_tokens in zip(pending, counts):
            out, _, turns, vis = row
            text = sum(turn_tokens) + sum(ovh[role] for role, _ in turns) + len(out) * ovh["image"]
            text += 0 if turns[0][0] == "system" else ovh["default_system"]
            if text + vis > cutoff:  # shorten the last assistant message, if allowed
                last, last_tok = turns[-1][1], turn_tokens[-1]
                last, new_tok = self._shorten(last, cutoff - (text + vis - last_tok), res)
                if last is None:
                    res.rejects.append((line, index, _jsonable(rid), E.OVER_CUTOFF,
                                        f"{text + vis} tokens ({vis} visual) > cutoff_len {cutoff}"))
                    continue
                turns = turns[:-1] + [("assistant", last)]
                text += new_tok - last_tok
            try:
                res.out += orjson.dumps({"messages": [{"role": r, "content": t} for r, t in turns], "images": out},
                                        option=_NL)
                res.ends.append(len(res.out))
            except orjson.JSONEncodeError:
                res.rejects.append((line, index, _jsonable(rid), E.BAD_ENCODING, "text is not valid Unicode"))
                continue
            res.has_image.append(1 if out else 0)
            res.text_tokens += text
            res.visual_tokens += vis
            res.lengths[text + vis] += 1
            res.max_len = max(res.max_len, text + vis)

    def _turn_counts(self, conversations: list) -> list[list[int]]:
        """Tokens of each turn's text; user text is counted in the pieces between <image> tags."""
        pieces, owners = [], []
        for c, turns in enumerate(conversations):
            for t, (role, text) in enumerate(turns):
                for piece in (text.split(IMAGE_TAG) if role == "user" else (text,)):
                    if piece:
                        pieces.append(piece)
                        owners.append((c, t))
        counts = [[0] * len(turns) for turns in conversations]
        for (c, t), n in zip(owners, self.counter.count(pieces)):
            counts[c][t] += n
        return counts

    # -- shared steps -------------------------------------------------------------------------
    def _check_images(self, pending: list, res: BatchResult) -> list:
        """Replace the visual-token upper bound by the real count; reject rows with a bad image."""
        p, sizes, kept = self.plan, {}, []
        for item in pending:
            line, index, rid, row = item
            paths = [row[1]] if self.kind == "caption" else row[1]
            try:
                vis = 0
                for path in paths:
                    if path not in sizes:
                        sizes[path] = probe(path, full_decode=p.full_decode, min_side=p.min_image_side,
                                            max_pixels=p.max_image_pixels)
                    vis += visual_tokens(*sizes[path], p.min_pixels, p.max_pixels, p.grid)
            except RowReject as rej:
                res.rejects.append((line, index, _jsonable(rid), rej.reason, rej.detail))
                continue
            row[-1] = vis
            kept.append(item)
        return kept

    def _shorten(self, text: str, budget: int, res: BatchResult):
        """(shortened text, its tokens) when over_cutoff is truncate and enough is left, else (None, 0)."""
        if not self.plan.truncate or budget < MIN_TRUNCATED_TOKENS:
            return None, 0
        short = self.counter.truncate(text, budget)
        if not short.strip():
            return None, 0
        res.truncated += 1
        return short, self.counter.count([short])[0]


def _bad_line(raw: bytes, exc: Exception):
    """(reason, detail) of an unparseable JSONL line; None for a blank line (not a row)."""
    if not raw.strip():
        return None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return E.BAD_ENCODING, f"bytes that are not UTF-8 at byte {err.start}"
    return E.BAD_JSON, str(exc)[:300]


def _jsonable(rid):
    return rid if rid is None or type(rid) in (str, int) else str(rid)
