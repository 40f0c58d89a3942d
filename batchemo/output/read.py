"""Read a run's output: the faces table and its companions, found from the faces path alone,
each checked against the schema batchemo writes it with (a table from elsewhere is exit 2 with a
message, not a traceback in the command that reads it)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from batchemo.errors import ConfigError
from batchemo.output.tables import (
    TABLES,
    OutputPaths,
    declared_schema,
    faces_schema,
    read_table,
    write_table,
)


def output_paths(results: Path | None) -> OutputPaths:
    """The output that `results` names (its faces table), or a ConfigError saying what to pass."""
    if results is None:
        raise ConfigError("give the faces table written by `batchemo run` (e.g. results.parquet)")
    root = _output_holding(Path(results))
    if root is not None:  # issue 29: `summary out/faces/` read out/faces/faces
        raise ConfigError(f"{results} is one table of the output {root}: pass the output "
                          f"itself (e.g. `batchemo summary {root}`)")
    paths = OutputPaths.from_out(results)
    if not paths.table("faces").exists() and not _no_faces_yet(paths):
        raise ConfigError(f"{paths.table('faces')}: not found")
    return paths


def _no_faces_yet(paths: OutputPaths) -> bool:
    # A directory output writes no faces/ folder until a face is found (issue 28 item 9): its
    # runs table says a run completed, so its faces table is there, with no rows.
    return paths.is_dataset and paths.table("runs").is_dir() and paths.state.is_dir()


def _output_holding(path: Path) -> Path | None:
    """The output root of which `path` is a table (folder `out/frames/`, or a companion file
    `results.files.parquet`), if it is one."""
    if path.is_dir() and path.name in TABLES and (path.parent / "_batchemo").is_dir():
        return path.parent
    stem, _, table = path.stem.rpartition(".")
    if stem and table in TABLES and path.with_name(f"{stem}{path.suffix}").is_file():
        return path.with_name(f"{stem}{path.suffix}")
    return None


def load(results: Path, table: str) -> pd.DataFrame | None:
    """One table of a run's output as a DataFrame (None if that companion does not exist),
    checked against its declared schema (ConfigError naming the file and column)."""
    paths = output_paths(results)
    path = paths.table(table)
    if not path.exists():
        if table == "faces":  # _no_faces_yet: no rows, the classes the summary was made with
            return faces_schema(_summary_classes(paths)).empty_table().to_pandas()
        return None
    with readable(path):
        df = checked(read_table(path, table), table, path).to_pandas()
    if "track_id" in df:  # one nullable integer type in every table (nulls made it float)
        df["track_id"] = df["track_id"].astype("Int64")
    return df


def _summary_classes(paths: OutputPaths) -> list[str]:
    import pyarrow.dataset as ds

    summary = paths.table("summary")
    names = ds.dataset(summary, format="parquet").schema.names if summary.is_dir() else []
    return [c[2:] for c in names if c.startswith("p_")]


# The columns a table must have for the commands to mean anything; a declared column not listed
# may be absent (a hand-made or older table; readers look before they use one).
REQUIRED = {
    "faces": ("root", "source", "media_type", "frame_index", "t_sec", "x", "y", "w", "h",
              "emotion", "confidence"),
    "frames": ("root", "source", "frame_index", "t_sec"),
    "files": ("root", "source"),
    "runs": ("run_id",),
}


def checked(table: pa.Table, name: str, path: Path) -> pa.Table:
    """`table` with its declared columns cast to the types batchemo writes them with. A required
    column missing, a column of another kind (text where numbers belong) or a time that is not
    a finite number of seconds is a ConfigError naming the file and column."""
    declared = declared_schema(name, table.column_names)
    if declared is None:
        return table
    required = REQUIRED.get(name, declared.names)
    missing = [n for n in required if n not in table.column_names]
    if name == "faces" and not any(n.startswith("p_") for n in table.column_names):
        missing.append("p_<class> (one per class)")
    if missing:
        raise ConfigError(f"{path}: not a batchemo {name} table: no column "
                          f"{', '.join(missing)}")
    for field in declared:
        if field.name not in table.column_names:
            continue
        col = table[field.name]
        if not _same_kind(col.type, field.type):
            raise ConfigError(f"{path}: column {field.name} holds {col.type}, where batchemo "
                              f"writes {field.type}")
        try:
            col = col.cast(field.type)
        except pa.ArrowException as e:
            raise ConfigError(f"{path}: column {field.name}: {e}") from None
        table = table.set_column(table.schema.get_field_index(field.name), field.name, col)
    if "t_sec" in declared.names:
        check_times(table["t_sec"], path)
    return table


def check_parquet(path: Path, name: str) -> None:
    """`checked` for a Parquet table that is streamed rather than loaded: its schema, then its
    times a column at a time."""
    import pyarrow.dataset as ds

    with readable(path):
        data = ds.dataset(path, format="parquet")
        checked(data.schema.empty_table(), name, path)
        for batch in data.to_batches(columns=["t_sec"]):
            check_times(batch.column(0), path)


def check_times(t_sec: pa.ChunkedArray | pa.Array, path: Path) -> None:
    """Every t_sec is null (a photo) or a finite, non-negative number of seconds."""
    bad = pc.or_(pc.invert(pc.is_finite(t_sec)), pc.less(t_sec, 0))
    if pc.any(bad).as_py():
        first = pc.filter(t_sec, pc.fill_null(bad, False))[0].as_py()
        raise ConfigError(f"{path}: column t_sec holds {first}; times are finite, non-negative "
                          "seconds from the start of the video")


def _same_kind(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column of type `got` holds what batchemo writes as `want` (then it is cast)."""
    if pa.types.is_null(got):  # a column with no values at all
        return True
    if pa.types.is_dictionary(got):
        got = got.value_type
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got)
    if pa.types.is_integer(want) or pa.types.is_floating(want):  # a cast refuses 1.5 → int
        return pa.types.is_integer(got) or pa.types.is_floating(got)
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(got)
    return got == want


@contextlib.contextmanager
def readable(path: Path):
    """A corrupt or truncated table is a job that cannot be done (exit 2), not a traceback."""
    try:
        yield
    except (OSError, ValueError, pa.ArrowException) as e:
        raise ConfigError(f"{path}: cannot read this table ({type(e).__name__}: {e}); rerun "
                          "`batchemo run` on the same output to rebuild it") from None


def write_frame(df: pd.DataFrame, path: Path) -> None:
    fmt = "csv" if Path(path).suffix.lower() == ".csv" else "parquet"
    write_table(pa.Table.from_pandas(df, preserve_index=False), Path(path), fmt)
