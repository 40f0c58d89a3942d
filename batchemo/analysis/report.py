"""One self-contained HTML report of a run: summary, per-video timelines with the faces behind
them, photos with their labelled faces, failed files.

Images are data URIs (PNG charts, small JPEG face crops) and the style sheet is inline, so the
page can be mailed or archived as one file and opens offline; every piece of text from the data
goes through html.escape. Face crops are cut from the source media at report time (the faces
table holds source, frame_index and box): a run stores no pixels, and a source that is gone or
changed since the run shows a placeholder with the reason.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from batchemo.analysis import annotate as ann
from batchemo.analysis.columns import as_frame, class_names
from batchemo.analysis.plots import class_colour, fine_clock, run_shares_figure, video_timeline_figure
from batchemo.analysis.report_facts import run_facts
from batchemo.analysis.summarize import format_seconds, summarize
from batchemo.analysis.suspect import suspect_reasons
from batchemo.analysis.timeline import timelines_and_segments
from batchemo.output.atomic import atomic_write

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1240px;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #eee}
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
table.facts th{background:none;font-weight:600}
img{max-width:100%}.muted{color:#777}.err{color:#b00}
.sw{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}
.strip{display:flex;flex-wrap:wrap;gap:6px;margin:.3em 0 1em}
.strip figure{margin:0;width:88px;font-size:11px;line-height:1.2;text-align:center}
.strip img{width:80px;height:80px;display:block;margin:0 auto;border-bottom:3px solid #ccc}
.ph{width:80px;height:80px;margin:0 auto;background:#eee;color:#777;font-size:10px;
display:flex;align-items:center;justify-content:center;text-align:center}
"""
CROP_PX = 80  # face crops: 80×80 JPEG at quality 70, about 3 KB each in the page
CROP_QUALITY = 70
MAX_STRIP = 7  # crops per track: start, middle, end, the best face of each segment
MAX_PHOTO_FACES = 60

