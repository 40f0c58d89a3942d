"""run(cfg): scan → ledger → decode/detect/crop (workers) → batched inference → per-file commits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from . import outputs
from .config import RunConfig, validate
from .crop import CROP_MARGIN, CROP_MARGINS
from .errors import EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, ConfigError, OutputError
from .extract import extract, worker_main
from .infer import Batcher
from .ledger import Ledger, OutputLock, fingerprint
from .model import load_model
from .records import (
    OTHER,
    STATUS_ERROR,
    STATUS_SKIPPED,
    MediaItem,
)
from .scan import scan
from .write import OutputPaths

log = logging.getLogger("batchemo")
CHUNK_FRAMES = 16  # frames per message from a worker: small enough to keep memory flat


@dataclass
class RunResult:
    """What a run did; `exit_code` follows the documented contract (0, 1, 2)."""

    run_id: str
    out: Path
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    files_deleted: int = 0
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    exit_code: int = EXIT_OK
    interrupted: bool = False

    def summary_line(self) -> str:
        rate = self.faces / self.seconds if self.seconds > 0 else 0.0
        done = self.files_new + self.files_changed
        return (f"batchemo: {done} files processed ({self.files_unchanged} unchanged, "
                f"{self.files_skipped} skipped), {self.frames} frames, {self.faces} faces, "
                f"{self.files_failed} errors, {self.seconds:.1f} s, {rate:.0f} faces/s")


@dataclass
class _Pending:
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


class _Interrupted(BaseException):  # not caught by `except Exception` (extract, Ray Data)
    pass


def _on_sigterm(signum, frame):
    raise _Interrupted()


def settings_id(cfg: RunConfig, model_id: str, tta: bool, precision: str) -> str:
    """Hash of every setting that changes a file's rows; a change reprocesses the file."""
    s = {"fps": cfg.fps, "detector": cfg.detector, "min_face": cfg.min_face,
         "score_threshold": cfg.score_threshold, "margin": crop_margin(cfg), "tta": tta,
         "model": model_id, "precision": precision}
    return hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


def crop_margin(cfg: RunConfig) -> float:
    """Margin that makes this detector's crops framed like the training faces (see crop.py)."""
    return CROP_MARGINS.get(cfg.detector, CROP_MARGIN)


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def run(cfg: RunConfig) -> RunResult:
    """Analyse every new or changed file under cfg.input; write all output tables.

    Idempotent and resumable: finished files are committed one by one to a ledger beside the
    output, so a rerun (or a run after a kill) processes only what is missing or changed.
    """
    validate(cfg)
    if not cfg.input:
        raise ConfigError("no input given (--input PATH, repeatable)")
    process = _process
    if cfg.engine == "ray":
        from .engines import ray as ray_engine

        ray_engine.require_ray()  # exit 2 with the install command before anything is written
        process = ray_engine.process
    paths = OutputPaths.from_out(cfg.out)
    try:
        paths.state.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {paths.state}: {e.strerror or e}") from None
    with OutputLock(paths.state, cfg.wait):
        ledger = Ledger(paths.state)
        try:
            return _run_locked(cfg, paths, ledger, process)
        finally:
            ledger.close()


def _run_locked(cfg: RunConfig, paths: OutputPaths, ledger: Ledger, process) -> RunResult:
    """Everything but the processing step: `process` is `_process` (the local engine) or
    engines.ray.process, with the same signature."""
    started = time.time()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    result = RunResult(run_id, paths.out)
    store = outputs.Store(paths, ledger)
    store.recover()  # a killed run's orphan parts go; its finished files are rebuilt below

    model = load_model(cfg.model, cfg.precision)
    known = ledger.get_meta("model_id")
    if known and known != model.model_id and not cfg.force:
        raise OutputError(f"{paths.out} was made with model {known}, this run uses "
                          f"{model.model_id}; use --force to reprocess everything with the new "
                          "model, or write to a new --out")
    ledger.set_meta("model_id", model.model_id)
    ledger.set_meta("classes", json.dumps(model.classes))
    tta = bool(cfg.tta and model.meta.get("tta", False))
    sid = settings_id(cfg, model.model_id, tta, model.precision)

    todo = _plan(cfg, ledger, store, sid, result, run_id, model.model_id)
    log.info("%d files to process (%d new, %d changed, %d unchanged)", len(todo),
             result.files_new, result.files_changed, result.files_unchanged)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        process(cfg, todo, model, Batcher(model, cfg.batch_size, tta), store, sid, run_id, result)
    except (_Interrupted, KeyboardInterrupt):
        result.interrupted = True
        log.warning("interrupted: finished files are kept, files in flight are dropped")
    finally:
        signal.signal(signal.SIGTERM, previous)
    result.seconds = time.time() - started
    if result.interrupted:
        result.exit_code = EXIT_FATAL
    elif result.files_failed:
        result.exit_code = EXIT_SOME_FAILED
    ledger.add_run({**dataclasses.asdict(result), "run_id": run_id,
                    "started": datetime.fromtimestamp(started, UTC).isoformat(),
                    "finished": datetime.now(UTC).isoformat(),
                    "model_id": model.model_id,
                    # as applied: "auto" precision and TTA resolved
                    "settings": {**dataclasses.asdict(cfg), "precision": model.precision,
                                 "tta": tta}})
    store.rebuild(model.classes, run_id, cfg)
    if cfg.log_json:  # one machine-readable closing record instead of the human line
        print(json.dumps({"event": "run_finished", **dataclasses.asdict(result)}, default=str),
              file=sys.stderr)
    else:
        print(result.summary_line(), file=sys.stderr)
    return result


