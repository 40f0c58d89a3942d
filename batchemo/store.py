"""Per-file staged parts and the output tables rebuilt from them (storage only: what the rows
mean, tracking and the derived tables, is the pipeline's and derive.py's).

Each finished file's faces and frames go to a part file at once (written atomically, then its
ledger row is committed). The single-file outputs (`results.parquet`, `results.frames.parquet`, …)
are rebuilt by streaming the parts at the end of a run, or at the start of the next run after a
kill. In the directory form the parts *are* the dataset: `results/faces/part-<run>-<n>.parquet`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .ledger import Ledger
from .records import STATUS_ERROR
from .tables import (
    FILES_SCHEMA,
    FRAMES_SCHEMA,
    RUNS_SCHEMA,
    TABLES,
    OutputPaths,
    faces_schema,
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

    def part_path(self, kind: str, part: str) -> Path:
        return self.base / kind / f"{part}.parquet"

    def recover(self) -> tuple[str, ...] | None:
        """Delete parts no ledger row points at (a kill between part and commit); returns the
        class set if a killed run left the outputs behind its committed files (rebuild them)."""
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
            return None
        classes = tuple(json.loads(classes))
        if self.ledger.get_meta("dirty"):
            log.info("completing the outputs of an interrupted run")
            return classes
        return classes if self.check_parts(classes) else None

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

    def write_part(self, run_id: str, faces: pa.Table, frames: pa.Table | None) -> str:
        """Stage a file's rows (frames: videos only); returns the part's name for its ledger row."""
        self._n += 1
        part = f"part-{run_id}-{self._n:06d}"
        write_table(faces, self.part_path("faces", part))
        if frames is not None:
            write_table(frames, self.part_path("frames", part))
        return part

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

    def rebuild(self, classes: tuple[str, ...], tag: str) -> tuple[list[dict], pa.Table]:
        """Rewrite faces/frames (single-file form), files and runs atomically; returns the
        ledger rows and the files table, from which the derived tables are made."""
        self.check_parts(classes)
        rows = self._rows()
        p, fmt = self.paths, self.paths.fmt
        if not p.is_dataset:
            write_batches(faces_schema(classes), self._stream("faces", faces_schema(classes), rows),
                          p.table("faces"), fmt)
            write_batches(FRAMES_SCHEMA, self._stream("frames", FRAMES_SCHEMA, rows),
                          p.table("frames"), fmt)
            rows = self._rows()  # a part found corrupt while streaming changed its file's row
        files = pa.Table.from_pylist([{c: r[c] for c in FILES_SCHEMA.names} for r in rows],
                                     schema=FILES_SCHEMA)
        self.write_small("files", files, tag)
        runs = pa.Table.from_pylist(self.ledger.runs(), schema=RUNS_SCHEMA)
        self.write_small("runs", runs, tag)
        return rows, files

    def complete(self) -> bool:
        """Whether every output table exists (a user may have deleted one)."""
        return all(self.paths.table(name).exists() for name in TABLES)

    def write_runs(self, run_id: str) -> None:
        """Rewrite only the runs table (a run that changed nothing else)."""
        runs = pa.Table.from_pylist(self.ledger.runs(), schema=RUNS_SCHEMA)
        self.write_small("runs", runs, run_id)

    def _rows(self) -> list[dict]:
        return sorted(self.ledger.files().values(), key=lambda r: (r["root"], r["source"]))

    def read_part(self, kind: str, row: dict) -> pd.DataFrame | None:
        f = self.part_path(kind, row["part"]) if row["part"] else None
        try:
            return pq.read_table(f).to_pandas() if f and f.is_file() else None
        except (OSError, ValueError, pa.ArrowException):
            return None  # a corrupt part: _stream reports it and sends its file back

    def concat(self, kind: str, rows: list[dict], schema: pa.Schema) -> pd.DataFrame:
        return pa.Table.from_batches(list(self._stream(kind, schema, rows)), schema=schema)\
            .to_pandas()

    def write_stream(self, name: str, schema: pa.Schema, batches, tag: str) -> None:
        p = self.paths
        if not p.is_dataset:
            write_batches(schema, batches, p.table(name), p.fmt)
            return
        self.write_small(name, pa.Table.from_batches(list(batches), schema=schema), tag)

    def write_small(self, name: str, table: pa.Table, tag: str) -> None:
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

