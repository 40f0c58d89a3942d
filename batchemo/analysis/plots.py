"""PNG charts: per-video emotion timelines and the run's emotion shares.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never pyplot: no global
backend switch, no figure registry to leak, safe from worker threads.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, PercentFormatter

from batchemo.analysis.columns import as_frame, class_names
from batchemo.analysis.summarize import summarize
from batchemo.analysis.timeline import timelines_and_segments

# One colour per class, the same in every plot and report.
CLASS_COLOURS = {
    "angry": "#d62728",
    "disgust": "#6b8e23",
    "fear": "#9467bd",
    "happy": "#f1c40f",
    "neutral": "#9e9e9e",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "contempt": "#8c564b",
}
_FALLBACK = ["#17becf", "#e377c2", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a",
             "#c5b0d5", "#c49c94", "#f7b6d2"]
MAX_TRACKS = 6
CUT_FACTOR = 100  # an empty stretch this many times the rest of a video is drawn narrow
CUT_WIDTH = 0.1  # ... this share of the rest wide
DPI = 100
_Out = str | Path | BinaryIO


def class_colour(name: str) -> str:
    """The class's colour; a class outside CLASS_COLOURS gets one fixed by its name."""
    return CLASS_COLOURS.get(name) or _FALLBACK[zlib.crc32(name.encode()) % len(_FALLBACK)]


def clock(sec: float, _pos: object = None) -> str:
    """Seconds as m:ss (h:mm:ss from an hour), for time axes."""
    s = int(round(max(sec, 0)))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def fine_clock(sec: float, _pos: object = None) -> str:
    """m:ss.s (for captions, and time-axis ticks between whole seconds)."""
    m, s = divmod(max(float(sec), 0.0), 60)
    return f"{int(m)}:{s:04.1f}"


def tick_clock(sec: float, pos: object = None) -> str:
    """Time-axis tick: whole seconds as m:ss; a tick between them (short clips: 0.5 s steps)
    keeps its tenths, where rounding printed 0:00 0:00 0:01 0:02 0:02 on a 4 s clip."""
    return clock(sec) if abs(sec - round(sec)) < 1e-6 else fine_clock(sec)


def video_plot_name(root: str, source: str) -> str:
    """File name of a video's timeline PNG: readable, and unique per (root, source)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("_")[-80:] or "video"
    digest = zlib.crc32("\0".join((root, source)).encode())
    return f"timeline_{safe}-{digest:08x}.png"


def literal(text: object) -> str:
    """Text from the data (file names, class names) drawn as is: a `$` would otherwise start
    matplotlib's mathtext, and `$x_{$` in a file name raised while drawing."""
    return str(text).replace("$", r"\$")


def _save(fig: Figure, out: _Out) -> _Out:
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png", dpi=DPI)
    return Path(out) if isinstance(out, str | Path) else out


