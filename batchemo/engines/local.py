"""The local engine: decode → detect → crop in worker processes, batched inference here.

`process(job)` yields one FileResult per file as soon as its faces are classified (the
interface in engines/__init__.py); engines.ray.process is the same on Ray Data.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from tqdm import tqdm

from batchemo.engines.batcher import Batcher
from batchemo.media.decode import expected_samples
from batchemo.media.extract import detect_threads, extract, worker_main
from batchemo.records import (
    DetectedFrame,
    EngineJob,
    Extracted,
    ExtractSettings,
    Face,
    FileResult,
    FileTask,
    MediaInfo,
    SampledFrame,
)

CHUNK_FRAMES = 16  # frames per message from a worker: small enough to keep memory flat


@dataclass
class _Pending:
    """A file being processed: its faces wait for their crops' probabilities."""

    task: FileTask
    frames: list[SampledFrame] = field(default_factory=list)
    faces: list[Face | None] = field(default_factory=list)  # None until its batch has run
    outstanding: int = 0
    end: Extracted | None = None
    model_seconds: float = 0.0  # its faces' share of the model calls
    died: bool = False  # its worker died: no rows, `end.error` says so

    def result(self) -> FileResult:
        end = self.end or Extracted(MediaInfo(), [], None)
        frames, faces = ([], []) if self.died else (self.frames, self.faces)
        return FileResult(self.task, frames, faces, end.info, end.cuts, end.error,
                          end.seconds + self.model_seconds)


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def process(job: EngineJob) -> Iterator[FileResult]:
    """Yield a FileResult per file of `job`, in the order the files finish."""
    todo, settings = job.files, job.extract
    if not todo:
        return
    model = job.model
    batcher = Batcher(model, job.batch_size, job.tta)
    n_workers = default_workers() if job.workers < 0 else job.workers
    quiet = job.quiet or not sys.stderr.isatty()
    bar = tqdm(total=len(todo), unit="file", disable=quiet, desc="files")
    frames_bar = tqdm(total=None if quiet else frames_total(todo, settings.fps), unit="frame",
                      disable=quiet, desc="frames", position=1)
    pending: dict[int, _Pending] = {}

    def start(idx: int) -> None:
        pending[idx] = _Pending(todo[idx])

    def ready() -> Iterator[FileResult]:
        for idx in [i for i, p in pending.items() if p.end and p.outstanding == 0]:
            bar.update(1)
            yield pending.pop(idx).result()

    def on_probs(done, started: float) -> None:
        share = (time.perf_counter() - started) / max(1, len(done))  # the model call's time
        for (idx, row, frame, face_index), probs in done:
            p = pending[idx]
            p.faces[row] = Face(frame.frame_index, frame.t_sec, face_index,
                                frame.boxes[face_index], probs)
            p.outstanding -= 1
            p.model_seconds += share

    def handle(idx: int, kind: str, payload) -> None:
        p = pending[idx]
        if kind == "chunk":
            frame: DetectedFrame
            for frame in payload:
                p.frames.append(SampledFrame(frame.frame_index, frame.t_sec, len(frame.boxes)))
                for face_index, pixels in enumerate(frame.crops):
                    p.faces.append(None)
                    p.outstanding += 1
                    t = time.perf_counter()
                    on_probs(batcher.add((idx, len(p.faces) - 1, frame, face_index), pixels), t)
            frames_bar.update(len(payload))
        elif kind == "died":  # its faces still in the batcher come back and are dropped
            p.died, p.end = True, Extracted(MediaInfo(), [], payload)
        else:  # "done"; its faces may still wait for a full batch
            p.end = payload

    messages = _in_process(settings, todo, model.input_size, start) if n_workers == 0 else \
        _from_workers(settings, todo, n_workers, model.input_size, start)
    try:
        for idx, (kind, payload) in messages:
            handle(idx, kind, payload)
            if kind in ("done", "died"):
                yield from ready()
        on_probs(batcher.flush(), time.perf_counter())  # the last, partial batch
        yield from ready()
    finally:
        messages.close()  # stops the workers at once when the caller stops early
        bar.close()
        frames_bar.close()


