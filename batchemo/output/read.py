"""Read a run's output: the faces table and its companions, found from the faces path alone."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import pyarrow as pa

from batchemo.errors import ConfigError
from batchemo.output.tables import OutputPaths, read_table, write_table


def output_paths(results: Path | None) -> OutputPaths:
    if results is None:
        raise ConfigError("give the faces table written by `batchemo run` (e.g. results.parquet)")
    paths = OutputPaths.from_out(results)
    if not paths.table("faces").exists():
        raise ConfigError(f"{paths.table('faces')}: not found")
    return paths


def load(results: Path, table: str) -> pd.DataFrame | None:
    """One table of a run's output as a DataFrame (None if that companion does not exist)."""
    path = output_paths(results).table(table)
    if not path.exists():
        return None
    with readable(path):
        df = read_table(path).to_pandas()
    if "track_id" in df:  # CSV carries no types: one nullable integer type in every table
        df["track_id"] = df["track_id"].astype("Int64")
    return df


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
