"""What every stage kind shares, below the harness: the description of one stage's run, the one
subprocess runner (run_logged for a tool that finishes, Serving for a server beside the stage),
and durable files (atomic JSON, file locks).

Stage packages (init_vlm, data_prep, train, evaluation, report, embedded) import this, never
`harness`: the harness sequences stages and owns the store; a stage only sees the explicit paths
and settings it is handed here.
"""

from stagekit.files import file_lock, write_json_atomic, write_text_atomic
from stagekit.proc import CommandFailed, Serving, Stopped, is_secret, run_logged, shell_line
from stagekit.run import StageLog, StageRun, run_identity, run_label, unknown_keys

__all__ = ["CommandFailed", "Serving", "StageLog", "StageRun", "Stopped", "file_lock", "is_secret", "run_identity", "run_label",
           "run_logged", "shell_line", "unknown_keys",
           "write_json_atomic", "write_text_atomic"]
