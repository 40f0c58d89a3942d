"""The plan: a run's settings resolved once, then which scanned files an engine must process and
which the ledger already has.

Planning needs to know of the model only its JSON card, so a rerun with nothing to do never pays
for TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from batchemo.config import RunConfig
from batchemo.errors import OutputError
from batchemo.media.crop import margin_for
from batchemo.media.scan import scan, table_safe
from batchemo.output.ledger import Ledger, fingerprint
from batchemo.output.store import Store
from batchemo.output.tables import TABLES, OutputPaths
from batchemo.records import (
    OTHER,
    STATUS_ERROR,
    STATUS_SKIPPED,
    ExtractSettings,
    FileRow,
    FileTask,
    MediaItem,
)
from batchemo.tta import mirror_below


def extract_settings(cfg: RunConfig) -> ExtractSettings:
    return ExtractSettings(fps=cfg.fps, detector=cfg.detector, min_face=cfg.min_face,
                           score_threshold=cfg.score_threshold, margin=margin_for(cfg.detector))


def settings_id(extract: ExtractSettings, model_id: str, tta: bool | float, precision: str) -> str:
    """Hash of every setting that changes a file's rows; a change reprocesses the file."""
    s = {**dataclasses.asdict(extract), "tta": tta, "model": model_id, "precision": precision}
    return hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Card:
    """What planning needs to know of a model; its JSON card says it without TensorFlow."""

    model_id: str
    classes: tuple[str, ...]
    tta: bool
    mirror_below: float = math.inf  # selective TTA's threshold (tta.mirror_below)

    @classmethod
    def of(cls, model_id: str, meta: dict) -> Card:
        return cls(model_id, tuple(meta["classes"]), bool(meta.get("tta", False)),
                   mirror_below(meta))

    def tta_setting(self, tta: bool) -> bool | float:
        """TTA as the settings id records it: off, every face, or selective's threshold."""
        return self.mirror_below if tta and math.isfinite(self.mirror_below) else tta


def read_card(cfg: RunConfig) -> Card | None:
    """The model's id (as load_model computes it), classes and TTA flag; None if unreadable."""
    from batchemo.model import DEFAULT_MODEL, file_digest

    path = Path(cfg.model) if cfg.model else DEFAULT_MODEL
    path = path if path.suffix == ".keras" else path.with_suffix(".keras")
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        model_id = meta.get("model_id") or f"{path.stem}-{file_digest(path)[:12]}"
        return Card.of(model_id, meta)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Settings:
    """A run's settings as applied, resolved once before planning and never changed after."""

    card: Card
    extract: ExtractSettings
    tta: bool
    tta_key: bool | float  # as the settings id records it (Card.tta_setting)
    precision: str  # what "auto" resolved to for this output
    sid: str
    model: object | None  # model.LoadedModel, where resolving had to load it


def resolve_settings(cfg: RunConfig, ledger: Ledger, out: Path,
                     load: Callable[[str], object]) -> Settings:
    """The model's card, TTA, precision and settings id, from the card and the ledger alone where
    they tell (a no-op rerun never loads TensorFlow); `load(precision)` loads the model where
    they don't: an unreadable card (load_model says why) or this output's first run."""
    card, model = read_card(cfg), None
    if card is None:
        model = load(cfg.precision)
        card = Card.of(model.model_id, model.meta)
    known = ledger.get_meta("model_id")
    if known and known != card.model_id and not cfg.force:
        raise OutputError(f"{out} was made with model {known}, this run uses {card.model_id}; use "
                          "--force to reprocess everything with the new model, or write to a "
                          "new --out")
    tta = bool(cfg.tta and card.tta)
    # An output keeps the precision "auto" first resolved to: a new rule (or a new int8 copy of
    # the model) must not reprocess an archive.
    precision_key = f"precision:{card.model_id}:{cfg.precision}"
    precision = ledger.get_meta(precision_key) if model is None else model.precision
    if precision is None:
        model = load(cfg.precision)
        precision = model.precision
    if model is not None:
        ledger.set_meta(precision_key, precision)
    extract = extract_settings(cfg)
    tta_key = card.tta_setting(tta)
    return Settings(card, extract, tta, tta_key, precision,
                    settings_id(extract, card.model_id, tta_key, precision), model)


@dataclass
class Plan:
    """What planning decided: the files to process (and which are new), and the counts of the
    rest. Scan errors and non-media files are already recorded in the ledger."""

    todo: list[FileTask] = field(default_factory=list)
    new_keys: set[tuple[str, str]] = field(default_factory=set)
    failed: list[MediaItem] = field(default_factory=list)
    skipped: int = 0
    unchanged: int = 0
    deleted: int = 0


