"""The read-side commands as library calls: timeline, summary and report over a run's output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from batchemo.config import ReportConfig, SummaryConfig, TimelineConfig
from batchemo.errors import ConfigError, OutputError
from batchemo.options import validate
from batchemo.output.read import load, output_paths, readable, write_frame


def make_timeline(cfg: TimelineConfig) -> Path:
    """Write the per-video, per-track binned timeline (and optionally segments); returns its path."""
    from batchemo.analysis.segments import segments
    from batchemo.analysis.timeline import timeline
    from batchemo.analysis.timeline_stream import timeline_from_parquet

    validate(cfg)
    paths = output_paths(cfg.results)
    out = Path(cfg.out) if cfg.out else paths.out.with_name(
        f"{paths.out.stem}.timeline.{paths.fmt}")
    frames = paths.table("frames")
    if paths.fmt == "parquet" and not cfg.segments_out:  # streams: bounded memory
        with readable(paths.table("faces")):
            return timeline_from_parquet(paths.table("faces"),
                                         frames if frames.exists() else None,
                                         out_path=out, bin_sec=cfg.bin,
                                         smoothing=cfg.smoothing, window_sec=cfg.window)
    tl = timeline(load(cfg.results, "faces"), load(cfg.results, "frames"), bin_sec=cfg.bin,
                  smoothing=cfg.smoothing, window_sec=cfg.window)
    write_frame(tl, out)
    if cfg.segments_out:
        write_frame(segments(tl, min_duration_sec=cfg.min_segment,
                             switch_cost=cfg.segment_switch_cost), Path(cfg.segments_out))
    return out


def make_summary(cfg: SummaryConfig) -> tuple[pd.DataFrame, str]:
    """Summary statistics per run, folder, file and track; returns (table, printable text)."""
    from batchemo.analysis.summarize import LEVELS, format_summary, summarize

    validate(cfg)
    bad = [lv for lv in cfg.level if lv not in LEVELS]
    if bad:
        raise ConfigError(f"--level {bad[0]}: choose from {', '.join(LEVELS)}")
    df = summarize(load(cfg.results, "faces"), load(cfg.results, "files"),
                   load(cfg.results, "frames"), min_track_sec=cfg.min_track)
    if cfg.out:
        write_frame(df, Path(cfg.out))
    return df, format_summary(df, tuple(cfg.level) or ("run", "folder", "file"))


def make_report(cfg: ReportConfig) -> Path:
    """One self-contained HTML page: run summary, per-video timelines, failed files."""
    from batchemo.analysis.report import write_report

    validate(cfg)
    try:
        return write_report(load(cfg.results, "faces"), load(cfg.results, "frames"),
                            load(cfg.results, "files"), cfg.out, title=cfg.title,
                            runs=load(cfg.results, "runs"), min_track_sec=cfg.min_track)
    except OSError as e:
        raise OutputError(f"cannot write {cfg.out}: {e.strerror or e}") from None
