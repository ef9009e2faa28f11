"""The keys of a caption source (the captions, align_data and sft_data groups)."""

from data_prep.source import SOURCE_DEFAULTS
from stagekit.schema import keys

HUB = keys("repo_id", "repo_type")
SOURCE = keys("name", "reader", "paths", "expected_rows", *SOURCE_DEFAULTS, hub=HUB)
# A recaptioned source names the image set it re-captions (recaption/stage.py): a source of its own.
CAPTIONS = {**SOURCE, "recaption": keys(images=SOURCE)}

SCHEMA = {"captions": CAPTIONS, "align_data": SOURCE, "sft_data": SOURCE}
