"""Output schemas (one pyarrow constant each), a file's rows as tables, output paths, and
Parquet/CSV writing (through atomic.atomic_write)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchemo.errors import OutputError
from batchemo.output.atomic import atomic_write
from batchemo.records import Face, FileRow, MediaItem, SampledFrame

SCHEMA_VERSION = "1"
# Rows per Parquet row group in a rebuilt table: a footer entry per file (the old layout) made
# the footer grow with the archive and a group-by over 10k files take seconds.
ROW_GROUP_ROWS = 1 << 17
UTC_TIME = pa.timestamp("us", tz="UTC")
TABLES = ("faces", "frames", "files", "runs", "summary", "timeline", "segments")

FACES_BEFORE_PROBS = pa.schema([
    ("root", pa.string()), ("source", pa.string()), ("media_type", pa.string()),
    ("frame_index", pa.int64()), ("t_sec", pa.float64()), ("face_index", pa.int32()),
    ("track_id", pa.int64()), ("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()),
    ("h", pa.int32()), ("det_score", pa.float32()),
])
FACES_AFTER_PROBS = pa.schema([
    ("emotion", pa.string()), ("confidence", pa.float32()), ("model_id", pa.string()),
    ("run_id", pa.string()),
])
FRAMES_SCHEMA = pa.schema([
    ("root", pa.string()), ("source", pa.string()), ("frame_index", pa.int64()),
    ("t_sec", pa.float64()), ("n_faces", pa.int32()),
])
FILES_SCHEMA = pa.schema([
    ("root", pa.string()), ("source", pa.string()), ("media_type", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("size", pa.int64()),
    ("mtime", UTC_TIME), ("fingerprint", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("fps", pa.float64()), ("duration", pa.float64()),
    ("frames_sampled", pa.int64()), ("faces", pa.int64()), ("decode_failures", pa.int64()),
    ("seconds", pa.float64()), ("present", pa.bool_()), ("model_id", pa.string()),
    ("run_id", pa.string()),
])
RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("started", UTC_TIME), ("finished", UTC_TIME),
    ("files_new", pa.int64()), ("files_changed", pa.int64()), ("files_unchanged", pa.int64()),
    ("files_failed", pa.int64()), ("files_skipped", pa.int64()), ("files_deleted", pa.int64()),
    ("frames", pa.int64()), ("faces", pa.int64()), ("seconds", pa.float64()),
    ("exit_code", pa.int32()), ("model_id", pa.string()), ("settings", pa.string()),
])

SEGMENTS_SCHEMA = pa.schema([
    ("root", pa.string()), ("source", pa.string()), ("track_id", pa.int64()),
    ("emotion", pa.string()), ("start_sec", pa.float64()), ("end_sec", pa.float64()),
    ("duration_sec", pa.float64()), ("mean_confidence", pa.float64()), ("n_faces", pa.int64()),
])


def summary_schema(classes: Iterable[str]) -> pa.Schema:
    """The summary table: one row per run, top-level folder, file and track (`level`)."""
    classes = list(classes)
    return pa.schema(
        [("level", pa.string()), ("root", pa.string()), ("folder", pa.string()),
         ("source", pa.string()), ("track_id", pa.int64()), ("media_type", pa.string()),
         ("n_files", pa.int64()), ("faces", pa.int64()), ("seconds_on_screen", pa.float64())]
        + [(f"p_{c}", pa.float64()) for c in classes]
        + [(f"share_{c}", pa.float64()) for c in classes]
        + [("uncertain_share", pa.float64()), ("dominant", pa.string()),
           ("dominant_share_lo", pa.float64()), ("dominant_share_hi", pa.float64()),
           ("mean_confidence", pa.float64()), ("valence", pa.float64()), ("suspect", pa.bool_())])


def faces_schema(classes: Iterable[str]) -> pa.Schema:
    """The faces table for a model with these classes: one float32 `p_<class>` per class."""
    probs = [pa.field(f"p_{c}", pa.float32()) for c in classes]
    return pa.schema(list(FACES_BEFORE_PROBS) + probs + list(FACES_AFTER_PROBS))


def faces_table(item: MediaItem, faces: list[Face], track_ids: np.ndarray | None,
                classes: tuple[str, ...], model_id: str, run_id: str) -> pa.Table:
    """A file's classified faces as faces-table rows; `track_ids` < 0 (or None) are null."""
    n = len(faces)
    t_sec = np.array([np.nan if f.t_sec is None else f.t_sec for f in faces], np.float64)
    boxes = np.array([[f.box.x, f.box.y, f.box.w, f.box.h] for f in faces], np.int32).reshape(n, 4)
    probs = (np.stack([f.probs for f in faces]) if n else np.zeros((0, 0), np.float32))\
        .reshape(n, len(classes))
    cols = {
        "root": [item.root] * n, "source": [item.source] * n,
        "media_type": [item.media_type] * n,
        "frame_index": np.array([f.frame_index for f in faces], np.int64),
        "t_sec": pa.array(t_sec, pa.float64(), mask=np.isnan(t_sec)),
        "face_index": np.array([f.face_index for f in faces], np.int32),
        "track_id": pa.array(track_ids if track_ids is not None else [None] * n, pa.int64(),
                             mask=None if track_ids is None else track_ids < 0),
        "x": boxes[:, 0], "y": boxes[:, 1], "w": boxes[:, 2], "h": boxes[:, 3],
        "det_score": np.array([f.box.score for f in faces], np.float32),
    }
    for i, c in enumerate(classes):
        cols[f"p_{c}"] = probs[:, i]
    top = probs.argmax(1) if n else np.zeros(0, int)
    cols["emotion"] = [classes[i] for i in top]
    cols["confidence"] = probs.max(1) if n else np.zeros(0, np.float32)
    cols["model_id"] = [model_id] * n
    cols["run_id"] = [run_id] * n
    return pa.table(cols, schema=faces_schema(classes))


