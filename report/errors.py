"""The report's one error: its own module, so every report module can raise it without importing
another (records.py and samples.py read each other's files)."""


class ReportError(Exception):
    """Bad input for the report: a malformed record, a missing path, an unreadable training log."""
