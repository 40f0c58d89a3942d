"""Per-file staged parts and the output tables rebuilt from them (storage only: what the rows
mean, tracking and the derived tables, is the pipeline's and derive.py's).

Each finished file's faces and frames go to a part file at once (written atomically, then its
ledger row is committed). The single-file outputs (`results.parquet`, `results.frames.parquet`, …)
are rebuilt by streaming the parts at the end of a run, or at the start of the next run after a
kill. In the directory form the parts *are* the dataset: `results/faces/part-<run>-<n>.parquet`.

Parts holding no rows are not written. Past `Store.COMPACT_AT` small parts (and by `batchemo
compact`), small parts are merged into compacted parts (`part-<tag>-c<n>`) of about
`ROW_GROUP_ROWS` rows, which many files' ledger rows share: a file's old rows in a compacted part
are filtered out of it at the end of the run that replaced them (`purge_stale`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchemo.output.atomic import leftover_temps
from batchemo.output.ledger import Ledger
from batchemo.output.tables import (
    FRAMES_SCHEMA,
    ROW_GROUP_ROWS,
    TABLES,
    OutputPaths,
    faces_schema,
    files_table,
    runs_table,
    write_batches,
    write_table,
)
from batchemo.records import STATUS_ERROR, FileRow

log = logging.getLogger("batchemo")
STAGED = ("faces", "frames")


def is_shared(part: str) -> bool:
    """Whether a part is compacted (`part-<tag>-c<n>`: many files' rows) or one file's."""
    return part.rsplit("-", 1)[-1].startswith("c")


def _key_mask(table: pa.Table, keys: set[tuple[str, str]]) -> pa.ChunkedArray:
    joined = pc.binary_join_element_wise(table["root"], table["source"], "\x00")
    return pc.is_in(joined, value_set=pa.array([f"{r}\x00{s}" for r, s in keys], pa.string()))


class Store:
    """Staged parts of one output, keyed by the ledger's `part` column.

    It deletes only files the ledger recorded it writing (Ledger.claim): never a user's file
    in an output folder."""

    COMPACT_AT = 256  # small parts (per output) past which a rebuild compacts them first

    def __init__(self, paths: OutputPaths, ledger: Ledger):
        self.paths = paths
        self.ledger = ledger
        self.base = paths.out if paths.is_dataset else paths.state / "parts"
        self._n = 0
        self._cache: tuple[Path, pa.Table] | None = None  # the last compacted part read
        self._bad: set[str] = set()  # parts found corrupt while streaming (their files sent back)

    def part_path(self, kind: str, part: str) -> Path:
        return self.base / kind / f"{part}.parquet"

    def _staged_path(self, kind: str, part: str) -> Path:
        # A leading dot: Parquet readers of the directory form skip it until it is moved in.
        return self.base / kind / f".{part}.parquet.compacting"

    def recover(self) -> tuple[str, ...] | None:
        """Finish a killed compaction; delete the parts of ours no ledger row points at (a kill
        between part and commit) and our temp files; returns the class set if a killed run left
        the outputs behind its committed files (rebuild them)."""
        self._finish_compaction()
        live = {r.part for r in self.ledger.files().values() if r.part}
        owned = self.ledger.claimed("parts")
        for part in owned - live:
            self._remove_part(part)
        ours = {f"{p}.parquet" for p in owned} | {f".{p}.parquet.compacting" for p in owned}
        temps = [f for kind in STAGED for f in leftover_temps(self.base / kind, ours)]
        for name in TABLES:  # temp files of a writer killed mid-write (we hold the lock)
            target = self.paths.table(name)
            temps += leftover_temps(target, self._small_names(name)) if self.paths.is_dataset \
                else leftover_temps(target.parent, [target.name])
        for f in temps:
            f.unlink(missing_ok=True)
        self.purge_stale()
        classes = self.ledger.get_meta("classes")
        if not classes:
            return None
        classes = tuple(json.loads(classes))
        if self.ledger.dirty:
            log.info("completing the outputs of an interrupted run")
            return classes
        return classes if self.check_parts(classes) else None

    def check_parts(self, classes: tuple[str, ...]) -> int:
        """Send back for processing every file whose staged rows are missing, unreadable or of
        another class set (a model change); returns how many. Rows are never mixed or lost
        silently: the file is processed again, or, if it is gone, its row says why it has none."""
        want = {"faces": faces_schema(classes).names, "frames": FRAMES_SCHEMA.names}
        bad, seen = 0, {}  # a compacted part's footer is read once, not once per file
        for r in self.ledger.files().values():
            why = r.part and self._part_problem(r, want, seen)
            if why:
                self.send_back(r, why)
                bad += 1
        return bad

    def _part_problem(self, r: FileRow, want: dict, seen: dict) -> str | None:
        kinds = (["faces"] if r.faces else []) + \
            (["frames"] if r.media_type == "video" and r.frames_sampled else [])
        for kind in kinds:  # a file without rows of a kind has no part of it
            if (kind, r.part) not in seen:
                seen[kind, r.part] = self._file_problem(kind, r.part, want[kind])
            if seen[kind, r.part]:
                return seen[kind, r.part]
        return None

    def _file_problem(self, kind: str, part: str, names: list[str]) -> str | None:
        f = self.part_path(kind, part)
        if not f.is_file():
            return f"its staged {kind} rows are missing ({f.name})"
        try:
            got = pq.read_schema(f).names
        except (OSError, pa.ArrowException) as e:
            return f"its staged {kind} rows are unreadable ({e})"
        if got != names:
            return f"its staged {kind} rows were made with another model's classes"
        return None

    def send_back(self, r: FileRow, why: str) -> None:
        """Drop a file's staged rows; a present file is processed again by the next plan."""
        if r.part:
            self.drop_part(r.part)
        then = "it is processed again" if r.present else "the file is gone, its rows dropped"
        log.warning("%s: %s; %s", r.source, why, then)
        # settings_id None: the plan sees changed settings and processes the file again
        self.ledger.commit_file(replace(r, part=None, settings_id=None, status=STATUS_ERROR,
                                        error=f"{why}; {then}", faces=0, frames_sampled=0))

    def write_part(self, run_id: str, faces: pa.Table, frames: pa.Table | None) -> str | None:
        """Stage a file's rows (frames: videos only); returns the part's name for its ledger row,
        None when there are no rows to stage (a photo without faces: no 0-row part file)."""
        if not faces.num_rows and (frames is None or not frames.num_rows):
            return None
        self._n += 1
        part = f"part-{run_id}-{self._n:06d}"
        self.ledger.claim("parts", part)  # before the file exists: a kill leaves a known orphan
        if faces.num_rows:
            write_table(faces, self.part_path("faces", part))
        if frames is not None and frames.num_rows:
            write_table(frames, self.part_path("frames", part))
        return part

    def forget(self, prev: FileRow, prune: bool) -> None:
        """A file gone from its root: keep its rows (marked absent), or with `prune` drop them."""
        if prune:
            self.ledger.delete(prev.key)
            if prev.part:
                self.drop_part(prev.part)
        else:
            self.ledger.mark_absent(prev.key)
        self.ledger.mark_dirty()

    def drop_part(self, part: str) -> None:
        """Delete a file's part; a compacted part is only marked, for `purge_stale`."""
        if is_shared(part):
            stale = set(json.loads(self.ledger.get_meta("stale_parts") or "[]")) | {part}
            self.ledger.set_meta("stale_parts", json.dumps(sorted(stale)))
            return
        self._remove_part(part)

    def _remove_part(self, part: str) -> None:
        """Delete a part of ours (both kinds, and a compaction's staged copy), then its claim."""
        for kind in STAGED:
            self.part_path(kind, part).unlink(missing_ok=True)
            self._staged_path(kind, part).unlink(missing_ok=True)
        self.ledger.release("parts", part)

    def _members(self) -> dict[str, set[tuple[str, str]]]:
        members: dict[str, set[tuple[str, str]]] = {}
        for key, r in self.ledger.files().items():
            if r.part:
                members.setdefault(r.part, set()).add(key)
        return members

    def purge_stale(self) -> None:
        """Filter out of compacted parts the rows of files that left them (changed, pruned)."""
        stale = json.loads(self.ledger.get_meta("stale_parts") or "[]")
        if not stale:
            return
        members, self._cache = self._members(), None
        for part in stale:
            keys = members.get(part, set())
            for kind in STAGED:
                f = self.part_path(kind, part)
                try:
                    table = pq.read_table(f) if keys and f.is_file() else None
                except (OSError, ValueError, pa.ArrowException):
                    continue  # check_parts or _stream sends its files back
                kept = None if table is None else table.filter(_key_mask(table, keys))
                if kept is None or not kept.num_rows:
                    f.unlink(missing_ok=True)
                elif kept.num_rows < table.num_rows:
                    write_table(kept, f)
            if not keys:
                self._remove_part(part)
        self.ledger.set_meta("stale_parts", None)

    def compact(self, tag: str, force: bool = False) -> int:
        """Merge small parts (fewer than ROW_GROUP_ROWS // 2 rows) into compacted parts of about
        ROW_GROUP_ROWS rows, if there are COMPACT_AT of them (any two with `force`); returns
        how many parts were merged. New parts are written, then the ledger points at them in one
        transaction with a journal, then they replace the old ones: a kill before the commit
        leaves hidden orphans that `recover` deletes, one after it a journal that `recover`
        finishes. Readers of the directory form never see a file's rows twice."""
        self.purge_stale()
        size: dict[str, int] = {}
        for r in self._rows():
            if r.part:
                n = max(r.faces or 0, r.frames_sampled or 0)
                size[r.part] = size.get(r.part, 0) + n
        small = [p for p, n in size.items() if n < ROW_GROUP_ROWS // 2]
        if len(small) < (2 if force else self.COMPACT_AT):
            return 0
        members, groups, group, rows = self._members(), [], [], 0
        for part in small:
            group.append(part)
            rows += size[part]
            if rows >= ROW_GROUP_ROWS:
                groups.append(group)
                group, rows = [], 0
        if len(group) > 1 or not groups:
            groups.append(group)
        elif group:  # one small part left over: into the last group, not a part of its own
            groups[-1].extend(group)
        merged, n = 0, 0
        for group in groups:
            n += 1  # a name no part has (the command may run twice in a second)
            while any(self.part_path(k, f"part-{tag}-c{n:04d}").exists() for k in STAGED):
                n += 1
            new = f"part-{tag}-c{n:04d}"
            keys = set().union(*(members[p] for p in group))
            self.ledger.claim("parts", new)
            for kind in STAGED:  # written hidden: until the ledger commits, the old parts hold
                tables = [pq.read_table(f).replace_schema_metadata(None) for p in group
                          if (f := self.part_path(kind, p)).is_file()]
                if tables:
                    table = pa.concat_tables(tables)
                    write_table(table.filter(_key_mask(table, keys)), self._staged_path(kind, new))
            self.ledger.set_parts(dict.fromkeys(keys, new),
                                  journal=json.dumps({"new": new, "old": group}))
            self._finish_compaction()
            merged += len(group)
        self._cache = None
        if merged:
            log.info("compacted %d staged parts into %d", merged, len(groups))
        return merged

    def _finish_compaction(self) -> None:
        """Move a committed compacted part in and its old parts out (the `compacting` journal:
        the ledger already points at the new part). Old rows go before the new ones arrive, so
        a reader never sees a file's rows twice; a kill between is finished by `recover`."""
        journal = self.ledger.get_meta("compacting")
        if not journal:
            return
        j = json.loads(journal)
        for kind in STAGED:
            staged = self._staged_path(kind, j["new"])
            if staged.is_file():
                for p in j["old"]:
                    self.part_path(kind, p).unlink(missing_ok=True)
                os.replace(staged, self.part_path(kind, j["new"]))
        for p in j["old"]:
            self._remove_part(p)
        self.ledger.set_meta("compacting", None)

    def _stream(self, kind: str, schema: pa.Schema, rows: list[FileRow]):
        members: dict[str, set[tuple[str, str]]] = {}  # parts in the rows' order, read once each
        for r in rows:
            if r.part and r.part not in self._bad:
                members.setdefault(r.part, set()).add(r.key)
        for part, keys in members.items():
            f = self.part_path(kind, part)
            if not f.is_file():
                continue
            try:  # check_parts read the footer; a part can still be corrupt inside
                table = pq.read_table(f).cast(schema)
                if is_shared(part):
                    table = table.filter(_key_mask(table, keys))
            except (OSError, ValueError, pa.ArrowException) as e:
                self._bad.add(part)  # later streams of the same rows skip it
                for r in rows:
                    if r.part == part:
                        self.send_back(self.ledger.get(r.key) or r,
                                       f"its staged {kind} rows are unreadable ({e})")
                continue
            yield from table.to_batches()

    def rebuild(self, classes: tuple[str, ...], tag: str) -> tuple[list[FileRow], pa.Table]:
        """Rewrite faces/frames (single-file form), files and runs atomically; returns the
        ledger rows and the files table, from which the derived tables are made."""
        self.purge_stale()
        self.check_parts(classes)
        self.compact(tag)  # past COMPACT_AT small parts
        rows = self._rows()
        p, fmt = self.paths, self.paths.fmt
        if not p.is_dataset:
            write_batches(faces_schema(classes), self._stream("faces", faces_schema(classes), rows),
                          p.table("faces"), fmt)
            write_batches(FRAMES_SCHEMA, self._stream("frames", FRAMES_SCHEMA, rows),
                          p.table("frames"), fmt)
            rows = self._rows()  # a part found corrupt while streaming changed its file's row
        files = files_table(rows)
        self.write_small("files", files, tag)
        runs = runs_table(self.ledger.runs())
        self.write_small("runs", runs, tag)
        return rows, files

    def complete(self) -> bool:
        """Whether every output table exists (a user may have deleted one). The directory form's
        faces/ and frames/ are the staged parts themselves (check_parts checks them); an output
        without videos (or faces) has no such folder, and that is complete."""
        staged = STAGED if self.paths.is_dataset else ()
        return all(self.paths.table(name).exists() for name in TABLES if name not in staged)

    def write_runs(self, run_id: str) -> None:
        """Rewrite only the runs table (a run that changed nothing else)."""
        runs = runs_table(self.ledger.runs())
        self.write_small("runs", runs, run_id)

    def _rows(self) -> list[FileRow]:
        return sorted(self.ledger.files().values(), key=lambda r: r.key)

    def read_part(self, kind: str, row: FileRow) -> pd.DataFrame | None:
        f = self.part_path(kind, row.part) if row.part and row.part not in self._bad else None
        try:
            if not (f and f.is_file()):
                return None
            if not is_shared(row.part):
                return pq.read_table(f).to_pandas()
            if self._cache is None or self._cache[0] != f:  # rows come in part order
                self._cache = (f, pq.read_table(f))
            table = self._cache[1]
            return table.filter(_key_mask(table, {row.key})).to_pandas()
        except (OSError, ValueError, pa.ArrowException):
            return None  # a corrupt part: _stream reports it and sends its file back

    def concat(self, kind: str, rows: list[FileRow], schema: pa.Schema) -> pd.DataFrame:
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
        d, new = p.table(name), f"part-{tag}.parquet"
        old = self._small_names(name) - {new}
        self.ledger.claim(name, new)  # before the file exists: a kill leaves a known extra
        write_table(table, d / new)
        for f in old:  # only what batchemo wrote: a user's file beside them stays
            (d / f).unlink(missing_ok=True)
            self.ledger.release(name, f)

    def _small_names(self, name: str) -> set[str]:
        """The files batchemo wrote in a small table's folder (directory form): its claims, or
        for an output of a version that did not claim them, `part-<run id>.parquet` of its
        recorded runs and recoveries."""
        names = self.ledger.claimed(name)
        if names:
            return names
        d = self.paths.table(name)
        runs = self.ledger.run_ids()
        return {f.name for f in d.glob("part-*.parquet") if d.is_dir()
                and (f.stem[5:] in runs or re.fullmatch(r"part-recovered-\d+", f.stem))}

