"""What is done: one SQLite row per input file (the files table), run history, and the output lock.

SQLite gives atomic per-file commits for free: a file's staged part is renamed into place first,
then its ledger row is committed; a crash between the two leaves an orphan part that the next run
deletes. The lock is an fcntl lock, which the kernel drops when its holder dies, so a stale lock
from a killed run never blocks the next one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

from batchemo.errors import LockedError, OutputError
from batchemo.output.tables import FILES_SCHEMA, RUNS_SCHEMA
from batchemo.records import FileRow

FILE_COLUMNS = [f.name for f in dataclasses.fields(FileRow)]
RUN_COLUMNS = [f.name for f in RUNS_SCHEMA]
_SQL_TYPES = {"string": "TEXT", "int64": "INTEGER", "int32": "INTEGER", "double": "REAL",
              "bool": "INTEGER",
              # the ledger keeps times as it always has: mtime float seconds, run times ISO text
              # (REAL affinity leaves non-numeric text as text); the tables give them UTC types
              "timestamp[us, tz=UTC]": "REAL"}


def fingerprint(path: Path, size: int, chunk: int = 1 << 16) -> str:
    """Cheap content fingerprint: BLAKE2b of size, the first and the last 64 KiB."""
    h = hashlib.blake2b(str(size).encode(), digest_size=12)
    with open(path, "rb") as fh:
        h.update(fh.read(chunk))
        if size > 2 * chunk:
            fh.seek(-chunk, os.SEEK_END)
            h.update(fh.read(chunk))
        elif size > chunk:
            h.update(fh.read())
    return h.hexdigest()


class OutputLock:
    """Exclusive lock on an output's state folder; `wait` seconds before giving up (exit 3)."""

    def __init__(self, state: Path, wait: float = 0.0):
        self.path = state / "lock"
        self.wait = wait
        self.fh = None

    def __enter__(self) -> OutputLock:
        try:
            self.fh = open(self.path, "a+")
        except OSError as e:  # a read-only filesystem, a full disk, permissions
            raise OutputError(f"cannot open the lock {self.path}: {e.strerror or e}") from None
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.fh.seek(0)
                    holder = self.fh.read().strip() or "unknown"
                    self.fh.close()
                    raise LockedError(f"another batchemo run (pid {holder}) is writing this "
                                      f"output ({self.path.parent}); use --wait SECONDS to "
                                      "wait for it") from None
                time.sleep(0.2)
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _sql(method):
    """SQLite errors (disk full, read-only filesystem, I/O) are job-level: OutputError, exit 2."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise OutputError(f"cannot use the ledger {self.path}: {e}") from None

    return wrapper


class Ledger:
    """The files and runs of one output, in `<state>/ledger.sqlite`."""

    def __init__(self, state: Path):
        self.path = state / "ledger.sqlite"
        try:
            state.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as e:
            raise OutputError(f"cannot create state folder {state}: {e}") from None
        self._create()

    @_sql
    def _create(self) -> None:
        cols = ", ".join(f"{f.name} {_SQL_TYPES[str(f.type)]}" for f in FILES_SCHEMA)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS files ({cols}, settings_id TEXT, part TEXT, "
                        "PRIMARY KEY (root, source))")
        rcols = ", ".join(f"{f.name} {_SQL_TYPES[str(f.type)]}" for f in RUNS_SCHEMA)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS runs ({rcols})")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        # Every file batchemo may have put in an output folder (staged parts, the directory
        # form's small tables), claimed before it is written: the only files it ever deletes.
        new = not self.db.execute("SELECT name FROM sqlite_master WHERE name = 'owned'")\
            .fetchone()
        self.db.execute("CREATE TABLE IF NOT EXISTS owned (folder TEXT, name TEXT, "
                        "PRIMARY KEY (folder, name))")
        if new:  # an output of an older version: its live parts are provably its own
            self.db.execute("INSERT OR IGNORE INTO owned SELECT 'parts', part FROM files "
                            "WHERE part IS NOT NULL")

    @_sql
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @_sql
    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # The outputs' markers: "dirty" — files were committed or forgotten since the outputs were
    # last rebuilt; "derived" — what the derived tables were made with (bin, plots).
    @property
    def dirty(self) -> bool:
        return bool(self.get_meta("dirty"))

    def mark_dirty(self) -> None:
        self.set_meta("dirty", "1")

    def mark_rebuilt(self) -> None:
        self.set_meta("dirty", None)

    @property
    def derived(self) -> str | None:
        return self.get_meta("derived")

    def set_derived(self, key: str) -> None:
        self.set_meta("derived", key)

    @staticmethod
    def ever_used(state: Path) -> bool:
        """Whether the ledger in `state` (if any) ever recorded a file or a run; read without
        creating one."""
        db = state / "ledger.sqlite"
        if not db.exists():
            return False
        try:
            con = sqlite3.connect(db)
            try:
                return bool(con.execute("SELECT (SELECT count(*) FROM files) + "
                                        "(SELECT count(*) FROM runs)").fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error:
            return False  # created but never got its tables

    @_sql
    def files(self) -> dict[tuple[str, str], FileRow]:
        """Every file's row, by (root, source)."""
        cur = self.db.execute(f"SELECT {', '.join(FILE_COLUMNS)} FROM files")
        return {(r[0], r[1]): _file_row(r) for r in cur}

    @_sql
    def get(self, key: tuple[str, str]) -> FileRow | None:
        """One file's row (None if unknown)."""
        cur = self.db.execute(f"SELECT {', '.join(FILE_COLUMNS)} FROM files "
                              "WHERE root = ? AND source = ?", key)
        r = cur.fetchone()
        return None if r is None else _file_row(r)

    @_sql
    def commit_file(self, row: FileRow) -> None:
        """Insert or replace one file's row (its part is already in place)."""
        values = [getattr(row, c) for c in FILE_COLUMNS]  # astuple would deep-copy
        marks = ", ".join("?" * len(FILE_COLUMNS))
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(f"INSERT OR REPLACE INTO files ({', '.join(FILE_COLUMNS)}) "
                            f"VALUES ({marks})", values)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('dirty', '1')")  # mark_dirty

    @_sql
    def set_parts(self, parts: dict[tuple[str, str], str], journal: str | None = None) -> None:
        """Point many files' rows at new parts in one transaction (compaction), with the
        `compacting` journal that says which files to move and remove to finish it."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("UPDATE files SET part = ? WHERE root = ? AND source = ?",
                                [(part, *key) for key, part in parts.items()])
            if journal is not None:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('compacting', ?)", (journal,))

    @_sql
    def claim(self, folder: str, name: str) -> None:
        """Record that batchemo is about to write `name` in `folder` (before it does)."""
        self.db.execute("INSERT OR IGNORE INTO owned VALUES (?, ?)", (folder, name))

    @_sql
    def release(self, folder: str, name: str) -> None:
        """Forget a claimed name (its file is deleted)."""
        self.db.execute("DELETE FROM owned WHERE folder = ? AND name = ?", (folder, name))

    @_sql
    def claimed(self, folder: str) -> set[str]:
        """The names batchemo claimed in `folder`: the files it may delete there."""
        return {r[0] for r in self.db.execute("SELECT name FROM owned WHERE folder = ?",
                                              (folder,))}

    @_sql
    def mark_absent(self, key: tuple[str, str]) -> None:
        self.db.execute("UPDATE files SET present = 0 WHERE root = ? AND source = ?", key)

    @_sql
    def delete(self, key: tuple[str, str]) -> None:
        self.db.execute("DELETE FROM files WHERE root = ? AND source = ?", key)

    @_sql
    def add_run(self, run: dict) -> None:
        run = dict(run, settings=json.dumps(run.get("settings"), default=str, sort_keys=True))
        marks = ", ".join("?" * len(RUN_COLUMNS))
        self.db.execute(f"INSERT INTO runs VALUES ({marks})", [run.get(c) for c in RUN_COLUMNS])

    @_sql
    def runs(self) -> list[dict]:
        cur = self.db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY started")
        return [dict(zip(RUN_COLUMNS, r, strict=True)) for r in cur]

    @_sql
    def run_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT run_id FROM runs")}

    def close(self) -> None:
        self.db.close()


def _file_row(values: tuple) -> FileRow:
    row = FileRow(*values)
    if row.present is None or isinstance(row.present, bool):
        return row
    return dataclasses.replace(row, present=bool(row.present))  # SQLite stores booleans as 0/1
