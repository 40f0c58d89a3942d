"""run(cfg): scan → plan → engine → track and commit each file → derive the companion tables.

Orchestration only: planning is plan.py, processing an engine (engines/), storage Store,
the derived tables derive.py. The library returns a RunResult; the CLI prints the closing line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from batchemo.analysis.derive import write_derived
from batchemo.config import RunConfig
from batchemo.engines import Engine, get_engine
from batchemo.errors import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_SOME_FAILED,
    BatchemoError,
    ConfigError,
    Interrupted,
    LockedError,
    OutputError,
)
from batchemo.model import load_model
from batchemo.options import validate
from batchemo.output.ledger import Ledger, OutputLock
from batchemo.output.store import Store
from batchemo.output.tables import OutputPaths, faces_table, foreign_file, frames_table
from batchemo.plan import Settings, content_fingerprint, plan, resolve_settings
from batchemo.records import (
    STATUS_ERROR,
    STATUS_NO_FACE,
    STATUS_OK,
    VIDEO,
    EngineJob,
    FileResult,
    FileRow,
    MediaItem,
)

log = logging.getLogger("batchemo")


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
        """The closing line: files, faces, errors, seconds, faces/s."""
        rate = self.faces / self.seconds if self.seconds > 0 else 0.0
        done = self.files_new + self.files_changed
        return (f"batchemo: {done} files processed ({self.files_unchanged} unchanged, "
                f"{self.files_skipped} skipped), {self.frames} frames, {self.faces} faces, "
                f"{self.files_failed} errors, {self.seconds:.1f} s, {rate:.0f} faces/s")


class _Interrupted(BaseException):  # not caught by `except Exception` (extract, Ray Data)
    pass


def _on_sigterm(signum, frame):
    raise _Interrupted()


def run(cfg: RunConfig) -> RunResult:
    """Analyse every new or changed file under cfg.input; write all output tables.

    Idempotent and resumable: finished files are committed one by one to a ledger beside the
    output, so a rerun (or a run after a kill) processes only what is missing or changed.
    Prints nothing: the CLI prints the returned RunResult's `summary_line()`.
    """
    validate(cfg)
    if not cfg.input:
        raise ConfigError("no input given (--input PATH, repeatable)")
    missing = [str(p) for p in cfg.input if not os.path.exists(p)]
    if missing:  # a misspelt or unmounted root is a usage error, not one failed file
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"--input {missing[0]}: no such file or directory{more}")
    engine = get_engine(cfg.engine)  # Ray missing: exit 2 before anything is written
    paths = OutputPaths.from_out(cfg.out)
    try:
        if paths.adopt_legacy_state():
            log.info("moved the state of %s to %s", paths.out, paths.state)
    except OSError as e:
        raise OutputError(f"cannot move the state folder to {paths.state}: {e}") from None
    foreign = foreign_file(paths)
    if foreign is not None:  # batchemo would overwrite or delete it: a user's file is never lost
        raise OutputError(f"--out {paths.out} is not a batchemo output (no {paths.state.name}/ "
                          f"ledger) and {foreign} is in the way; batchemo never overwrites or "
                          "deletes files it did not write: choose a new or empty --out")
    made = [d for d in ([paths.out, paths.state] if paths.is_dataset else [paths.state])
            if not d.exists()]
    previous = _catch_sigterm()
    try:
        try:
            paths.state.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create {paths.state}: {e.strerror or e}") from None
        with OutputLock(paths.state, cfg.wait), _log_stream(cfg):
            ledger = Ledger(paths.state)
            try:
                return _run_locked(cfg, paths, ledger, engine)
            finally:
                ledger.close()
    except _Interrupted:
        _remove_unused(paths.state, made)
        raise Interrupted("interrupted (SIGTERM) outside file processing; files finished "
                          "before are kept and the next run completes the outputs") from None
    except BatchemoError as e:
        if not isinstance(e, LockedError):  # a run that could not start leaves no state behind
            _remove_unused(paths.state, made)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _log_stream(cfg: RunConfig):
    if not cfg.log_json:
        return contextlib.nullcontext()
    from batchemo._util.jsonlog import native_lines_as_json

    return native_lines_as_json()


def _catch_sigterm():
    """SIGTERM raises _Interrupted from here on (start-up included); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signals reach the main thread only; a caller's thread keeps its own
    return signal.signal(signal.SIGTERM, _on_sigterm)


