"""What the terminal shows of a run: the chain with each stage's state and time, and for the
running stage one progress line (training: step, loss, samples/s, ETA from LLaMA-Factory's
trainer log; evaluation: requests answered), instead of the tools' thousands of lines, which go
to logs/<stage>.log (`-v` streams them as well).

On a terminal, rich redraws one table in place; elsewhere (CI, SLURM logs, a pipe) plain lines
are printed: one per state change and a progress line at most every `interval` seconds. A failed
stage prints the last lines of its log and the log's path."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

TAIL_LINES = 15


class Console:
    def __init__(self, run: str, stages: list[str], *, verbose: bool = False, stream: TextIO | None = None,
                 interval: float = 30.0, live: bool | None = None):
        self.run, self.verbose, self.stream = run, verbose, stream or sys.stdout
        self.interval = interval
        self.rows = {name: {"state": "pending", "seconds": None, "progress": ""} for name in stages}
        self.live = (not verbose and self.stream.isatty()) if live is None else live
        self._watch: tuple[str, Callable[[], dict | None]] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_progress = 0.0
        self._rich = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Console:
        if self.live:
            from rich.live import Live

            self._rich = Live(self._table(), console=self._rich_console(), refresh_per_second=2, transient=False)
            self._rich.__enter__()
        else:
            self._print(f"[harness] {self.run}: {len(self.rows)} stages")
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._rich is not None:
            self._rich.update(self._table())
            self._rich.__exit__(*exc)

    # ------------------------------------------------------------ events from the runner

    def started(self, name: str, note: str = "", watch: Callable[[], dict | None] | None = None) -> None:
        with self._lock:
            self.rows[name].update(state="running", started=time.time(), progress="")
            self._watch = (name, watch) if watch else None
            self._last_progress = time.time()
        self._show(f"[harness] {name}: running" + (f" ({note})" if note else ""))

    def finished(self, name: str, state: str, seconds: float | None = None, note: str = "",
                 log_path: Path | None = None) -> None:
        with self._lock:
            self.rows[name].update(state=state, seconds=seconds, progress="")
            if self._watch and self._watch[0] == name:
                self._watch = None
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        self._show(f"[harness] {name}: {state}{took}" + (f" ({note})" if note else ""))
        if state == "failed" and log_path is not None:
            self._print_tail(log_path)

    def message(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            self._print(text)

    # ------------------------------------------------------------ internals

    def _poll(self) -> None:
        while not self._stop.wait(1.0 if self.live else min(self.interval, 5.0)):
            with self._lock:
                watch = self._watch
            if watch is None:
                continue
            name, read = watch
            try:
                info = read()
            except Exception:  # noqa: BLE001 - a half-written progress file is simply not shown yet
                info = None
            if not info:
                continue
            with self._lock:
                self.rows[name]["progress"] = info["text"]
                due = time.time() - self._last_progress >= self.interval
                if due:
                    self._last_progress = time.time()
            if self._rich is not None:
                self._rich.update(self._table())
            elif due:
                self._print(f"[harness] {name}: {info['text']}")

    def _show(self, line: str) -> None:
        if self._rich is not None:
            self._rich.update(self._table())
        else:
            self._print(line)

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _print_tail(self, log_path: Path) -> None:
        try:
            lines = Path(log_path).read_text(errors="replace").splitlines()[-TAIL_LINES:]
        except FileNotFoundError:
            lines = []
        self.message(f"[harness] last lines of {log_path}:\n" + "\n".join(f"    {line}" for line in lines))

    def _rich_console(self):
        from rich.console import Console as RichConsole

        return RichConsole(file=self.stream)

    def _table(self):
        from rich.table import Table

        table = Table(title=self.run, title_justify="left", show_edge=False, pad_edge=False)
        for column in ("stage", "state", "time", "progress"):
            table.add_column(column)
        style = {"done": "green", "skipped": "dim", "running": "bold yellow", "failed": "bold red"}
        for name, row in self.rows.items():
            took = f"{row['seconds']:.1f} s" if row["seconds"] is not None else (
                f"{time.time() - row['started']:.0f} s" if row["state"] == "running" else "")
            table.add_row(name, f"[{style.get(row['state'], '')}]{row['state']}[/]", took, row["progress"])
        return table