def _in_process(settings: ExtractSettings, todo, size, start: Callable[[int], None]):
    from batchemo.media.detect import get_detector

    detector = get_detector(**settings.detector_args)
    for idx, task in enumerate(todo):
        start(idx)
        messages, spent = extract(task.item, settings, detector, size, CHUNK_FRAMES), 0.0
        while True:  # the time inside extract only: classifying a chunk is counted apart
            t = time.perf_counter()
            msg = next(messages, None)
            spent += time.perf_counter() - t
            if msg is None:
                break
            if msg[0] == "done":
                msg = ("done", dataclasses.replace(msg[1], seconds=spent))
            yield idx, msg


def frames_total(todo: list[FileTask], fps: float, limit: int = 2000) -> int | None:
    """The frames bar's total, estimated from each video's header (None past `limit` files,
    where opening them all first would delay the start)."""
    if len(todo) > limit:
        return None
    counts = [expected_samples(item, fps) for item, _ in todo]
    return None if None in counts else sum(counts)


@contextlib.contextmanager
def _main_not_reimported():
    """Start spawned workers without re-running the caller's script in them.

    A spawned child imports the parent's __main__ (by path or module name) before its target
    runs; a script that calls batchemo.run() at top level, with no `if __name__ ==
    "__main__":` guard, then started a second run in every worker (LockedError, "a worker died").
    The workers' target lives in batchemo, so they need nothing from __main__: hide where it
    came from while they start.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__spec__ = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)
            if "__spec__" not in saved:
                main.__dict__.pop("__spec__", None)


WORKER_DIED = "the worker process analysing it died (killed, or out of memory?)"


@dataclass
class _Worker:
    """A worker process, its own pipe, and the files sent to it in order (the first is the one
    it is working on)."""

    proc: mp.process.BaseProcess
    conn: Connection
    sent: collections.deque = field(default_factory=collections.deque)
    ready: bool = False  # started: its detectors are loaded


def _from_workers(settings: ExtractSettings, todo, n_workers, size, start: Callable[[int], None]):
    """(idx, message) from worker processes, each fed through its own pipe, two files ahead.

    A worker that dies (kill -9, the OOM killer) loses only its pipe: the file it was on ends
    with a "died" message (an error row), the files queued behind it go to the others, and a
    new worker takes its place."""
    # spawn, not fork: the parent holds TensorFlow's threads, which a fork would copy broken.
    ctx = mp.get_context("spawn")
    threads = detect_threads(n_workers)
    workers: list[_Worker] = []

    def spawn() -> None:
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(child, settings, size, CHUNK_FRAMES, threads),
                           daemon=True)
        with _main_not_reimported():
            proc.start()
        child.close()  # the worker's end lives in the worker only: its death closes the pipe
        workers.append(_Worker(proc, conn))

    for _ in range(n_workers):
        spawn()
    waiting = collections.deque(range(len(todo)))
    started: set[int] = set()
    try:
        while waiting or any(w.sent for w in workers):
            for w in workers:  # keep each worker one file ahead: a SIGTERM drops little
                while waiting and len(w.sent) < 2:
                    idx = waiting.popleft()
                    if idx not in started:
                        started.add(idx)
                        start(idx)
                    w.conn.send((idx, todo[idx].item))
                    w.sent.append(idx)
            ready = wait([w.conn for w in workers] + [w.proc.sentinel for w in workers])
            for w in list(workers):
                try:
                    message = w.conn.recv() if w.conn.poll() else None
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    idx, msg = message
                    if msg[0] == "ready":
                        w.ready = True
                        continue
                    if msg[0] == "done":
                        w.sent.popleft()
                    yield idx, msg
                elif w.proc.sentinel in ready or not w.proc.is_alive():
                    w.proc.join()
                    if not w.ready:  # a broken install, not a file: every worker would die
                        raise RuntimeError("a worker process died while starting (see its "
                                           "message above; --workers 0 decodes in this "
                                           "process)")
                    workers.remove(w)
                    w.conn.close()
                    if w.sent:  # the file it was on fails; the ones behind it go elsewhere
                        yield w.sent.popleft(), ("died", f"{WORKER_DIED} (exit code "
                                                         f"{w.proc.exitcode})")
                        waiting.extendleft(reversed(w.sent))
                    spawn()
    finally:
        for w in workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        for w in workers:
            w.proc.join(timeout=2)
            if w.proc.is_alive():
                w.proc.terminate()
            w.conn.close()
