"""One self-contained HTML report of a run: summary, per-video timelines, failed files.

Images are PNG data URIs and the style sheet is inline, so the page can be mailed or archived
as one file and opens offline; every piece of text from the data goes through html.escape.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .plots import class_colour, run_shares_figure, video_timeline_figure
from .summarize import as_frame, class_names, format_seconds, summarize
from .timeline import segments, timeline

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1240px;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #eee}
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%}.muted{color:#777}.err{color:#b00}
.sw{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}
"""


def _esc(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return "–"
    return html.escape(str(value))


def _num(value: object, fmt: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, fmt)


def _table(headers: Sequence[str], rows: Iterable[Sequence[tuple[str, bool]]]) -> str:
    """rows hold (already escaped html, is_number) cells."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if n else f"<td>{c}</td>"
                                    for c, n in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _emotion(name: object) -> str:
    if name is None or pd.isna(name):
        return "–"
    return f'<span class="sw" style="background:{class_colour(str(name))}"></span>{_esc(name)}'


def _summary_table(df: pd.DataFrame, name_of) -> str:
    classes = class_names(df, "share_")
    headers = ["name", "files", "faces", "on screen", "dominant", *classes, "confidence",
               "valence"]
    rows = []
    for r in df.to_dict("records"):
        rows.append([(_esc(name_of(r)), False), (_num(r["n_files"], "d"), True),
                     (_num(r["faces"], "d"), True),
                     (_esc(format_seconds(r["seconds_on_screen"])), True),
                     (_emotion(r["dominant"]), False)]
                    + [(_num(r[f"share_{c}"], ".0%"), True) for c in classes]
                    + [(_num(r["mean_confidence"], ".2f"), True),
                       (_num(r["valence"], "+.2f"), True)])
    return _table(headers, rows)


def write_report(
    faces: pd.DataFrame | pa.Table,
    frames: pd.DataFrame | pa.Table | None,
    files: pd.DataFrame | pa.Table | None,
    out_html: str | Path,
    *,
    title: str = "batchemo report",
    bin_sec: float = 1.0,
    smoothing: str = "ema",
    window_sec: float = 3.0,
    min_segment_sec: float = 1.0,
    max_video_images: int = 200,
) -> Path:
    """Write one self-contained HTML page for a run and return its path.

    Sections: run facts (runs, models, files by status), the run and folder summary with the
    emotion-share chart, every failed file (status 'error') with its message, the file table,
    then per video its timeline image (the first `max_video_images` videos by name; the rest
    are listed without image), per-track table and segments. The page links to nothing
    outside itself. Written to a temp file and renamed.
    """
    faces, frames, files = as_frame(faces), as_frame(frames), as_frame(files)
    summary = summarize(faces, files, frames)
    tl = timeline(faces, frames, bin_sec=bin_sec, smoothing=smoothing, window_sec=window_sec)
    segs = segments(tl, min_segment_sec)
    parts = [f"<h1>{_esc(title)}</h1>"]

    facts = [("face rows", f"{len(faces):d}")]
    for col, label in (("run_id", "runs"), ("model_id", "models")):
        if col in faces and len(faces):
            facts.append((label, ", ".join(map(str, sorted(faces[col].dropna().unique())))))
    if files is not None and len(files):
        counts = files["status"].value_counts()
        facts.append(("files", ", ".join(f"{k}: {v}" for k, v in counts.items())))
    parts.append(_table(["", ""], [[(_esc(k), False), (_esc(v), False)] for k, v in facts]))

    parts.append("<h2>Summary</h2>")
    parts.append(f'<img alt="emotion shares" src="{_png(run_shares_figure(summary))}">')
    top = summary[summary["level"].isin(["run", "folder"])]
    parts.append(_summary_table(top, lambda r: "whole run" if r["level"] == "run"
                                else f"{r['root']} : {r['folder']}"))

    parts.append("<h2>Failed files</h2>")
    failed = files[files["status"] == "error"] if files is not None and len(files) else None
    if failed is None or not len(failed):
        parts.append('<p class="muted">No failed files.</p>')
    else:
        parts.append(_table(["root", "file", "error"], [
            [(_esc(r["root"]), False), (_esc(r["source"]), False),
             (f'<span class="err">{_esc(r.get("error"))}</span>', False)]
            for r in failed.to_dict("records")]))

    parts.append("<h2>Files</h2>")
    per_file = summary[summary["level"] == "file"].sort_values(["root", "source"])
    parts.append(_summary_table(per_file, lambda r: f"{r['source']} ({r['media_type']})"))

    parts.append("<h2>Videos</h2>")
    per_track = summary[summary["level"] == "track"]
    seg_by = dict(iter(segs.groupby(["root", "source"]))) if len(segs) else {}
    track_by = dict(iter(per_track.groupby(["root", "source"]))) if len(per_track) else {}
    for i, ((root, source), part) in enumerate(tl.groupby(["root", "source"], sort=True)):
        parts.append(f'<h3>{_esc(source)} <span class="muted">({_esc(root)})</span></h3>')
        vsegs = seg_by.get((root, source))
        if i < max_video_images:
            src = _png(video_timeline_figure(part, vsegs, title=str(source)))
            parts.append(f'<img alt="timeline of {_esc(source)}" src="{src}">')
        else:
            parts.append('<p class="muted">(image left out: too many videos)</p>')
        tracks = track_by.get((root, source))
        if tracks is not None and len(tracks):
            parts.append(_summary_table(tracks, lambda r: f"track {r['track_id']}"))
        if vsegs is not None and len(vsegs):
            rows = [[(_esc("untracked" if pd.isna(r["track_id"]) else r["track_id"]), True),
                     (_emotion(r["emotion"]), False),
                     (_esc(format_seconds(r["start_sec"])), True),
                     (_esc(format_seconds(r["end_sec"])), True),
                     (_num(r["duration_sec"], ".1f"), True),
                     (_num(r["mean_confidence"], ".2f"), True)]
                    for r in vsegs.to_dict("records")]
            parts.append(f"<details><summary>{len(vsegs)} segments</summary>"
                         + _table(["track", "emotion", "start", "end", "seconds",
                                   "mean confidence"], rows) + "</details>")

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    out_html = Path(out_html)
    tmp = out_html.with_name(out_html.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out_html)
    return out_html