def frames_table(item: MediaItem, frames: list[SampledFrame]) -> pa.Table:
    """A video's sampled frames as frames-table rows."""
    n = len(frames)
    return pa.table({
        "root": [item.root] * n, "source": [item.source] * n,
        "frame_index": np.array([f.frame_index for f in frames], np.int64),
        "t_sec": np.array([np.nan if f.t_sec is None else f.t_sec for f in frames], float),
        "n_faces": np.array([f.n_faces for f in frames], np.int32)}, schema=FRAMES_SCHEMA)


def files_table(rows: list[FileRow]) -> pa.Table:
    """The files table from ledger rows (whose mtime is float Unix seconds)."""
    cols = {c: [getattr(r, c) for r in rows] for c in FILES_SCHEMA.names}
    mtime = unix_to_utc(pa.array(cols.pop("mtime"), pa.float64()))
    t = pa.table(cols, schema=FILES_SCHEMA.remove(FILES_SCHEMA.get_field_index("mtime")))
    return t.add_column(FILES_SCHEMA.get_field_index("mtime"), FILES_SCHEMA.field("mtime"), mtime)


def runs_table(rows: list[dict]) -> pa.Table:
    """The runs table from ledger rows (whose times are ISO 8601 strings)."""
    def utc(v):
        return None if v is None else datetime.fromisoformat(v).astimezone(UTC)

    return pa.Table.from_pylist([{**r, "started": utc(r["started"]),
                                  "finished": utc(r["finished"])} for r in rows],
                                schema=RUNS_SCHEMA)


@dataclass(frozen=True)
class OutputPaths:
    """Where each table and the state folder live, from the user's --out."""

    out: Path
    fmt: str  # "parquet" | "csv"
    is_dataset: bool

    @classmethod
    def from_out(cls, out: Path | str) -> OutputPaths:
        s = str(out)
        p = Path(s)
        suffix = p.suffix.lower()
        if s.endswith(("/", os.sep)) or not suffix or p.is_dir():
            return cls(p, "parquet", True)
        if suffix not in (".parquet", ".csv"):
            raise OutputError(f"--out {s}: use a .parquet or .csv file, or a directory")
        return cls(p, suffix[1:], False)

    def table(self, name: str) -> Path:
        """Single-file form: results.parquet, results.frames.parquet, …; dataset: results/<name>/."""
        if self.is_dataset:
            return self.out / name
        if name == "faces":
            return self.out
        return self.out.with_name(f"{self.out.stem}.{name}.{self.fmt}")

    @property
    def state(self) -> Path:
        if self.is_dataset:
            return self.out / "_batchemo"  # '_' prefix: Parquet readers ignore it
        if self.fmt == "csv":  # results.csv and results.parquet in one folder: two states
            return self.out.with_name(f"{self.out.stem}.csv.batchemo")
        return self.out.with_name(f"{self.out.stem}.batchemo")

    def adopt_legacy_state(self) -> bool:
        """Move a CSV output's state from `<stem>.batchemo/` (where versions before issue 14
        kept it) to its own folder, unless a Parquet output beside it owns that folder."""
        legacy = self.out.with_name(f"{self.out.stem}.batchemo")
        if self.is_dataset or self.fmt != "csv" or self.state.exists() or not legacy.is_dir():
            return False
        if self.out.with_suffix(".parquet").exists() or not self.out.exists():
            return False
        os.replace(legacy, self.state)
        return True


def foreign_file(paths: OutputPaths) -> Path | None:
    """A file in the way of an output that has no ledger yet (not one batchemo wrote): the first
    file in one of a directory output's table folders (faces/, frames/, …: Parquet readers of
    the dataset would read it as rows, and batchemo would replace it), or an existing table of
    the single-file form. The run is refused instead. Other files in an --out folder (an input
    root given as --out too) are left alone: batchemo never scans, reads or deletes them."""
    if (paths.state / "ledger.sqlite").exists():
        return None
    if not paths.is_dataset:
        return next((t for name in TABLES if (t := paths.table(name)).exists()), None)
    for folder in [paths.table(name) for name in TABLES] + [paths.state]:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            if files:
                return Path(root) / sorted(files)[0]
    return None


