"""Caption and SFT sources -> LLaMA-Factory sharegpt datasets that are known to load, with an exact
account of every dropped row. Entry point: prepare_dataset (see prepare.py); the source schema is
in source.py, the formats in readers.py."""

from data_prep.errors import REASONS, DataPrepError
from data_prep.prepare import prepare_dataset
from data_prep.readers import READERS
from data_prep.source import DEFAULT_PROMPTS, parse_source

__all__ = ["prepare_dataset", "DataPrepError", "REASONS", "READERS", "DEFAULT_PROMPTS", "parse_source"]