def _steps(tl: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    """x at both edges of each row's span, y held flat across it, so a lone bin still has
    width; a third point per row, NaN where the next row does not start where this one ends
    (the untracked faces' bins around a track's), so the area breaks there instead of
    bridging the hole."""
    start = tl["bin_start"].to_numpy(np.float64)
    end = tl["bin_end"].to_numpy(np.float64)
    y = tl[col].to_numpy(np.float64, na_value=np.nan)
    hole = np.r_[start[1:] > end[:-1] + 1e-9, False]
    x = np.column_stack([start, end, end]).ravel()
    return x, np.column_stack([y, y, np.where(hole, np.nan, y)]).ravel()


def video_timeline_figure(tl: pd.DataFrame, segs: pd.DataFrame | None, title: str | None = None,
                          max_tracks: int = MAX_TRACKS) -> Figure:
    """The Figure drawn by `plot_video_timeline` (for embedding without a file)."""
    classes = class_names(tl, "smooth_")
    key = tl["track_id"].astype("Float64").fillna(-1).astype(np.int64)
    faces_per = tl.groupby(key)["n_faces"].sum()
    # Bands: the tracks (and the untracked faces, key -1) with the most faces.
    tracks = faces_per[faces_per > 0].sort_values(ascending=False, kind="stable")
    shown = sorted(tracks.index[:max_tracks],
                   key=lambda k: tl.loc[(key == k) & (tl["n_faces"] > 0), "bin_start"].min())
    rows = max(len(shown), 1)
    fig = Figure(figsize=(12, 2 + 2.2 * rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    t_end = float(tl["bin_end"].max()) if len(tl) else 1.0
    real, drawn = _time_axis(tl, t_end)
    to_x = lambda t: np.interp(t, real, drawn)  # noqa: E731
    if not shown:
        axes[0].text(0.5, 0.5, "no faces", ha="center", va="center", transform=axes[0].transAxes)
    for ax, k in zip(axes, shown, strict=False):
        part = tl[key == k].sort_values("bin_start")
        probs = part[[f"smooth_{c}" for c in classes]].to_numpy(np.float64, na_value=np.nan)
        total = probs.sum(axis=1, keepdims=True)
        # Median smoothing need not sum to 1: draw shares so the stack fills the band.
        norm = probs / np.where(total > 0, total, np.nan)
        part = part.assign(**{f"_n_{c}": norm[:, j] for j, c in enumerate(classes)})
        base = np.zeros(3 * len(part))
        for c in classes:
            x, y = _steps(part, f"_n_{c}")
            ax.fill_between(to_x(x), base, base + y, color=class_colour(c), linewidth=0)
            base = base + np.nan_to_num(y)
        if segs is not None and len(segs):
            own = segs[segs["track_id"].astype("Float64").fillna(-1) == k]
            for s in own.itertuples(index=False):
                x0, x1 = to_x(s.start_sec), to_x(s.end_sec)
                ax.broken_barh([(x0, x1 - x0)], (-0.17, 0.11), facecolors=class_colour(s.emotion))
        label = "untracked" if k < 0 else f"track {k}"
        ax.set_ylabel(f"{label}\n{int(tracks[k])} faces")
        ax.set_ylim(-0.2, 1.0)
        ax.set_yticks([0, 0.5, 1])
    for ax in axes:
        ax.set_xlim(0, drawn[-1])
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda x, pos: tick_clock(float(np.interp(x, drawn, real)), pos)))
        for i in range(1, len(real) - 1, 2):  # the stretches drawn narrow, marked as such
            ax.axvspan(drawn[i], drawn[i + 1], facecolor="#eeeeee", hatch="//",
                       edgecolor="#bbbbbb", linewidth=0)
            ax.text((drawn[i] + drawn[i + 1]) / 2, 0.4, f"{clock(real[i + 1] - real[i])}\nno face",
                    ha="center", va="center", fontsize=8, color="#555555")
    axes[-1].set_xlabel("time (band: dominant-emotion segments)")
    heading = literal(title or (tl["source"].iat[0] if len(tl) else "video"))
    heading += _shown_note(tracks.index, shown)
    fig.suptitle(heading)
    fig.legend(handles=[Patch(color=class_colour(c), label=literal(c)) for c in classes],
               loc="outside lower center", ncol=max(len(classes), 1), frameon=False)
    return fig


def _time_axis(tl: pd.DataFrame, t_end: float) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints (real seconds, drawn x) of a video's time axis. A stretch with no face on
    screen that is over CUT_FACTOR times longer than the rest of the video (a timestamp jump:
    1e12 s after 2 s of faces) is drawn CUT_WIDTH of the rest wide, so the faces are not
    squeezed into one pixel; any other video is drawn to scale (real = drawn)."""
    nobody = tl[tl["track_id"].isna() & (tl["n_faces"] == 0)]
    spans = sorted(zip(nobody["bin_end"] - nobody["bin_start"], nobody["bin_start"], strict=True),
                   reverse=True)
    cuts, cut_len = [], 0.0
    for length, start in spans:
        if length <= CUT_FACTOR * (t_end - cut_len - length):
            break
        cuts.append((start, start + length))
        cut_len += length
    width = CUT_WIDTH * max(t_end - cut_len, 1e-3)
    real, drawn = [0.0], [0.0]
    for a, b in sorted(cuts):
        real += [a, b]
        drawn += [drawn[-1] + a - real[-3], drawn[-1] + a - real[-3] + width]
    real.append(t_end)
    drawn.append(drawn[-1] + t_end - real[-2])
    return np.array(real), np.array(drawn)


def _shown_note(bands: pd.Index, shown: list[int]) -> str:
    """What the title says when bands are left out: tracks counted apart from the untracked
    faces (key -1), which are no track."""
    if len(shown) == len(bands):
        return ""
    n_tracks = int((bands >= 0).sum())
    n_shown = sum(k >= 0 for k in shown)
    note = f"  (showing {n_shown} of {n_tracks} tracks, most faces"
    if -1 in bands:
        note += ", and the untracked faces" if -1 in shown else "; untracked faces not shown"
    return note + ")"


def plot_video_timeline(tl: pd.DataFrame, segs: pd.DataFrame | None, out_png: _Out,
                        title: str | None = None, max_tracks: int = MAX_TRACKS) -> _Out:
    """One video's timeline PNG: per track (at most `max_tracks`, those with the most faces; the
    title says when more exist) a stacked area of smoothed class probabilities over time, its
    dominant-emotion segments as a coloured band beneath, m:ss time axis, a class legend.
    `tl` holds the timeline rows of ONE video, `segs` its segments (or None). Size 12 × (2 +
    2.2·tracks) inches at 100 dpi, i.e. 1200 × (200 + 220·tracks) pixels."""
    return _save(video_timeline_figure(tl, segs, title, max_tracks), out_png)


def run_shares_figure(summary_df: pd.DataFrame) -> Figure:
    """The Figure drawn by `plot_run_shares`."""
    classes = class_names(summary_df, "share_")
    run = summary_df[summary_df["level"] == "run"]
    shares = (run[[f"share_{c}" for c in classes]].iloc[0].to_numpy(np.float64)
              if len(run) else np.zeros(len(classes)))
    fig = Figure(figsize=(8, 4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(len(classes)), shares, color=[class_colour(c) for c in classes])
    ax.set_xticks(range(len(classes)), [literal(c) for c in classes])
    ax.bar_label(bars, labels=[f"{s:.0%}" for s in shares])
    top = float(np.nanmax(shares, initial=0.0)) if len(shares) else 0.0
    ax.set_ylim(0, max(top, 0.05) * 1.15)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("share of faces (top class)")
    faces = int(run["faces"].iat[0]) if len(run) else 0
    ax.set_title(f"Emotion shares over the run ({faces} faces)")
    return fig


def plot_run_shares(summary_df: pd.DataFrame, out_png: _Out) -> _Out:
    """Bar chart of the run-level share_<class> of a `summarize` table; 800 × 400 pixels."""
    return _save(run_shares_figure(summary_df), out_png)


def write_plots(
    faces: pd.DataFrame | pa.Table,
    frames: pd.DataFrame | pa.Table | None,
    out_dir: str | Path,
    *,
    files: pd.DataFrame | pa.Table | None = None,
    bin_sec: float = 1.0,
    smoothing: str = "ema",
    window_sec: float = 3.0,
    min_segment_sec: float = 1.0,
) -> list[Path]:
    """All plots of a run into `out_dir`: run_shares.png, then one timeline PNG per video
    (named by `video_plot_name`). Returns the paths written."""
    faces, frames = as_frame(faces), as_frame(frames)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_run_shares(summarize(faces, files, frames), out_dir / "run_shares.png")]
    tl, segs = timelines_and_segments(faces, frames, bin_sec=bin_sec, smoothing=smoothing,
                                      window_sec=window_sec, min_segment_sec=min_segment_sec)
    seg_groups = dict(iter(segs.groupby(["root", "source"])))
    for (root, source), part in tl.groupby(["root", "source"], sort=True):
        path = out_dir / video_plot_name(root, source)
        written.append(plot_video_timeline(part, seg_groups.get((root, source)), path,
                                           title=source))
    return written