def with_metadata(schema: pa.Schema) -> pa.Schema:
    """`schema` with batchemo's file metadata: the schema version, and no `pandas` key (a table
    made from a DataFrame carries one; it would describe a pandas index in every reader)."""
    meta = {k: v for k, v in (schema.metadata or {}).items() if k != b"pandas"}
    meta[b"batchemo.schema_version"] = SCHEMA_VERSION.encode()
    return schema.with_metadata(meta)


def unix_to_utc(seconds: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Float Unix seconds (the ledger's mtime) as a UTC timestamp column (microseconds)."""
    micros = pc.round(pc.multiply(pc.cast(seconds, pa.float64()), 1e6))
    return pc.cast(pc.cast(micros, pa.int64()), UTC_TIME)


def write_table(table: pa.Table, path: Path, fmt: str = "parquet") -> None:
    """Write one table atomically (atomic.atomic_write)."""
    write_batches(table.schema, table.to_batches(), path, fmt)


def write_batches(schema: pa.Schema, batches: Iterable[pa.RecordBatch], path: Path,
                  fmt: str = "parquet") -> int:
    """Stream record batches into `path` atomically; memory holds one batch at a time."""
    path = Path(path)
    rows = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            if fmt == "parquet":
                with pq.ParquetWriter(tmp, with_metadata(schema), compression="zstd") as w:
                    buf: list[pa.RecordBatch] = []
                    for b in batches:  # one row group per ROW_GROUP_ROWS, not per batch
                        buf.append(b)
                        rows += b.num_rows
                        if sum(x.num_rows for x in buf) >= ROW_GROUP_ROWS:
                            _write_groups(w, schema, buf)
                            buf = []
                    if buf or rows == 0:
                        _write_groups(w, schema, buf)
            else:
                with pacsv.CSVWriter(tmp, schema) as w:
                    for b in batches:
                        w.write_batch(csv_safe(b))
                        rows += b.num_rows
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return rows


def _write_groups(w: pq.ParquetWriter, schema: pa.Schema, batches: list[pa.RecordBatch]) -> None:
    table = pa.Table.from_batches(batches, schema=schema.remove_metadata()) if batches else \
        schema.remove_metadata().empty_table()
    w.write_table(table, row_group_size=max(ROW_GROUP_ROWS, table.num_rows))


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) in a file
# name): in CSV such text gets a leading apostrophe, as OWASP advises. Parquet keeps it verbatim.
# Text that already starts with an apostrophe gets one too, so reading can undo the guard exactly.
_FORMULA_START = "^[=+\\-@\t\r']"
_GUARDED = "^'[=+\\-@\t\r']"


def csv_safe(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with every string that a spreadsheet would run as a formula prefixed by `'`."""
    cols = []
    for col in batch.columns:
        if pa.types.is_string(col.type) and len(col):
            risky = pc.fill_null(pc.match_substring_regex(col, _FORMULA_START), False)
            if pc.any(risky).as_py():
                col = pc.if_else(risky, pc.binary_join_element_wise("'", col, ""), col)
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema)


def csv_unguarded(table: pa.Table) -> pa.Table:
    """`table` (read from a CSV batchemo wrote) with csv_safe's apostrophes taken off again."""
    for i, col in enumerate(table.columns):
        if pa.types.is_string(col.type) and len(col):
            guarded = pc.fill_null(pc.match_substring_regex(col, _GUARDED), False)
            if pc.any(guarded).as_py():
                col = pc.if_else(guarded, pc.utf8_slice_codeunits(col, 1), col)
                table = table.set_column(i, table.field(i), col)
    return table


def declared_schema(name: str, columns: Iterable[str]) -> pa.Schema | None:
    """The schema batchemo writes table `name` with (None for a table it has no constant for),
    its classes taken from the `p_<class>` columns present."""
    classes = [c[2:] for c in columns if c.startswith("p_")]
    return {"faces": faces_schema(classes), "frames": FRAMES_SCHEMA, "files": FILES_SCHEMA,
            "runs": RUNS_SCHEMA, "segments": SEGMENTS_SCHEMA,
            "summary": summary_schema(classes)}.get(name)


def read_table(path: Path, name: str | None = None) -> pa.Table:
    """Read a table written by batchemo (Parquet file, CSV file, or a dataset folder). A CSV is
    read with the declared schema of table `name` (every column typed as written: a folder
    named `01` stays the text "01", `inF` stays text) and its formula guard undone."""
    path = Path(path)
    if path.is_dir():
        import pyarrow.dataset as ds

        return ds.dataset(path, format="parquet").to_table()
    if path.suffix.lower() != ".csv":
        return pq.read_table(path)
    with open(path, "rb") as fh:  # the header says which classes (p_ columns) it holds
        header = pacsv.open_csv(fh).schema.names
    declared = declared_schema(name, header) if name else None
    types = {c: declared.field(c).type if c in declared.names else pa.string()
             for c in header} if declared else {}  # nothing guessed from text
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=types, null_values=[""], strings_can_be_null=True,
        quoted_strings_can_be_null=False))  # the writer: null → empty, "" → quoted
    return csv_unguarded(table)
