"""The local engine: decode → detect → crop in worker processes, batched inference here.

`process(job)` yields one FileResult per file as soon as its faces are classified (the
interface in engines/__init__.py); engines.ray.process is the same on Ray Data.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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
    started: float
    frames: list[SampledFrame] = field(default_factory=list)
    faces: list[Face | None] = field(default_factory=list)  # None until its batch has run
    outstanding: int = 0
    end: Extracted | None = None

    def result(self) -> FileResult:
        end = self.end or Extracted(MediaInfo(), [], None)
        return FileResult(self.task, self.frames, self.faces, end.info, end.cuts, end.error,
                          time.time() - self.started)


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
        pending[idx] = _Pending(todo[idx], time.time())

    def ready() -> Iterator[FileResult]:
        for idx in [i for i, p in pending.items() if p.end and p.outstanding == 0]:
            bar.update(1)
            yield pending.pop(idx).result()

    def on_probs(done) -> None:
        for (idx, row, frame, face_index), probs in done:
            p = pending[idx]
            p.faces[row] = Face(frame.frame_index, frame.t_sec, face_index,
                                frame.boxes[face_index], probs)
            p.outstanding -= 1

    def handle(idx: int, kind: str, payload) -> None:
        p = pending[idx]
        if kind == "chunk":
            frame: DetectedFrame
            for frame in payload:
                p.frames.append(SampledFrame(frame.frame_index, frame.t_sec, len(frame.boxes)))
                for face_index, pixels in enumerate(frame.crops):
                    p.faces.append(None)
                    p.outstanding += 1
                    on_probs(batcher.add((idx, len(p.faces) - 1, frame, face_index), pixels))
            frames_bar.update(len(payload))
        else:  # "done"; its faces may still wait for a full batch
            p.end = payload

    messages = _in_process(settings, todo, model.input_size, start) if n_workers == 0 else \
        _from_workers(settings, todo, n_workers, model.input_size, start)
    try:
        for idx, (kind, payload) in messages:
            handle(idx, kind, payload)
            if kind == "done":
                yield from ready()
        on_probs(batcher.flush())  # the last, partial batch
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
        for msg in extract(task.item, settings, detector, size, CHUNK_FRAMES):
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


def _from_workers(settings: ExtractSettings, todo, n_workers, size, start: Callable[[int], None]):
    # spawn, not fork: the parent holds TensorFlow's threads, which a fork would copy broken.
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue(maxsize=4 * n_workers)
    procs = [ctx.Process(target=worker_main, args=(tasks, results, settings, size, CHUNK_FRAMES,
                                                   detect_threads(n_workers)),
                        daemon=True)
             for _ in range(n_workers)]
    with _main_not_reimported():
        for p in procs:
            p.start()
    try:
        next_task = 0
        in_flight = 0
        # Keep each worker one file ahead, not the whole archive: a SIGTERM drops little.
        while next_task < len(todo) or in_flight:
            while next_task < len(todo) and in_flight < 2 * n_workers:
                start(next_task)
                tasks.put((next_task, todo[next_task].item))
                next_task += 1
                in_flight += 1
            try:
                idx, msg = results.get(timeout=5)
            except queue.Empty:
                if not all(p.is_alive() for p in procs):
                    raise RuntimeError("a worker process died unexpectedly (see its message "
                                       "above; --workers 0 decodes in this process)") from None
                continue
            in_flight -= msg[0] == "done"
            yield idx, msg
    finally:
        for _ in procs:
            tasks.put(None)
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
        results.cancel_join_thread()
        tasks.cancel_join_thread()