def _remove_unused(state: Path, made: list[Path]) -> None:
    """Remove the folders this run created (`made`) if nothing was ever committed to `state`."""
    if state not in made or not state.is_dir():
        return
    if Ledger.ever_used(state):
        return
    shutil.rmtree(state, ignore_errors=True)
    for d in made:
        if d != state and d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _run_locked(cfg: RunConfig, paths: OutputPaths, ledger: Ledger, engine: Engine) -> RunResult:
    started = time.time()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    result = RunResult(run_id, paths.out)
    store = Store(paths, ledger)
    failures = _FailureLog(None if cfg.log_json else 20)
    stale = store.recover()  # a killed run's orphan parts go; its finished files are rebuilt
    if stale:  # as this run derives them, so the marker below stays true
        _rebuild(store, stale, None, cfg)
        ledger.set_derived(_derived_key(cfg))

    settings = resolve_settings(cfg, ledger, paths.out, lambda precision: _load(cfg, precision))
    card = settings.card
    planned = plan(cfg, ledger, store, settings, run_id)
    for item in planned.failed:
        failures.report(item, item.error)
    todo, new_keys = planned.todo, planned.new_keys
    result.files_failed, result.files_skipped = len(planned.failed), planned.skipped
    result.files_unchanged, result.files_deleted = planned.unchanged, planned.deleted
    model = settings.model or (_load(cfg, settings.precision) if todo else None)
    ledger.set_meta("model_id", card.model_id)
    ledger.set_meta("classes", json.dumps(list(card.classes)))
    log.info("%d files to process (%d new, %d changed, %d unchanged)", len(todo),
             len(new_keys), len(todo) - len(new_keys), result.files_unchanged)
    committed: list[tuple[str, str]] = []
    try:
        if todo:
            with _bars_and_logs(cfg), \
                    contextlib.closing(engine(_job(cfg, settings, todo, model))) as results:
                for res in results:
                    status = _commit(store, ledger, res, model, settings.sid, run_id)
                    committed.append(res.item.key)
                    result.faces += len(res.faces)
                    result.frames += len(res.frames)
                    if status == STATUS_ERROR:
                        result.files_failed += 1
                        failures.report(res.item, res.error)
    except (_Interrupted, KeyboardInterrupt):
        result.interrupted = True
        log.warning("interrupted: finished files are kept, files in flight are dropped")
    # Counted as committed, not as planned: an interrupted run reports only what it kept.
    result.files_new = sum(key in new_keys for key in committed)
    result.files_changed = len(committed) - result.files_new
    result.seconds = time.time() - started
    if result.interrupted:
        result.exit_code = EXIT_FATAL
    elif result.files_failed:
        result.exit_code = EXIT_SOME_FAILED
    ledger.add_run({**dataclasses.asdict(result), "run_id": run_id,
                    "started": datetime.fromtimestamp(started, UTC).isoformat(),
                    "finished": datetime.now(UTC).isoformat(),
                    "model_id": card.model_id,
                    # as applied: "auto" precision and TTA resolved
                    "settings": {**dataclasses.asdict(cfg), "precision": settings.precision,
                                 "tta": settings.tta_key}})
    derived = _derived_key(cfg)
    if (ledger.dirty or ledger.derived != derived
            or not store.complete() or (cfg.plots and not Path(cfg.plots).is_dir())):
        _rebuild(store, card.classes, run_id, cfg)
        ledger.set_derived(derived)
    else:  # nothing changed but the run history
        store.write_runs(run_id)
    return result


def _job(cfg: RunConfig, settings: Settings, todo: list, model) -> EngineJob:
    return EngineJob(todo, settings.extract, model, settings.tta, batch_size=cfg.batch_size,
                     workers=cfg.workers, quiet=cfg.quiet, ray_address=cfg.ray_address,
                     ray_gpus=cfg.ray_gpus, ray_actors=cfg.ray_actors)


def _derived_key(cfg: RunConfig) -> str:
    """What the derived tables depend on beyond the rows: rebuilt when it changes (an output made
    before segments were decoded has no "segments" key: its first run rebuilds them)."""
    return json.dumps({"bin": cfg.timeline_bin, "plots": str(cfg.plots or ""),
                       "segments": f"hmm:{cfg.segment_switch_cost:g}"})


def _bars_and_logs(cfg: RunConfig):
    """While progress bars show, log lines go through tqdm so they do not tear the bars."""
    if cfg.quiet or not sys.stderr.isatty():
        return contextlib.nullcontext()
    return logging_redirect_tqdm()


class _FailureLog:
    """A WARNING per failed file (a `file_failed` event in JSON logs), capped for people."""

    def __init__(self, cap: int | None):
        self.cap = cap  # None: every failure (--log-json events)
        self.count = 0

    def report(self, item: MediaItem, error: str | None) -> None:
        self.count += 1
        fields = {"event": "file_failed", "root": item.root, "source": item.source,
                  "error": error}
        if self.cap is None or self.count <= self.cap:
            log.warning("failed: %s: %s", item.source, error, extra={"fields": fields})
        elif self.count == self.cap + 1:
            log.warning("more files failed: the files table lists them all")


