"""The local engine: decode → detect → crop in worker processes, batched inference here.

`process` is what `pipeline.run` calls with the files to do; engines.ray.process has the same
signature. Each finished file is committed through the Store as soon as its faces are classified.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from ..config import RunConfig
from ..crop import CROP_MARGIN, CROP_MARGINS
from ..decode import expected_samples
from ..extract import extract, worker_main
from ..records import STATUS_ERROR, MediaItem

CHUNK_FRAMES = 16  # frames per message from a worker: small enough to keep memory flat


@dataclass
class Pending:
    """A file being processed: its rows wait for their crops' probabilities."""

    item: MediaItem
    fp: str
    started: float
    faces: list = field(default_factory=list)  # [frame_index, t_sec, face_index, box, probs]
    frames: list = field(default_factory=list)  # (frame_index, t_sec, n_faces)
    outstanding: int = 0
    done: bool = False
    info: dict = field(default_factory=dict)
    error: str | None = None


def crop_margin(cfg: RunConfig) -> float:
    """Margin that makes this detector's crops framed like the training faces (see crop.py)."""
    return CROP_MARGINS.get(cfg.detector, CROP_MARGIN)


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def process(cfg, todo, model, batcher, store, sid, run_id, result) -> None:
    if not todo:
        return
    det_args = {"name": cfg.detector, "min_face": cfg.min_face,
                "score_threshold": cfg.score_threshold}
    n_workers = default_workers() if cfg.workers < 0 else cfg.workers
    quiet = cfg.quiet or not sys.stderr.isatty()
    bar = tqdm(total=len(todo), unit="file", disable=quiet, desc="files")
    frames_bar = tqdm(total=None if quiet else frames_total(todo, cfg.fps), unit="frame",
                      disable=quiet, desc="frames", position=1)
    pending: dict[int, Pending] = {}

    def finish_ready() -> None:
        for idx in [i for i, p in pending.items() if p.done and p.outstanding == 0]:
            p = pending.pop(idx)
            status = store.commit_file(p, model, sid, run_id)
            result.faces += len(p.faces)
            result.frames += len(p.frames)
            result.files_failed += status == STATUS_ERROR
            bar.update(1)

    def on_probs(done) -> None:
        for (idx, row), probs in done:
            p = pending[idx]
            p.faces[row][4] = probs
            p.outstanding -= 1

    def handle(idx: int, msg: tuple) -> None:
        kind, payload = msg
        p = pending[idx]
        if kind == "chunk":
            for frame_index, t_sec, boxes, crops in payload:
                p.frames.append((frame_index, t_sec, len(boxes)))
                for face_index, (box, pixels) in enumerate(zip(boxes, crops, strict=True)):
                    p.faces.append([frame_index, t_sec, face_index, box, None])
                    p.outstanding += 1
                    on_probs(batcher.add((idx, len(p.faces) - 1), pixels))
            frames_bar.update(len(payload))
        else:  # ("done", (info, error)); its faces may still wait for a full batch
            p.info, p.error = payload
            p.done = True
            finish_ready()

    try:
        if n_workers == 0:
            from ..detect import get_detector

            detector = get_detector(**det_args)
            for idx, (item, fp) in enumerate(todo):
                pending[idx] = Pending(item, fp, time.time())
                for msg in extract(item, cfg.fps, detector, model.input_size, crop_margin(cfg),
                                   CHUNK_FRAMES):
                    handle(idx, msg)
        else:
            _run_workers(cfg, todo, n_workers, det_args, model.input_size, pending, handle)
        on_probs(batcher.flush())  # the last, partial batch
        finish_ready()
    finally:
        bar.close()
        frames_bar.close()


def frames_total(todo: list[tuple[MediaItem, str]], fps: float, limit: int = 2000) -> int | None:
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


def _run_workers(cfg, todo, n_workers, det_args, size, pending, handle) -> None:
    # spawn, not fork: the parent holds TensorFlow's threads, which a fork would copy broken.
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue(maxsize=4 * n_workers)
    procs = [ctx.Process(target=worker_main, args=(tasks, results, det_args, size,
                                                   crop_margin(cfg), cfg.fps, CHUNK_FRAMES),
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
                item, fp = todo[next_task]
                pending[next_task] = Pending(item, fp, time.time())
                tasks.put((next_task, item))
                next_task += 1
                in_flight += 1
            try:
                idx, msg = results.get(timeout=5)
            except queue.Empty:
                if not all(p.is_alive() for p in procs):
                    raise RuntimeError("a worker process died unexpectedly (see its message "
                                       "above; --workers 0 decodes in this process)") from None
                continue
            handle(idx, msg)
            in_flight -= msg[0] == "done"
    finally:
        for _ in procs:
            tasks.put(None)
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
        results.cancel_join_thread()
        tasks.cancel_join_thread()
