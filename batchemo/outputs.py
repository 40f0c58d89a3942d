"""Per-file staged parts and the output tables rebuilt from them.

Each finished file's faces and frames go to a part file at once (written atomically, then its
ledger row is committed). The single-file outputs (`results.parquet`, `results.frames.parquet`, …)
are rebuilt by streaming the parts at the end of a run, or at the start of the next run after a
kill. In the directory form the parts *are* the dataset: `results/faces/part-<run>-<n>.parquet`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputError
from .ledger import Ledger, fingerprint
from .records import STATUS_ERROR, STATUS_NO_FACE, STATUS_OK, MediaItem
from .write import (
    FILES_SCHEMA,
    FRAMES_SCHEMA,
    RUNS_SCHEMA,
    SEGMENTS_SCHEMA,
    TABLES,
    OutputPaths,
    faces_schema,
    summary_schema,
    write_batches,
    write_table,
)

log = logging.getLogger("batchemo")
STAGED = ("faces", "frames")


class Store:
    """Staged parts of one output, keyed by the ledger's `part` column."""

    def __init__(self, paths: OutputPaths, ledger: Ledger):
        self.paths = paths
        self.ledger = ledger
        self.base = paths.out if paths.is_dataset else paths.state / "parts"
        self._n = 0
        self.committed: list[tuple[str, str]] = []  # keys of the files processed by this run
        self.failures = 0
        self.failure_cap: int | None = 20  # warnings per run; None: all (--log-json events)

    def report_failure(self, item: MediaItem, error: str | None) -> None:
        """A WARNING per failed file (a `file_failed` event in JSON logs), capped for people."""
        self.failures += 1
        fields = {"event": "file_failed", "root": item.root, "source": item.source,
                  "error": error}
        if self.failure_cap is None or self.failures <= self.failure_cap:
            log.warning("failed: %s: %s", item.source, error, extra={"fields": fields})
        elif self.failures == self.failure_cap + 1:
            log.warning("more files failed: the files table lists them all")

    def part_path(self, kind: str, part: str) -> Path:
        return self.base / kind / f"{part}.parquet"

    def recover(self) -> None:
        """Delete parts no ledger row points at (a kill between part and commit), then rebuild
        the single-file outputs if a killed run left them behind its committed files."""
        live = {r["part"] for r in self.ledger.files().values() if r["part"]}
        for kind in STAGED:
            d = self.base / kind
            for f in d.glob("*.parquet") if d.is_dir() else []:
                if f.stem not in live:
                    f.unlink(missing_ok=True)
            for f in d.glob(".*.tmp") if d.is_dir() else []:
                f.unlink(missing_ok=True)
        for name in TABLES:  # temp files of a writer killed mid-write (we hold the lock)
            target = self.paths.table(name)
            folder, pattern = (target, ".*.tmp") if self.paths.is_dataset else \
                (target.parent, f".{target.name}.*.tmp")
            for f in folder.glob(pattern) if folder.is_dir() else []:
                f.unlink(missing_ok=True)
        classes = self.ledger.get_meta("classes")
        if not classes:
            return
        classes = tuple(json.loads(classes))
        if self.ledger.get_meta("dirty"):
            log.info("completing the outputs of an interrupted run")
            self.rebuild(classes, None, None)
        elif self.check_parts(classes):
            self.rebuild(classes, None, None)

    def check_parts(self, classes: tuple[str, ...]) -> int:
        """Send back for processing every file whose staged rows are missing, unreadable or of
        another class set (a model change); returns how many. Rows are never mixed or lost
        silently: the file is processed again, or, if it is gone, its row says why it has none."""
        want = {"faces": faces_schema(classes).names, "frames": FRAMES_SCHEMA.names}
        bad = 0
        for r in self.ledger.files().values():
            why = r["part"] and self._part_problem(r, want)
            if why:
                self.send_back(r, why)
                bad += 1
        return bad

    def _part_problem(self, r: dict, want: dict) -> str | None:
        for kind in STAGED if r["media_type"] == "video" else ("faces",):
            f = self.part_path(kind, r["part"])
            if not f.is_file():
                return f"its staged {kind} rows are missing ({f.name})"
            try:
                names = pq.read_schema(f).names
            except (OSError, pa.ArrowException) as e:
                return f"its staged {kind} rows are unreadable ({e})"
            if names != want[kind]:
                return f"its staged {kind} rows were made with another model's classes"
        return None

    def send_back(self, r: dict, why: str) -> None:
        """Drop a file's staged rows; a present file is processed again by the next plan."""
        self.drop_part(r["part"])
        then = "it is processed again" if r["present"] else "the file is gone, its rows dropped"
        log.warning("%s: %s; %s", r["source"], why, then)
        # settings_id None: the plan sees changed settings and processes the file again
        self.ledger.commit_file({**r, "part": None, "settings_id": None, "status": STATUS_ERROR,
                                 "error": f"{why}; {then}", "faces": 0, "frames_sampled": 0})

    def commit_file(self, p, model, settings_id: str, run_id: str) -> str:
        """Write a finished file's parts, commit its ledger row; returns its status."""
        item: MediaItem = p.item
        status = STATUS_OK if p.faces else STATUS_NO_FACE
        if p.error and not p.frames:
            status = STATUS_ERROR
        prev = self.ledger.get(item.key)  # one row: this runs once per file
        part = None
        if p.frames and status != STATUS_ERROR:
            self._n += 1
            part = f"part-{run_id}-{self._n:06d}"
            faces = _faces_table(item, p.faces, model, run_id, (p.info or {}).get("cuts"))
            write_table(faces, self.part_path("faces", part))
            if item.media_type == "video":
                fr = np.array([(f[0], f[1], f[2]) for f in p.frames], dtype=object)
                frames = pa.table({
                    "root": [item.root] * len(fr), "source": [item.source] * len(fr),
                    "frame_index": fr[:, 0].astype(np.int64), "t_sec": fr[:, 1].astype(float),
                    "n_faces": fr[:, 2].astype(np.int32)}, schema=FRAMES_SCHEMA)
                write_table(frames, self.part_path("frames", part))
        info = p.info or {}
        self.ledger.commit_file({
            "root": item.root, "source": item.source, "media_type": item.media_type,
            "status": status, "error": p.error or info.get("warning"),  # e.g. truncated
            "size": item.size, "mtime": item.mtime,
            "fingerprint": p.fp or _fingerprint(item), "width": info.get("width"),
            "height": info.get("height"), "fps": info.get("fps"),
            "duration": info.get("duration"), "frames_sampled": len(p.frames),
            "faces": len(p.faces), "decode_failures": info.get("decode_failures", 0),
            "seconds": round(time.time() - p.started, 3), "present": True,
            "model_id": model.model_id, "run_id": run_id, "settings_id": settings_id,
            "part": part})
        if prev and prev["part"] and prev["part"] != part:
            self.drop_part(prev["part"])
        self.committed.append(item.key)
        if status == STATUS_ERROR:
            self.report_failure(item, p.error)
        return status

    def forget(self, key: tuple[str, str], prev: dict, prune: bool) -> None:
        """A file gone from its root: keep its rows (marked absent), or with `prune` drop them."""
        if prune:
            self.ledger.delete(key)
            if prev.get("part"):
                self.drop_part(prev["part"])
        else:
            self.ledger.mark_absent(key)
        self.ledger.set_meta("dirty", "1")

    def drop_part(self, part: str) -> None:
        for kind in STAGED:
            self.part_path(kind, part).unlink(missing_ok=True)

    def _stream(self, kind: str, schema: pa.Schema, rows: list[dict]):
        for r in rows:
            f = self.part_path(kind, r["part"])
            if not (r["part"] and f.is_file()):
                continue
            try:  # check_parts read the footer; a part can still be corrupt inside
                table = pq.read_table(f).cast(schema)
            except (OSError, ValueError, pa.ArrowException) as e:
                self.send_back(self.ledger.get((r["root"], r["source"])) or r,
                               f"its staged {kind} rows are unreadable ({e})")
                r["part"] = None
                continue
            yield from table.to_batches()

    def rebuild(self, classes: tuple[str, ...], run_id: str | None, cfg) -> None:
        """Rewrite the companion tables (and, single-file form, faces/frames) atomically."""
        self.check_parts(classes)
        rows = self._rows()
        p, fmt = self.paths, self.paths.fmt
        tag = run_id or f"recovered-{int(time.time())}"
        if not p.is_dataset:
            write_batches(faces_schema(classes), self._stream("faces", faces_schema(classes), rows),
                          p.table("faces"), fmt)
            write_batches(FRAMES_SCHEMA, self._stream("frames", FRAMES_SCHEMA, rows),
                          p.table("frames"), fmt)
            rows = self._rows()  # a part found corrupt while streaming changed its file's row
        files = pa.Table.from_pylist([{c: r[c] for c in FILES_SCHEMA.names} for r in rows],
                                     schema=FILES_SCHEMA)
        self._write_small("files", files, tag)
        runs = pa.Table.from_pylist(self.ledger.runs(), schema=RUNS_SCHEMA)
        self._write_small("runs", runs, tag)
        self._write_derived(classes, rows, files, tag, cfg)
        self.ledger.set_meta("dirty", None)

    def complete(self) -> bool:
        """Whether every output table exists (a user may have deleted one)."""
        return all(self.paths.table(name).exists() for name in TABLES)

    def write_runs(self, run_id: str) -> None:
        """Rewrite only the runs table (a run that changed nothing else)."""
        runs = pa.Table.from_pylist(self.ledger.runs(), schema=RUNS_SCHEMA)
        self._write_small("runs", runs, run_id)

    def _rows(self) -> list[dict]:
        return sorted(self.ledger.files().values(), key=lambda r: (r["root"], r["source"]))

    def _write_derived(self, classes, rows, files: pa.Table, tag: str, cfg) -> None:
        """timeline and segments per video (streamed file by file), summary, optional plots."""
        from .summarize import SEGMENT_COLUMNS, summarize
        from .timeline import segments, timeline, timeline_schema

        bin_sec = cfg.timeline_bin if cfg else 1.0
        tl_schema = timeline_schema(list(classes))
        seg_frames: list[pd.DataFrame] = []

        def timelines():
            for r in rows:
                if r["media_type"] != "video" or not r["part"]:
                    continue
                faces, frames = self._read_part("faces", r), self._read_part("frames", r)
                if frames is None:
                    continue
                if faces is None:
                    faces = faces_schema(classes).empty_table().to_pandas()
                tl = timeline(faces, frames, bin_sec=bin_sec)
                seg_frames.append(segments(tl))
                yield pa.Table.from_pandas(tl, schema=tl_schema, preserve_index=False)\
                    .to_batches()

        self._write_stream("timeline", tl_schema,
                           (b for batches in timelines() for b in batches), tag)
        seg = pd.concat(seg_frames, ignore_index=True) if seg_frames else \
            pd.DataFrame(columns=SEGMENT_COLUMNS)
        self._write_small("segments", pa.Table.from_pandas(seg, schema=SEGMENTS_SCHEMA,
                                                           preserve_index=False), tag)
        faces_all = self._concat("faces", rows, faces_schema(classes))
        frames_all = self._concat("frames", rows, FRAMES_SCHEMA)
        summary = summarize(faces_all, files.to_pandas(), frames_all)
        self._write_small("summary", pa.Table.from_pandas(
            summary, schema=summary_schema(classes), preserve_index=False), tag)
        if cfg is not None and cfg.plots:
            from .plots import write_plots

            try:
                write_plots(faces_all, frames_all, Path(cfg.plots), files=files,
                            bin_sec=bin_sec)
            except OSError as e:
                raise OutputError(f"cannot write plots to {cfg.plots}: {e.strerror or e}") \
                    from None
            except Exception as e:  # charts are extras: the tables are written, the run is done
                log.warning("plots not written: %s: %s", type(e).__name__, e)

    def _read_part(self, kind: str, row: dict) -> pd.DataFrame | None:
        f = self.part_path(kind, row["part"]) if row["part"] else None
        try:
            return pq.read_table(f).to_pandas() if f and f.is_file() else None
        except (OSError, ValueError, pa.ArrowException):
            return None  # a corrupt part: _stream reports it and sends its file back

    def _concat(self, kind: str, rows: list[dict], schema: pa.Schema) -> pd.DataFrame:
        # Summary rolls up folders and the run, so it reads every part (only rows kept as state).
        return pa.Table.from_batches(list(self._stream(kind, schema, rows)), schema=schema)\
            .to_pandas()

    def _write_stream(self, name: str, schema: pa.Schema, batches, tag: str) -> None:
        p = self.paths
        if not p.is_dataset:
            write_batches(schema, batches, p.table(name), p.fmt)
            return
        self._write_small(name, pa.Table.from_batches(list(batches), schema=schema), tag)

    def _write_small(self, name: str, table: pa.Table, tag: str) -> None:
        p = self.paths
        if not p.is_dataset:
            write_table(table, p.table(name), p.fmt)
            return
        d = p.table(name)
        new = d / f"part-{tag}.parquet"
        write_table(table, new)
        for old in d.glob("part-*.parquet"):
            if old != new:
                old.unlink(missing_ok=True)


