"""Errors of the data_prep stage and the closed set of reasons a row can be rejected for.

A stage-level problem (bad config, undetectable fields, too many rejects) raises DataPrepError;
a row-level problem raises RowReject inside a worker and ends up as one line of rejects.jsonl."""

from __future__ import annotations


class DataPrepError(Exception):
    """The stage cannot go on; the message names the file, line and key involved."""


class RowReject(Exception):
    """One row is dropped; `reason` is one of REASONS, `detail` says what exactly was wrong."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


# Every reason a row can be rejected for. Stable strings: they key the manifest's counts.
BAD_JSON = "bad_json"                      # not parseable JSON (or a JSON array cut off)
BAD_ENCODING = "bad_encoding"              # bytes that are not UTF-8
NOT_AN_OBJECT = "not_an_object"            # a JSON value that is not an object
MISSING_FIELD = "missing_field"            # no image / caption / conversations field
IMAGE_PATH_INVALID = "image_path_invalid"  # image field is not a usable path (empty, not a string)
IMAGE_OUTSIDE_ROOT = "image_outside_root"  # the path escapes image_root (.., absolute elsewhere)
IMAGE_MISSING = "image_missing"
IMAGE_UNREADABLE = "image_unreadable"      # exists but cannot be opened (permissions, a directory)
IMAGE_CORRUPT = "image_corrupt"            # zero bytes, unknown format, broken header or data
IMAGE_TRUNCATED = "image_truncated"        # end marker missing or decoder ran out of data
IMAGE_TOO_SMALL = "image_too_small"        # a side below min_image_side (0x0 included)
IMAGE_TOO_LARGE = "image_too_large"        # more pixels than max_image_pixels (decompression bombs)
CAPTION_EMPTY = "caption_empty"
CAPTION_NOT_TEXT = "caption_not_text"
BAD_CONVERSATION = "bad_conversation"      # roles do not alternate user/assistant, empty turns
IMAGE_TAG_MISMATCH = "image_tag_mismatch"  # <image> tags != images (LLaMA-Factory would raise)
OVER_CUTOFF = "over_cutoff"                # sequence longer than cutoff_len (and not truncatable)

REASONS = (
    BAD_JSON, BAD_ENCODING, NOT_AN_OBJECT, MISSING_FIELD, IMAGE_PATH_INVALID, IMAGE_OUTSIDE_ROOT,
    IMAGE_MISSING, IMAGE_UNREADABLE, IMAGE_CORRUPT, IMAGE_TRUNCATED, IMAGE_TOO_SMALL, IMAGE_TOO_LARGE,
    CAPTION_EMPTY, CAPTION_NOT_TEXT, BAD_CONVERSATION, IMAGE_TAG_MISMATCH, OVER_CUTOFF,
)