MEANINGS = (
    "<b>confidence</b>: the model's probability for the emotion it chose (its top class), "
    "averaged over faces; it says how sure the model is, not how often it is right. "
    "<b>valence</b>: P(happy) − P(angry) − P(disgust) − P(fear) − P(sad), from −1 (clearly "
    "negative) to +1 (clearly positive); neutral and surprise count 0. <b>share</b> columns: "
    "the fraction of faces whose top class is that emotion. A <b>track</b> is one person's face "
    "followed within one shot; it ends at a camera cut. Labels are facial-expression "
    "categories, not felt emotion: check a sample by eye in the face strips.")


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


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column key/value table without a header row (text escaped here)."""
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="facts"><tbody>{body}</tbody></table>'


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _png(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _emotion(name: object) -> str:
    if name is None or pd.isna(name):
        return "–"
    return f'<span class="sw" style="background:{class_colour(str(name))}"></span>{_esc(name)}'


def _summary_table(df: pd.DataFrame, name_of, files_column: bool = True) -> str:
    classes = class_names(df, "share_")
    headers = ["name", *(["files"] if files_column else []), "faces", "on screen", "dominant",
               *classes, "confidence", "valence"]
    rows = []
    for r in df.to_dict("records"):
        rows.append([(_esc(name_of(r)), False)]
                    + ([(_num(r["n_files"], "d"), True)] if files_column else [])
                    + [(_num(r["faces"], "d"), True),
                       (_esc(format_seconds(r["seconds_on_screen"])), True),
                       (_emotion(r["dominant"]), False)]
                    + [(_num(r[f"share_{c}"], ".0%"), True) for c in classes]
                    + [(_num(r["mean_confidence"], ".2f"), True),
                       (_num(r["valence"], "+.2f"), True)])
    return _table(headers, rows)


def _crop_uri(image: np.ndarray, r: dict) -> str:
    crop = ann.crop_box(image, r["x"], r["y"], r["w"], r["h"], CROP_PX)
    return "data:image/jpeg;base64," + base64.b64encode(ann.jpeg(crop, CROP_QUALITY)).decode()


def _read_crops(root: str, source: str, media_type: str, rows: list[dict],
                files_row: dict | None) -> tuple[dict[int, str], str | None]:
    """Data URIs of the crops of `rows` (by position), or the reason none could be made."""
    path = ann.source_path(root, source)
    problem = ann.source_problem(path, files_row)
    if problem:
        return {}, problem
    by_frame: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_frame.setdefault(int(r["frame_index"]), []).append(i)
    times = {int(r["frame_index"]): float(r["t_sec"]) for r in rows if not pd.isna(r["t_sec"])}
    out = {}
    try:
        for index, image in ann.read_frames(path, media_type, by_frame, times):
            for i in by_frame[index]:
                out[i] = _crop_uri(image, rows[i])
    except Exception as e:  # a report must not die on one unreadable source
        return out, f"source unreadable ({type(e).__name__})"
    return out, None if out else "frames not decodable"


def _figure(uri: str | None, caption: str, colour: str, missing: str) -> str:
    img = (f'<img alt="face" src="{uri}" style="border-color:{colour}">' if uri
           else f'<div class="ph">{_esc(missing)}</div>')
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def _caption(r: dict, with_time: bool) -> str:
    when = f"{fine_clock(r['t_sec'])} " if with_time and not pd.isna(r.get("t_sec")) else ""
    conf = "" if pd.isna(r.get("confidence")) else f" {float(r['confidence']):.2f}"
    return _esc(f"{when}{r.get('emotion')}{conf}")


def pick_strip(track: pd.DataFrame, segs: pd.DataFrame | None) -> pd.DataFrame:
    """The faces shown for a track: its first, middle and last, and for each dominant-emotion
    segment its most confident face for that emotion; in time order, at most MAX_STRIP."""
    track = track.sort_values("t_sec", kind="stable")
    picks = [0, len(track) // 2, len(track) - 1]
    t = track["t_sec"].to_numpy(float)
    for s in (segs.itertuples(index=False) if segs is not None else ()):
        col = f"p_{s.emotion}"
        inside = np.flatnonzero((t >= s.start_sec - 1e-9) & (t < s.end_sec))
        if len(inside) and col in track:
            picks.append(int(inside[np.argmax(track[col].to_numpy(float)[inside])]))
    picks = sorted(set(picks))
    if len(picks) > MAX_STRIP:  # keep the ends, thin the middle evenly
        picks = [picks[round(i)] for i in np.linspace(0, len(picks) - 1, MAX_STRIP)]
    return track.iloc[picks]


def _strips(part: pd.DataFrame, tracks: pd.DataFrame, segs: pd.DataFrame | None,
            files_row: dict | None) -> dict[int, str]:
    """Per track id, the html of its strip of face crops (one decoding pass per video)."""
    chosen = []
    for tid in tracks["track_id"].dropna().astype(int):
        own = segs[segs["track_id"] == tid] if segs is not None and len(segs) else None
        chosen.append((tid, pick_strip(part[part["track_id"] == tid], own).to_dict("records")))
    rows = [r for _, rs in chosen for r in rs]
    root, source = part["root"].iat[0], part["source"].iat[0]
    uris, problem = _read_crops(root, source, "video", rows, files_row)
    out, k = {}, 0
    for tid, rs in chosen:
        figs = []
        for r in rs:
            figs.append(_figure(uris.get(k), _caption(r, True), class_colour(str(r["emotion"])),
                                problem or "frame not decodable"))
            k += 1
        out[tid] = '<div class="strip">' + "".join(figs) + "</div>"
    return out


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
    runs: pd.DataFrame | pa.Table | None = None,
    min_track_sec: float = 0.0,
) -> Path:
    """Write one self-contained HTML page for a run and return its path.

    Sections: run facts (last run's date and settings, model and its card's limits, files by
    status), what the measures mean, the run and folder summary with the emotion-share chart,
    every failed file (status 'error') with its message, the file table, photos with their
    labelled face crops, then per video its timeline image, per-track table with a strip of
    face crops per track (see `pick_strip`), and segments. Tracks that are suspect (see
    track.suspect_reasons) or on screen for less than `min_track_sec` are folded away with
    the reason. The first `max_video_images` videos (by name) get images and crops; the rest
    are listed without. The page links to nothing outside itself. Written to a temp file and
    renamed.
    """
    faces, frames, files, runs = (as_frame(x) for x in (faces, frames, files, runs))
    summary = summarize(faces, files, frames)
    tl, segs = timelines_and_segments(faces, frames, bin_sec=bin_sec, smoothing=smoothing,
                                      window_sec=window_sec, min_segment_sec=min_segment_sec)
    reasons = suspect_reasons(faces)
    files_by = {} if files is None else {(r["root"], r["source"]): r
                                         for r in files.to_dict("records")}
    parts = [f"<h1>{_esc(title)}</h1>", _facts(run_facts(faces, files, runs)),
             f'<p class="muted">{MEANINGS}</p>']

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

    parts.append("<h2>Photos</h2>")
    photos = faces[faces["media_type"] == "image"] if len(faces) else faces
    if not len(photos):
        parts.append('<p class="muted">No faces in photos.</p>')
    for i, ((root, source), part) in enumerate(photos.groupby(["root", "source"], sort=True)):
        part = part.sort_values("face_index") if "face_index" in part else part
        rows = part.head(MAX_PHOTO_FACES).to_dict("records")
        parts.append(f'<h3>{_esc(source)} <span class="muted">({_count(len(part), "face")})'
                     '</span></h3>')
        if i >= max_video_images:
            parts.append('<p class="muted">(faces left out: too many photos)</p>')
            continue
        uris, problem = _read_crops(root, source, "image", rows, files_by.get((root, source)))
        parts.append('<div class="strip">' + "".join(
            _figure(uris.get(k), f"#{k} " + _caption(r, False), class_colour(str(r["emotion"])),
                    problem or "not decodable") for k, r in enumerate(rows)) + "</div>")
        if len(part) > MAX_PHOTO_FACES:
            parts.append(f'<p class="muted">… and {len(part) - MAX_PHOTO_FACES} more faces</p>')

    parts.append("<h2>Videos</h2>")
    per_track = summary[summary["level"] == "track"]
    seg_by = dict(iter(segs.groupby(["root", "source"]))) if len(segs) else {}
    track_by = dict(iter(per_track.groupby(["root", "source"]))) if len(per_track) else {}
    video_faces = dict(iter(faces[faces["media_type"] == "video"].groupby(["root", "source"])))
    for i, ((root, source), part) in enumerate(tl.groupby(["root", "source"], sort=True)):
        parts.append(f'<h3>{_esc(source)} <span class="muted">({_esc(root)})</span></h3>')
        vsegs = seg_by.get((root, source))
        if i < max_video_images:
            fig = video_timeline_figure(part, vsegs, title=str(source))  # sub-second ticks
            parts.append(f'<img alt="timeline of {_esc(source)}" src="{_png(fig)}">')
        else:
            parts.append('<p class="muted">(images left out: too many videos)</p>')
        tracks = track_by.get((root, source))
        if tracks is not None and len(tracks):
            parts.append(_tracks_html(tracks, video_faces.get((root, source)), vsegs, reasons,
                                      files_by.get((root, source)), min_track_sec,
                                      i < max_video_images))
        if vsegs is not None and len(vsegs):
            rows = [[(_esc("untracked" if pd.isna(r["track_id"]) else r["track_id"]), True),
                     (_emotion(r["emotion"]), False),
                     (_esc(format_seconds(r["start_sec"])), True),
                     (_esc(format_seconds(r["end_sec"])), True),
                     (_num(r["duration_sec"], ".1f"), True),
                     (_num(r["mean_confidence"], ".2f"), True)]
                    for r in vsegs.to_dict("records")]
            parts.append(f"<details><summary>{_count(len(vsegs), 'segment')}</summary>"
                         + _table(["track", "emotion", "start", "end", "seconds",
                                   "mean confidence"], rows) + "</details>")

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    out_html = Path(out_html)
    with atomic_write(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out_html


def _tracks_html(tracks: pd.DataFrame, vfaces: pd.DataFrame | None, vsegs: pd.DataFrame | None,
                 reasons: pd.Series, files_row: dict | None, min_track_sec: float,
                 with_crops: bool) -> str:
    """The track table with a face strip per track; suspect and short tracks folded away."""
    why = {}
    for r in tracks.to_dict("records"):
        text = reasons.get((r["root"], r["source"], r["track_id"]))
        if r["seconds_on_screen"] < min_track_sec - 1e-9:  # 5 × 0.2 s is 1 s
            short = f"on screen {r['seconds_on_screen']:.1f} s < {min_track_sec:g} s"
            text = f"{text}; {short}" if text else short
        if text:
            why[int(r["track_id"])] = text
    strips = (_strips(vfaces, tracks, vsegs, files_row)
              if with_crops and vfaces is not None else {})
    shown = tracks[~tracks["track_id"].astype(int).isin(list(why))]
    folded = tracks[tracks["track_id"].astype(int).isin(list(why))]
    out = []
    if len(shown):
        out.append(_summary_table(shown, lambda r: f"track {r['track_id']}", files_column=False))
        out += [f"<div><b>track {int(t)}</b>{strips.get(int(t), '')}</div>"
                for t in shown["track_id"]]
    if len(folded):
        body = _summary_table(folded, lambda r: f"track {r['track_id']}: {why[int(r['track_id'])]}",
                              files_column=False)
        body += "".join(f"<div><b>track {int(t)}</b> <span class=\"muted\">{_esc(why[int(t)])}"
                        f"</span>{strips.get(int(t), '')}</div>" for t in folded["track_id"])
        out.append(f"<details><summary>{_count(len(folded), 'track')} folded away (probably not a face, "
                   f"or short)</summary>{body}</details>")
    return "\n".join(out)
