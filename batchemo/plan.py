"""The plan: which scanned files an engine must process, and which the ledger already has.

Also what planning needs to know of the model without loading it (its JSON card), so a rerun
with nothing to do never pays for TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import RunConfig
from .crop import margin_for
from .infer import mirror_below
from .ledger import Ledger, fingerprint
from .records import OTHER, STATUS_ERROR, STATUS_SKIPPED, FileTask, MediaItem
from .scan import scan, table_safe
from .store import Store
from .tables import TABLES, OutputPaths

if TYPE_CHECKING:
    from .pipeline import RunResult


def settings_id(cfg: RunConfig, model_id: str, tta: bool | float, precision: str) -> str:
    """Hash of every setting that changes a file's rows; a change reprocesses the file."""
    s = {"fps": cfg.fps, "detector": cfg.detector, "min_face": cfg.min_face,
         "score_threshold": cfg.score_threshold, "margin": margin_for(cfg.detector), "tta": tta,
         "model": model_id, "precision": precision}
    return hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Card:
    """What planning needs to know of a model; its JSON card says it without TensorFlow."""

    model_id: str
    classes: tuple[str, ...]
    tta: bool
    mirror_below: float = math.inf  # selective TTA's threshold (infer.mirror_below)

    @classmethod
    def of(cls, model_id: str, meta: dict) -> Card:
        return cls(model_id, tuple(meta["classes"]), bool(meta.get("tta", False)),
                   mirror_below(meta))

    def tta_setting(self, tta: bool) -> bool | float:
        """TTA as the settings id records it: off, every face, or selective's threshold."""
        return self.mirror_below if tta and math.isfinite(self.mirror_below) else tta


def read_card(cfg: RunConfig) -> Card | None:
    """The model's id (as load_model computes it), classes and TTA flag; None if unreadable."""
    from .model import DEFAULT_MODEL, file_digest

    path = Path(cfg.model) if cfg.model else DEFAULT_MODEL
    path = path if path.suffix == ".keras" else path.with_suffix(".keras")
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        model_id = meta.get("model_id") or f"{path.stem}-{file_digest(path)[:12]}"
        return Card.of(model_id, meta)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan(cfg: RunConfig, ledger: Ledger, store: Store, sid: str, result: RunResult, run_id: str,
         model_id: str, report_failure: Callable[[MediaItem, str | None], None]
         ) -> tuple[list[FileTask], set[tuple[str, str]]]:
    """Decide per scanned item: record as error/skipped, skip as unchanged, or process.
    Returns the files to process and the keys among them that are new; counts the rest."""
    known = ledger.files()
    seen, todo, new_keys = set(), [], set()
    for item in scan([str(p) for p in cfg.input], cfg.include, cfg.exclude,
                     skip=own_paths(cfg, store.paths)):
        seen.add(item.key)
        prev = known.get(item.key)
        if item.error or item.media_type == OTHER:
            status = STATUS_ERROR if item.error else STATUS_SKIPPED
            if status == STATUS_ERROR:
                result.files_failed += 1
                report_failure(item, item.error)
            else:
                result.files_skipped += 1
            if prev and prev["part"]:
                store.forget(item.key, prev, prune=True)  # was media, now is not: rows go
            why = item.error or item.reason
            same = prev and (prev["status"], prev["error"], prev["size"], prev["mtime"],
                             prev["present"], prev["part"]) == (status, why, item.size,
                                                                item.mtime, True, None)
            if not same:  # an unchanged row would only mark the outputs for a rebuild
                commit_status(ledger, item, status, why, run_id, model_id)
            continue
        if cfg.force or prev is None or prev["settings_id"] != sid:
            if prev is None:
                new_keys.add(item.key)
            todo.append(FileTask(item, ""))
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
        todo.append(FileTask(item, fp))
    roots = {table_safe(str(p)) for p in cfg.input}
    for key, prev in known.items():
        if key[0] in roots and key not in seen and (prev["present"] or cfg.prune_deleted):
            result.files_deleted += 1
            store.forget(key, prev, prune=cfg.prune_deleted)
    return todo, new_keys


def own_paths(cfg: RunConfig, paths: OutputPaths) -> list[Path]:
    """This run's outputs, state and plots: never inputs, even inside an input root."""
    if paths.is_dataset:
        own = [paths.out]
    else:
        own = [paths.table(name) for name in TABLES] + [paths.state]
    return own + ([Path(cfg.plots)] if cfg.plots else [])


def commit_status(ledger: Ledger, item: MediaItem, status: str, error: str | None, run_id: str,
                  model_id: str) -> None:
    """Record a file that is not processed (scan error, not media) as its current state."""
    ledger.commit_file({"root": item.root, "source": item.source, "media_type": item.media_type,
                        "status": status, "error": error, "size": item.size,
                        "mtime": item.mtime, "present": True, "run_id": run_id,
                        "model_id": model_id, "faces": 0, "frames_sampled": 0,
                        "decode_failures": 0})
