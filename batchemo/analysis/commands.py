"""The read-side commands as library calls: timeline, summary and report over a run's output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from batchemo.config import ReportConfig, SummaryConfig, TimelineConfig
from batchemo.errors import ConfigError, OutputError
from batchemo.options import validate
from batchemo.output.read import check_parquet, load, output_paths, readable, write_frame
from batchemo.output.tables import TABLES, OutputPaths


def refuse_own_tables(paths: OutputPaths, out: Path | None, option: str = "-o",
                      allowed: tuple[str, ...] = ()) -> None:
    """A ConfigError if `out` is one of the output's tables (or inside one of its folders, or its
    state): `summary r.parquet -o r.parquet` replaced the faces table, and no run restores it.
    `allowed`: tables this command writes (timeline rewrites the timeline table by default)."""
    if out is None:
        return
    target = Path(out).resolve()
    for name in TABLES:
        table = paths.table(name).resolve()
        if target == table and name in allowed:
            continue
        if target == table or (paths.is_dataset and table in target.parents):
            raise ConfigError(f"{option} {out}: that is the {name} table of the output "
                              f"{paths.out}; write elsewhere")
    if paths.state.resolve() in (target, *target.parents):
        raise ConfigError(f"{option} {out}: that is inside the output's state folder "
                          f"{paths.state}; write elsewhere")


def make_timeline(cfg: TimelineConfig) -> Path:
    """Write the per-video, per-track binned timeline (and optionally segments); returns its path."""
    from batchemo.analysis.segments import segments
    from batchemo.analysis.timeline import timeline
    from batchemo.analysis.timeline_stream import timeline_from_parquet

    validate(cfg)
    paths = output_paths(cfg.results)
    out = Path(cfg.out) if cfg.out else paths.out.with_name(
        f"{paths.out.stem}.timeline.{paths.fmt}")
    refuse_own_tables(paths, out, allowed=("timeline",))
    refuse_own_tables(paths, cfg.segments_out, "--segments-out", allowed=("segments",))
    frames = paths.table("frames")
    faces = paths.table("faces")
    if paths.fmt == "parquet" and not cfg.segments_out and faces.exists():  # bounded memory
        check_parquet(faces, "faces")
        if frames.exists():
            check_parquet(frames, "frames")
        with readable(faces):
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
    refuse_own_tables(output_paths(cfg.results), cfg.out)
    df = summarize(load(cfg.results, "faces"), load(cfg.results, "files"),
                   load(cfg.results, "frames"), min_track_sec=cfg.min_track)
    if cfg.out:
        write_frame(df, Path(cfg.out))
    return df, format_summary(df, tuple(cfg.level) or ("run", "folder", "file"))


def make_report(cfg: ReportConfig) -> Path:
    """One self-contained HTML page: run summary, per-video timelines, failed files."""
    from batchemo.analysis.report import write_report

    validate(cfg)
    refuse_own_tables(output_paths(cfg.results), cfg.out)
    try:
        return write_report(load(cfg.results, "faces"), load(cfg.results, "frames"),
                            load(cfg.results, "files"), cfg.out, title=cfg.title,
                            runs=load(cfg.results, "runs"), min_track_sec=cfg.min_track)
    except OSError as e:
        raise OutputError(f"cannot write {cfg.out}: {e.strerror or e}") from None