def _fingerprint(item: MediaItem) -> str | None:
    try:
        return fingerprint(item.path, item.size)
    except OSError:
        return None


def _faces_table(item: MediaItem, rows: list, model, run_id: str, cuts=None) -> pa.Table:
    """A file's face rows ([frame_index, t_sec, face_index, FaceBox, probs]) as the faces table."""
    n = len(rows)
    a = {
        "frame_index": np.array([r[0] for r in rows], np.int64),
        "t_sec": np.array([np.nan if r[1] is None else r[1] for r in rows], np.float64),
        "face_index": np.array([r[2] for r in rows], np.int32),
        "boxes": np.array([[r[3].x, r[3].y, r[3].w, r[3].h] for r in rows],
                          np.int32).reshape(n, 4),
        "det_score": np.array([r[3].score for r in rows], np.float32),
        "probs": np.stack([r[4] for r in rows]) if n else np.zeros((0, 0), np.float32),
    }
    probs = a["probs"].reshape(n, len(model.classes))
    track = None
    if item.media_type == "video" and n:
        from .track import assign_tracks

        track = assign_tracks(a["frame_index"], a["t_sec"], a["boxes"], scores=a["det_score"],
                              cut_frames=cuts)
    cols = {
        "root": [item.root] * n, "source": [item.source] * n,
        "media_type": [item.media_type] * n, "frame_index": a["frame_index"],
        "t_sec": pa.array(a["t_sec"], pa.float64(), mask=np.isnan(a["t_sec"])),
        "face_index": a["face_index"],
        "track_id": pa.array(track if track is not None else [None] * n, pa.int64(),
                             mask=None if track is None else track < 0),
        "x": a["boxes"][:, 0], "y": a["boxes"][:, 1], "w": a["boxes"][:, 2],
        "h": a["boxes"][:, 3], "det_score": a["det_score"],
    }
    for i, c in enumerate(model.classes):
        cols[f"p_{c}"] = probs[:, i]
    top = probs.argmax(1) if n else np.zeros(0, int)
    cols["emotion"] = [model.classes[i] for i in top]
    cols["confidence"] = probs.max(1) if n else np.zeros(0, np.float32)
    cols["model_id"] = [model.model_id] * n
    cols["run_id"] = [run_id] * n
    return pa.table(cols, schema=faces_schema(model.classes))


def commit_status(ledger: Ledger, item: MediaItem, status: str, error: str | None, run_id: str,
                  model_id: str) -> None:
    """Record a file that is not processed (scan error, not media) as its current state."""
    ledger.commit_file({"root": item.root, "source": item.source, "media_type": item.media_type,
                        "status": status, "error": error, "size": item.size,
                        "mtime": item.mtime, "present": True, "run_id": run_id,
                        "model_id": model_id, "faces": 0, "frames_sampled": 0,
                        "decode_failures": 0})