CHANGED_WHILE_ANALYSED = ("the file changed while it was being analysed; its rows are dropped "
                          "and the next run processes it again")


def _commit(store: Store, ledger: Ledger, res: FileResult, model, sid: str,
            run_id: str) -> str:
    """Track a finished file's faces, stage its rows, commit its ledger row; returns its status."""
    item = res.item
    status = STATUS_OK if res.faces else STATUS_NO_FACE
    error = res.error or res.info.warning  # e.g. truncated
    if res.error and not res.frames:
        status = STATUS_ERROR
    if _changed_since(item, res.task.fingerprint):
        # What was decoded is not what the row would describe: no rows, and settings_id None
        # so the next plan processes the file again whatever its size and time say.
        status, error, sid = STATUS_ERROR, CHANGED_WHILE_ANALYSED, None
    prev = ledger.get(item.key)  # one row: this runs once per file
    part = None
    if res.frames and status != STATUS_ERROR:
        faces = faces_table(item, res.faces, _tracks(res), model.classes, model.model_id, run_id)
        frames = frames_table(item, res.frames) if item.media_type == VIDEO else None
        part = store.write_part(run_id, faces, frames)
    info, kept = res.info, status != STATUS_ERROR
    ledger.commit_file(FileRow(
        item.root, item.source, item.media_type, status, error, size=item.size,
        mtime=item.mtime, fingerprint=res.task.fingerprint, width=info.width,
        height=info.height, fps=info.fps, duration=info.duration,
        frames_sampled=len(res.frames) if kept else 0, faces=len(res.faces) if kept else 0,
        decode_failures=info.decode_failures, seconds=round(res.seconds, 3), present=True,
        model_id=model.model_id, run_id=run_id, settings_id=sid, part=part))
    if prev and prev.part and prev.part != part:
        store.drop_part(prev.part)
    return status


def _changed_since(item: MediaItem, fp: str) -> bool:
    """Whether a file is no longer what the scan saw (size, time) and the plan fingerprinted
    before decoding: it was replaced or written to while being analysed."""
    try:
        st = os.stat(item.path)
    except OSError:
        return True
    return (st.st_size, st.st_mtime) != (item.size, item.mtime) or \
        content_fingerprint(item) != fp


def _tracks(res: FileResult) -> np.ndarray | None:
    """Track ids of a video's faces (-1: none); None for images."""
    if res.item.media_type != VIDEO or not res.faces:
        return None
    from batchemo.media.track import assign_tracks

    faces = res.faces
    boxes = np.array([[f.box.x, f.box.y, f.box.w, f.box.h] for f in faces], np.int32)
    return assign_tracks(np.array([f.frame_index for f in faces], np.int64),
                         np.array([np.nan if f.t_sec is None else f.t_sec for f in faces]),
                         boxes.reshape(len(faces), 4),
                         scores=np.array([f.box.score for f in faces], np.float32),
                         cut_frames=res.cuts)


def _rebuild(store: Store, classes: tuple[str, ...], run_id: str | None, cfg) -> None:
    """Every output table from the committed rows: stored tables first, then derived ones."""
    tag = run_id or f"recovered-{int(time.time())}"
    rows, files = store.rebuild(classes, tag)
    write_derived(store, classes, rows, files, tag, cfg)
    store.ledger.mark_rebuilt()


def compact(out: Path | str, wait: float = 0.0) -> int:
    """Merge an output's small staged parts (the directory form's part files) into parts of
    about tables.ROW_GROUP_ROWS rows; returns how many parts were merged. Runs also do this
    past Store.COMPACT_AT small parts."""
    paths = OutputPaths.from_out(out)
    if not (paths.state / "ledger.sqlite").is_file():
        raise ConfigError(f"{out}: not an output of `batchemo run` (no {paths.state.name}/)")
    with OutputLock(paths.state, wait):
        ledger = Ledger(paths.state)
        try:
            store = Store(paths, ledger)
            stale = store.recover()  # orphans go; a killed run's outputs wait for the next run
            if stale:  # its parts were not checked: none of another class set is merged
                store.check_parts(stale)
            return store.compact(datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), force=True)
        finally:
            ledger.close()


def _load(cfg: RunConfig, precision: str):
    # TensorFlow's import and the model's load take seconds: say so, the terminal is not hung.
    log.info("loading the model (%s)…", cfg.model or "shipped FER2013 model")
    return load_model(cfg.model, precision)