def _plan(cfg, ledger, store, sid, result, run_id, model_id) -> list[tuple[MediaItem, str]]:
    """Decide per scanned item: record as error/skipped, skip as unchanged, or process."""
    known = ledger.files()
    seen, todo = set(), []
    for item in scan([str(p) for p in cfg.input], cfg.include, cfg.exclude):
        seen.add(item.key)
        prev = known.get(item.key)
        if item.error or item.media_type == OTHER:
            status = STATUS_ERROR if item.error else STATUS_SKIPPED
            if status == STATUS_ERROR:
                result.files_failed += 1
            else:
                result.files_skipped += 1
            if prev and prev["part"]:
                store.forget(item.key, prev, prune=True)  # was media, now is not: rows go
            outputs.commit_status(ledger, item, status, item.error or item.reason, run_id,
                                  model_id)
            continue
        if cfg.force or prev is None or prev["settings_id"] != sid:
            if prev is None:
                result.files_new += 1
            else:
                result.files_changed += 1
            todo.append((item, ""))
            continue
        if (prev["size"], prev["mtime"]) == (item.size, item.mtime) and prev["present"]:
            fp = prev["fingerprint"]
        else:
            try:
                fp = fingerprint(item.path, item.size)
            except OSError as e:
                fp = f"unreadable: {e.strerror}"
        if fp == prev["fingerprint"] and not (cfg.retry_errors and prev["status"] == STATUS_ERROR):
            result.files_unchanged += 1
            if (prev["size"], prev["mtime"], prev["present"]) != (item.size, item.mtime, 1):
                ledger.commit_file({**prev, "size": item.size, "mtime": item.mtime,
                                    "present": True})
            continue
        result.files_changed += 1
        todo.append((item, fp))
    roots = {str(p) for p in cfg.input}
    for key, prev in known.items():
        if key[0] in roots and key not in seen and (prev["present"] or cfg.prune_deleted):
            result.files_deleted += 1
            store.forget(key, prev, prune=cfg.prune_deleted)
    return todo


def _process(cfg, todo, model, batcher, store, sid, run_id, result) -> None:
    if not todo:
        return
    det_args = {"name": cfg.detector, "min_face": cfg.min_face,
                "score_threshold": cfg.score_threshold}
    n_workers = default_workers() if cfg.workers < 0 else cfg.workers
    quiet = cfg.quiet or not sys.stderr.isatty()
    bar = tqdm(total=len(todo), unit="file", disable=quiet, desc="files")
    frames_bar = tqdm(unit="frame", disable=quiet, desc="frames", position=1)
    pending: dict[int, _Pending] = {}

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
            from .detect import get_detector

            detector = get_detector(**det_args)
            for idx, (item, fp) in enumerate(todo):
                pending[idx] = _Pending(item, fp, time.time())
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


def _run_workers(cfg, todo, n_workers, det_args, size, pending, handle) -> None:
    # spawn, not fork: the parent holds TensorFlow's threads, which a fork would copy broken.
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue(maxsize=4 * n_workers)
    procs = [ctx.Process(target=worker_main, args=(tasks, results, det_args, size,
                                                   crop_margin(cfg), cfg.fps, CHUNK_FRAMES), daemon=True)
             for _ in range(n_workers)]
    for p in procs:
        p.start()
    try:
        next_task = 0
        in_flight = 0
        # Keep each worker one file ahead, not the whole archive: a SIGTERM drops little.
        while next_task < len(todo) or in_flight:
            while next_task < len(todo) and in_flight < 2 * n_workers:
                item, fp = todo[next_task]
                pending[next_task] = _Pending(item, fp, time.time())
                tasks.put((next_task, item))
                next_task += 1
                in_flight += 1
            try:
                idx, msg = results.get(timeout=5)
            except queue.Empty:
                if not all(p.is_alive() for p in procs):
                    raise RuntimeError("a worker process died unexpectedly") from None
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
