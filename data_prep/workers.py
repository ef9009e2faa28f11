"""Worker processes that run Converter methods over batches, results in input order.

Why not ProcessPoolExecutor: a converted batch is ~0.5 MB, and receiving it through the executor's
64 KiB pipe (in pieces, via its manager thread) cost the main process as much CPU as the
conversion itself. Here each worker has its own pair of pipes, enlarged to 1 MiB where the OS
allows, batches go round-robin (so results come back in order without any bookkeeping) and at
most `window` batches per worker are in flight (memory stays flat).

How many: worker_count. The results never depend on it, only the time does."""

from __future__ import annotations

import sys
import traceback
from collections import deque
from contextlib import contextmanager
from multiprocessing import get_context

from data_prep.convert import Converter, Plan
from data_prep.stream_json import iter_batches
from stagekit.threads import cores_given, limit_threads, threads_per_process

_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # Linux

# What a row costs one core, roughly (benchmarks/bench_data_prep.py: ~14 us and ~36 us per row on a
# busy 2-core machine), against what starting the processes costs (spawn, imports, the tokenizer;
# results come back after ~0.5-1 s): enough to tell a small caption file (inline is faster) from a
# listing of many images to check (worth spreading), whatever the bytes.
START_S = 1.0
ROW_S = 1e-5               # parse, check and write a caption row of 1-2 KB
IMAGE_ROW_S = 4e-5         # + an image header check, warm page cache (a cold disk costs far more)
TOKENIZER_ROW_S = 4e-5     # + exact token counts of its text


def worker_count(requested: int | None, files, total_bytes: int, *, check_images: bool, exact_tokens: bool) -> int:
    """`requested` as given; None: every CPU this process may use, when the estimated work outweighs
    starting them, else 1 (inline)."""
    if requested is not None:
        return int(requested)
    cpus = cores_given()
    per_row = ROW_S + IMAGE_ROW_S * check_images + TOKENIZER_ROW_S * exact_tokens
    return cpus if cpus > 1 and estimate_rows(files, total_bytes) * per_row >= START_S else 1


def estimate_rows(files, total_bytes: int) -> int:
    """Rows in all files, extrapolated from the first batch of the first file (one chunk read)."""
    first = next(iter_batches(files[0], 0), None) if files else None
    if first is None or not first.nbytes:
        return 0
    if first.kind == "lines":
        rows = first.payload.count(b"\n") + (not first.payload.endswith(b"\n"))
    else:
        rows = len(first.payload)
    return rows * total_bytes // first.nbytes


class Workers:
    """map(method, batches, *args) -> results in order; inline when workers <= 1."""

    def __init__(self, plan: Plan, workers: int, window: int = 2):
        self.inline = Converter(plan) if workers <= 1 else None
        self.procs, self.window = [], window
        if workers > 1:
            self._start(plan, workers)

    def _start(self, plan: Plan, workers: int) -> None:
        ctx = get_context("spawn")  # not fork: the caller may hold threads (tqdm's monitor, torch)
        threads = threads_per_process(workers)   # the workers share the cores: no pool of each spans them all
        with _no_main_reimport():
            for _ in range(workers):
                task_r, task_w = ctx.Pipe(duplex=False)
                result_r, result_w = ctx.Pipe(duplex=False)
                for conn in (task_w, result_w):
                    _enlarge(conn)
                proc = ctx.Process(target=_serve, args=(task_r, result_w, plan, threads), daemon=True)
                proc.start()
                task_r.close()
                result_w.close()
                self.procs.append((proc, task_w, result_r))

    def map(self, method: str, batches, *args):
        if self.inline is not None:
            fn = getattr(self.inline, method)
            for batch in batches:
                yield fn(batch, *args)
            return
        in_flight = deque()  # worker index per batch sent, oldest first
        for n, batch in enumerate(batches):
            if len(in_flight) >= self.window * len(self.procs):
                yield self._receive(in_flight.popleft())
            k = n % len(self.procs)
            self.procs[k][1].send((method, batch, args))
            in_flight.append(k)
        while in_flight:
            yield self._receive(in_flight.popleft())

    def _receive(self, k: int):
        proc, _, conn = self.procs[k]
        try:
            status, payload = conn.recv()
        except EOFError:
            proc.join(5)
            raise RuntimeError(f"data_prep worker {proc.pid} died (exit code {proc.exitcode}); out of memory?") from None
        if status == "error":
            raise RuntimeError(f"data_prep worker {proc.pid} failed:\n{payload}")
        return payload

    def close(self) -> None:
        for proc, task_w, result_r in self.procs:
            try:
                task_w.send(None)
            except OSError:
                pass
            task_w.close()
        for proc, _, result_r in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
            result_r.close()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(tasks, results, plan: Plan, threads: int) -> None:
    limit_threads(threads)   # before the tokenizer or any image library starts a pool
    converter = Converter(plan)
    while (msg := tasks.recv()) is not None:
        method, batch, args = msg
        try:
            results.send(("ok", getattr(converter, method)(batch, *args)))
        except BaseException:  # report, keep serving: the main process decides
            results.send(("error", traceback.format_exc()))


def _enlarge(conn) -> None:
    """A bigger pipe moves a batch in one read instead of sixteen (Linux only; harmless elsewhere)."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
    except (ImportError, OSError):
        pass


@contextmanager
def _no_main_reimport():
    """Spawned workers need only data_prep. Without this they would re-run the caller's script as
    __mp_main__, which starts a second pool when that script lacks an `if __name__ == "__main__"` guard."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)
