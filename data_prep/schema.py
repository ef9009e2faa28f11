"""The keys of a caption source (the captions, align_data and sft_data groups)."""

from data_prep.layout import LAYOUT_KEYS, ORIGIN_KEYS
from data_prep.source import SOURCE_DEFAULTS
from stagekit.schema import EACH, keys

HUB = keys("repo_id", "repo_type")
# Where the images come from and land (data_prep/layout.py): read by prefetch and `data check`.
ORIGIN = {**keys(*ORIGIN_KEYS), "hub": HUB}
LAYOUT = {**keys(*LAYOUT_KEYS), "origins": {EACH: ORIGIN}}
SOURCE = keys("name", "reader", "paths", "expected_rows", *SOURCE_DEFAULTS, hub=HUB, layout=LAYOUT)
# A recaptioned source names the image set it re-captions (recaption/stage.py): a source of its own.
CAPTIONS = {**SOURCE, "recaption": keys(images=SOURCE)}

SCHEMA = {"captions": CAPTIONS, "align_data": SOURCE, "sft_data": SOURCE}
