"""Read a run's output (the faces table and its companions) and derive timeline, summary, report."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .config import ReportConfig, SummaryConfig, TimelineConfig, validate
from .errors import ConfigError, OutputError
from .tables import OutputPaths, read_table, write_table


def _paths(results: Path | None) -> OutputPaths:
    if results is None:
        raise ConfigError("give the faces table written by `batchemo run` (e.g. results.parquet)")
    paths = OutputPaths.from_out(results)
    if not paths.table("faces").exists():
        raise ConfigError(f"{paths.table('faces')}: not found")
    return paths


def load(results: Path, table: str) -> pd.DataFrame | None:
    """One table of a run's output as a DataFrame (None if that companion does not exist)."""
    path = _paths(results).table(table)
    if not path.exists():
        return None
    with _readable(path):
        df = read_table(path).to_pandas()
    if "track_id" in df:  # CSV carries no types: one nullable integer type in every table
        df["track_id"] = df["track_id"].astype("Int64")
    return df


@contextlib.contextmanager
def _readable(path: Path):
    """A corrupt or truncated table is a job that cannot be done (exit 2), not a traceback."""
    try:
        yield
    except (OSError, ValueError, pa.ArrowException) as e:
        raise ConfigError(f"{path}: cannot read this table ({type(e).__name__}: {e}); rerun "
                          "`batchemo run` on the same output to rebuild it") from None


def _write(df: pd.DataFrame, path: Path) -> None:
    fmt = "csv" if Path(path).suffix.lower() == ".csv" else "parquet"
    write_table(pa.Table.from_pandas(df, preserve_index=False), Path(path), fmt)


def make_timeline(cfg: TimelineConfig) -> Path:
    """Write the per-video, per-track binned timeline (and optionally segments); returns its path."""
    from .timeline import segments, timeline
    from .timeline_stream import timeline_from_parquet

    validate(cfg)
    paths = _paths(cfg.results)
    out = Path(cfg.out) if cfg.out else paths.out.with_name(
        f"{paths.out.stem}.timeline.{paths.fmt}")
    frames = paths.table("frames")
    if paths.fmt == "parquet" and not cfg.segments_out:  # streams: bounded memory
        with _readable(paths.table("faces")):
            return timeline_from_parquet(paths.table("faces"),
                                         frames if frames.exists() else None,
                                         out_path=out, bin_sec=cfg.bin,
                                         smoothing=cfg.smoothing, window_sec=cfg.window)
    tl = timeline(load(cfg.results, "faces"), load(cfg.results, "frames"), bin_sec=cfg.bin,
                  smoothing=cfg.smoothing, window_sec=cfg.window)
    _write(tl, out)
    if cfg.segments_out:
        _write(segments(tl, min_duration_sec=cfg.min_segment), Path(cfg.segments_out))
    return out


def make_summary(cfg: SummaryConfig) -> tuple[pd.DataFrame, str]:
    """Summary statistics per run, folder, file and track; returns (table, printable text)."""
    from .summarize import LEVELS, format_summary, summarize

    validate(cfg)
    bad = [lv for lv in cfg.level if lv not in LEVELS]
    if bad:
        raise ConfigError(f"--level {bad[0]}: choose from {', '.join(LEVELS)}")
    df = summarize(load(cfg.results, "faces"), load(cfg.results, "files"),
                   load(cfg.results, "frames"), min_track_sec=cfg.min_track)
    if cfg.out:
        _write(df, Path(cfg.out))
    return df, format_summary(df, tuple(cfg.level) or ("run", "folder", "file"))


def make_report(cfg: ReportConfig) -> Path:
    """One self-contained HTML page: run summary, per-video timelines, failed files."""
    from .report import write_report

    validate(cfg)
    try:
        return write_report(load(cfg.results, "faces"), load(cfg.results, "frames"),
                            load(cfg.results, "files"), cfg.out, title=cfg.title,
                            runs=load(cfg.results, "runs"), min_track_sec=cfg.min_track)
    except OSError as e:
        raise OutputError(f"cannot write {cfg.out}: {e.strerror or e}") from None
