"""The keys of a captioner endpoint (the captioner group, and Prism's answer model)."""

from recaption.endpoint import CAPTIONER_DEFAULTS, SERVE_KEYS
from recaption.slurm import SLURM_DEFAULTS
from stagekit.schema import keys

CAPTIONER = keys("name", "model", *CAPTIONER_DEFAULTS, serve=keys(*SERVE_KEYS), slurm=keys(*SLURM_DEFAULTS))

SCHEMA = {"captioner": CAPTIONER}
