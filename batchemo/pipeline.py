"""run(cfg): scan → ledger → decode/detect/crop (workers) → batched inference → per-file commits."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import outputs
from .config import RunConfig, validate
from .engines.local import crop_margin
from .engines.local import process as _process
from .errors import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_SOME_FAILED,
    BatchemoError,
    ConfigError,
    Interrupted,
    LockedError,
    OutputError,
)
from .infer import Batcher
from .ledger import Ledger, OutputLock, fingerprint
from .model import load_model
from .records import (
    OTHER,
    STATUS_ERROR,
    STATUS_SKIPPED,
    MediaItem,
)
from .scan import scan, table_safe
from .write import OutputPaths

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
        rate = self.faces / self.seconds if self.seconds > 0 else 0.0
        done = self.files_new + self.files_changed
        return (f"batchemo: {done} files processed ({self.files_unchanged} unchanged, "
                f"{self.files_skipped} skipped), {self.frames} frames, {self.faces} faces, "
                f"{self.files_failed} errors, {self.seconds:.1f} s, {rate:.0f} faces/s")


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


def run(cfg: RunConfig) -> RunResult:
    """Analyse every new or changed file under cfg.input; write all output tables.

    Idempotent and resumable: finished files are committed one by one to a ledger beside the
    output, so a rerun (or a run after a kill) processes only what is missing or changed.
    """
    validate(cfg)
    if not cfg.input:
        raise ConfigError("no input given (--input PATH, repeatable)")
    missing = [str(p) for p in cfg.input if not os.path.exists(p)]
    if missing:  # a misspelt or unmounted root is a usage error, not one failed file
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"--input {missing[0]}: no such file or directory{more}")
    process = _process
    if cfg.engine == "ray":
        from .engines import ray as ray_engine

        ray_engine.require_ray()  # exit 2 with the install command before anything is written
        process = ray_engine.process
    paths = OutputPaths.from_out(cfg.out)
    try:
        if paths.adopt_legacy_state():
            log.info("moved the state of %s to %s", paths.out, paths.state)
    except OSError as e:
        raise OutputError(f"cannot move the state folder to {paths.state}: {e}") from None
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
                return _run_locked(cfg, paths, ledger, process)
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
    from .jsonlog import native_lines_as_json

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
    db = state / "ledger.sqlite"
    if db.exists():
        try:
            con = sqlite3.connect(db)
            try:
                used = con.execute("SELECT (SELECT count(*) FROM files) + "
                                   "(SELECT count(*) FROM runs)").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            used = 0  # created but never got its tables
        if used:
            return
    shutil.rmtree(state, ignore_errors=True)
    for d in made:
        if d != state and d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _run_locked(cfg: RunConfig, paths: OutputPaths, ledger: Ledger, process) -> RunResult:
    """Everything but the processing step: `process` is `_process` (the local engine) or
    engines.ray.process, with the same signature."""
    started = time.time()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    result = RunResult(run_id, paths.out)
    store = outputs.Store(paths, ledger)
    store.failure_cap = None if cfg.log_json else store.failure_cap
    store.recover()  # a killed run's orphan parts go; its finished files are rebuilt below

    # Plan before loading the model: a rerun with nothing to do never pays for TensorFlow.
    card, model = _read_card(cfg), None
    if card is None:  # load_model says what is wrong with the artifact
        model = _load(cfg)
        card = _Card(model.model_id, model.classes, bool(model.meta.get("tta", False)))
    known = ledger.get_meta("model_id")
    if known and known != card.model_id and not cfg.force:
        raise OutputError(f"{paths.out} was made with model {known}, this run uses "
                          f"{card.model_id}; use --force to reprocess everything with the new "
                          "model, or write to a new --out")
    tta = bool(cfg.tta and card.tta)
    precision_key = f"precision:{card.model_id}:{cfg.precision}"  # how "auto" resolved here
    precision = model.precision if model else ledger.get_meta(precision_key)
    sid = settings_id(cfg, card.model_id, tta, precision) if precision else None
    todo, new_keys = _plan(cfg, ledger, store, sid, result, run_id, card.model_id) if sid \
        else ([], set())
    if sid is None or todo:
        model = model or _load(cfg)
        precision = model.precision
        ledger.set_meta(precision_key, precision)
        if settings_id(cfg, model.model_id, tta, precision) != sid:  # first run, or changed
            sid = settings_id(cfg, model.model_id, tta, precision)
            # plan again from fresh counters; files found deleted were marked the first time
            result = RunResult(run_id, paths.out, files_deleted=result.files_deleted)
            todo, new_keys = _plan(cfg, ledger, store, sid, result, run_id, model.model_id)
    ledger.set_meta("model_id", card.model_id)
    ledger.set_meta("classes", json.dumps(list(card.classes)))
    log.info("%d files to process (%d new, %d changed, %d unchanged)", len(todo),
             len(new_keys), len(todo) - len(new_keys), result.files_unchanged)
    try:
        if todo:
            process(cfg, todo, model, Batcher(model, cfg.batch_size, tta), store, sid, run_id,
                    result)
    except (_Interrupted, KeyboardInterrupt):
        result.interrupted = True
        log.warning("interrupted: finished files are kept, files in flight are dropped")
    # Counted as committed, not as planned: an interrupted run reports only what it kept.
    result.files_new = sum(key in new_keys for key in store.committed)
    result.files_changed = len(store.committed) - result.files_new
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
                    "settings": {**dataclasses.asdict(cfg), "precision": precision,
                                 "tta": tta}})
    derived = json.dumps({"bin": cfg.timeline_bin, "plots": str(cfg.plots or "")})
    if (ledger.get_meta("dirty") or ledger.get_meta("derived") != derived
            or not store.complete() or (cfg.plots and not Path(cfg.plots).is_dir())):
        store.rebuild(card.classes, run_id, cfg)
        ledger.set_meta("derived", derived)
    else:  # nothing changed but the run history
        store.write_runs(run_id)
    if cfg.log_json:  # one machine-readable closing record instead of the human line
        from .jsonlog import record

        level = "INFO" if result.exit_code == EXIT_OK else "WARNING"
        print(record(level, "batchemo", result.summary_line(), event="run_finished",
                     **dataclasses.asdict(result)), file=sys.stderr)
    else:
        print(result.summary_line(), file=sys.stderr)
    return result


@dataclass(frozen=True)
class _Card:
    """What planning needs to know of a model; its JSON card says it without TensorFlow."""

    model_id: str
    classes: tuple[str, ...]
    tta: bool


def _read_card(cfg: RunConfig) -> _Card | None:
    """The model's id (as load_model computes it), classes and TTA flag; None if unreadable."""
    from .model import DEFAULT_MODEL, file_digest

    path = Path(cfg.model) if cfg.model else DEFAULT_MODEL
    path = path if path.suffix == ".keras" else path.with_suffix(".keras")
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        model_id = meta.get("model_id") or f"{path.stem}-{file_digest(path)[:12]}"
        return _Card(model_id, tuple(meta["classes"]), bool(meta.get("tta", False)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load(cfg: RunConfig):
    # TensorFlow's import and the model's load take seconds: say so, the terminal is not hung.
    log.info("loading the model (%s)…", cfg.model or "shipped FER2013 model")
    return load_model(cfg.model, cfg.precision)


def _plan(cfg, ledger, store, sid, result, run_id, model_id
          ) -> tuple[list[tuple[MediaItem, str]], set[tuple[str, str]]]:
    """Decide per scanned item: record as error/skipped, skip as unchanged, or process.
    Returns the files to process and the keys among them that are new."""
    known = ledger.files()
    seen, todo, new_keys = set(), [], set()
    for item in scan([str(p) for p in cfg.input], cfg.include, cfg.exclude,
                     skip=_own_paths(cfg, store.paths)):
        seen.add(item.key)
        prev = known.get(item.key)
        if item.error or item.media_type == OTHER:
            status = STATUS_ERROR if item.error else STATUS_SKIPPED
            if status == STATUS_ERROR:
                result.files_failed += 1
                store.report_failure(item, item.error)
            else:
                result.files_skipped += 1
            if prev and prev["part"]:
                store.forget(item.key, prev, prune=True)  # was media, now is not: rows go
            why = item.error or item.reason
            same = prev and (prev["status"], prev["error"], prev["size"], prev["mtime"],
                             prev["present"], prev["part"]) == (status, why, item.size,
                                                                item.mtime, True, None)
            if not same:  # an unchanged row would only mark the outputs for a rebuild
                outputs.commit_status(ledger, item, status, why, run_id, model_id)
            continue
        if cfg.force or prev is None or prev["settings_id"] != sid:
            if prev is None:
                new_keys.add(item.key)
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
        todo.append((item, fp))
    roots = {table_safe(str(p)) for p in cfg.input}
    for key, prev in known.items():
        if key[0] in roots and key not in seen and (prev["present"] or cfg.prune_deleted):
            result.files_deleted += 1
            store.forget(key, prev, prune=cfg.prune_deleted)
    return todo, new_keys


def _own_paths(cfg: RunConfig, paths: OutputPaths) -> list[Path]:
    """This run's outputs, state and plots: never inputs, even inside an input root."""
    if paths.is_dataset:
        own = [paths.out]
    else:
        own = [paths.table(name) for name in outputs.TABLES] + [paths.state]
    return own + ([Path(cfg.plots)] if cfg.plots else [])