def plan(cfg: RunConfig, ledger: Ledger, store: Store, settings: Settings, run_id: str) -> Plan:
    """Decide per scanned item: record as error/skipped, skip as unchanged, or process."""
    known = ledger.files()
    sid, model_id = settings.sid, settings.card.model_id
    out, seen = Plan(), set()
    roots = unique_roots(cfg.input)
    for item in scan(roots, cfg.include, cfg.exclude, skip=own_paths(cfg, store.paths)):
        seen.add(item.key)
        prev = known.get(item.key)
        if item.error or item.media_type == OTHER:
            status = STATUS_ERROR if item.error else STATUS_SKIPPED
            if status == STATUS_ERROR:
                out.failed.append(item)
            else:
                out.skipped += 1
            if prev and prev.part:
                store.forget(prev, prune=True)  # was media, now is not: rows go
            why = item.error or item.reason
            same = prev and (prev.status, prev.error, prev.size, prev.mtime, prev.present,
                             prev.part) == (status, why, item.size, item.mtime, True, None)
            if not same:  # an unchanged row would only mark the outputs for a rebuild
                commit_status(ledger, item, status, why, run_id, model_id)
            continue
        if cfg.force or prev is None or prev.settings_id != sid:
            if prev is None:
                out.new_keys.add(item.key)
            # Taken before decoding and checked again at commit: a file replaced meanwhile
            # (even by one of the same size) is not recorded as what was decoded.
            out.todo.append(FileTask(item, content_fingerprint(item)))
            continue
        if (prev.size, prev.mtime) == (item.size, item.mtime) and prev.present:
            fp = prev.fingerprint
        else:
            fp = content_fingerprint(item)
        if fp == prev.fingerprint and not (cfg.retry_errors and prev.status == STATUS_ERROR):
            out.unchanged += 1
            if (prev.size, prev.mtime, prev.present) != (item.size, item.mtime, True):
                ledger.commit_file(dataclasses.replace(prev, size=item.size, mtime=item.mtime,
                                                       present=True))
            continue
        # Read afresh (a retried error's row may hold "unreadable: …" of a file now readable)
        out.todo.append(FileTask(item, content_fingerprint(item) if fp == prev.fingerprint
                                 else fp))
    safe_roots = {table_safe(r) for r in roots}
    for key, prev in known.items():
        if key[0] in safe_roots and key not in seen and (prev.present or cfg.prune_deleted):
            out.deleted += 1
            store.forget(prev, prune=cfg.prune_deleted)
    return out


def unique_roots(inputs: list) -> list[str]:
    """The input roots as given, each real path once (`-i in -i ./in -i /abs/in` is one root,
    named as first given): a file is analysed and counted once."""
    roots, real = [], set()
    for p in inputs:
        r = os.path.realpath(p)
        if r not in real:
            real.add(r)
            roots.append(str(p))
    return roots


def content_fingerprint(item: MediaItem) -> str:
    """The file's fingerprint now (ledger.fingerprint with the scanned size), or why it cannot
    be read."""
    try:
        return fingerprint(item.path, item.size)
    except OSError as e:
        return f"unreadable: {e.strerror}"


def own_paths(cfg: RunConfig, paths: OutputPaths) -> list[Path]:
    """This run's outputs, state and plots: never inputs, even inside an input root.

    Named one by one, not as the --out folder: with `-i in -o in` that folder is the root
    itself, whose photos are inputs. The state folder holds the ledger (and SQLite's -wal,
    -shm, -journal beside it), the lock and, in the single-file form, the staged parts; in the
    directory form the parts are the table folders' files. The plots folder is skipped whole,
    and where it is an input root itself, the plots written there (analysis.plots.write_plots
    names them run_shares.png and timeline_<video>-<hash>.png) are.
    """
    own = [paths.table(name) for name in TABLES] + [paths.state]
    if cfg.plots:
        plots = Path(cfg.plots)
        own.append(plots)
        if plots.is_dir():
            own += [plots / "run_shares.png", *plots.glob("timeline_*-*.png")]
    return own


def commit_status(ledger: Ledger, item: MediaItem, status: str, error: str | None, run_id: str,
                  model_id: str) -> None:
    """Record a file that is not processed (scan error, not media) as its current state."""
    ledger.commit_file(FileRow(item.root, item.source, item.media_type, status, error,
                               size=item.size, mtime=item.mtime, present=True, run_id=run_id,
                               model_id=model_id))
