"""The keys of the prism group: its benchmark files and its answer model (a captioner endpoint)."""

from recaption.schema import CAPTIONER
from stagekit.schema import keys

SCHEMA = {"prism": keys("name", "label", "image_root", "samples", "answer_prompt", "benchmarks", "scoring",
                        answerer=CAPTIONER)}
