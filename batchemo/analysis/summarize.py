"""Per-file, per-track, per-folder and per-run statistics of a faces table, and its text form.

Valence, the class list and the dominant class come from columns.py, shared with the timeline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from batchemo.analysis.columns import as_frame, class_names, dominant_array, valence_array
from batchemo.analysis.segments import UNSURE_BELOW
from batchemo.analysis.suspect import suspect_reasons

LEVELS = ("run", "folder", "file", "track")
BLOCK_SEC = 5.0  # faces of one track this close in time are not independent readings

def top_folder(source: pd.Series) -> pd.Series:
    """First path component of `source`; '.' for files at the root."""
    codes, uniques = pd.factorize(source)  # a million rows hold a few thousand files
    top = [u.split("/", 1)[0] if "/" in u else "." for u in map(str, uniques)]
    return pd.Series(np.asarray(top, dtype=object)[codes], index=source.index, dtype=object)


def sampling_intervals(
    faces: pd.DataFrame, frames: pd.DataFrame | None = None, files: pd.DataFrame | None = None
) -> pd.Series:
    """Seconds between sampled frames per video, indexed by (root, source).

    First choice: the median gap between consecutive sampled times in the frames table (the
    median ignores the odd longer gap from a failed decode). Else the files table's
    duration / frames_sampled. Else the median gap between distinct face times (an
    overestimate where faces are missing from frames). NaN when nothing tells.
    """
    def median_gap(df: pd.DataFrame) -> pd.Series:
        d = df[["root", "source", "t_sec"]].dropna().drop_duplicates()
        d = d.sort_values(["root", "source", "t_sec"]).reset_index(drop=True)
        gap = d.groupby(["root", "source"], sort=False)["t_sec"].diff()
        return gap[gap > 0].groupby([d["root"], d["source"]]).median()

    vids = faces.loc[faces["media_type"] == "video", ["root", "source"]].drop_duplicates()
    out = pd.Series(np.nan, index=pd.MultiIndex.from_frame(vids), dtype=np.float64)
    if frames is not None and len(frames):
        out = out.fillna(median_gap(frames).reindex(out.index))
    if files is not None and {"duration", "frames_sampled"} <= set(files.columns):
        f = files.set_index(["root", "source"])
        est = f["duration"].astype(float) / f["frames_sampled"].where(f["frames_sampled"] > 0)
        out = out.fillna(est[~est.index.duplicated()].reindex(out.index))
    return out.fillna(median_gap(faces[faces["media_type"] == "video"]).reindex(out.index))


def frame_seconds(faces: pd.DataFrame, frames: pd.DataFrame | None, files: pd.DataFrame | None,
                  interval: pd.Series) -> np.ndarray:
    """Seconds of video each face row's sampled frame stands for: until the next sampled frame,
    at most the sampling interval, never past the video's end (so a file's frames never add up
    to more than its duration, as uneven gaps and the last frame's interval made them); NaN for
    images and where no interval is known."""
    keys = ["root", "source"]
    vid = faces.loc[(faces["media_type"] == "video") & faces["t_sec"].notna(), keys + ["t_sec"]]
    out = np.full(len(faces), np.nan)
    if not len(vid):
        return out
    known = frames[keys + ["t_sec"]] if frames is not None and len(frames) else vid
    times = pd.concat([known, vid]).dropna().drop_duplicates().sort_values(keys + ["t_sec"])
    t = times["t_sec"].to_numpy(np.float64)
    nxt = times.groupby(keys, sort=False)["t_sec"].shift(-1).to_numpy(np.float64)
    at = pd.MultiIndex.from_frame(times[keys])
    cover = np.fmin(interval.reindex(at).to_numpy(np.float64), nxt - t)  # fmin: NaN = no limit
    if files is not None and "duration" in files:
        dur = files.drop_duplicates(keys).set_index(keys)["duration"].astype(float)
        cover = np.fmin(cover, dur.reindex(at).to_numpy() - t)
    times = times.assign(_cover=np.clip(cover, 0.0, None))
    got = faces[keys + ["t_sec"]].merge(times, how="left", on=keys + ["t_sec"])
    return got["_cover"].to_numpy(np.float64)


def _aggregate(faces: pd.DataFrame, keys: list[str], classes: list[str]) -> pd.DataFrame:
    """faces, mean p_, share_, mean_confidence, dominant and valence per group of `keys`."""
    pcols = [f"p_{c}" for c in classes]
    top = faces["emotion"] if "emotion" in faces else pd.Series(
        dominant_array(faces[pcols].to_numpy(np.float64), classes), index=faces.index)
    work = faces[keys + pcols].copy()
    for c in classes:
        work[f"share_{c}"] = (top == c).astype(np.float64)
    conf = faces["confidence"] if "confidence" in faces else faces[pcols].max(axis=1)
    work["mean_confidence"] = conf.astype(np.float64)
    work["uncertain_share"] = (conf < UNSURE_BELOW).astype(np.float64)
    g = work.groupby(keys, sort=True, dropna=False)
    out = g.mean()
    out.insert(0, "faces", g.size())
    probs = out[pcols].to_numpy(np.float64)
    shares = out[[f"share_{c}" for c in classes]].to_numpy(np.float64)
    # Most frequent top class; a tie goes to the class with the higher mean probability.
    out["dominant"] = dominant_array(shares + 1e-9 * probs, classes)
    out["valence"] = valence_array(probs, classes)
    out = out.reset_index()
    lo, hi = _dominant_interval(faces, top, keys, out)
    return out.assign(dominant_share_lo=lo, dominant_share_hi=hi)


def _dominant_interval(faces: pd.DataFrame, top: pd.Series, keys: list[str],
                       groups: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson interval of each group's dominant share (the share of its face rows whose top
    class is its dominant class), counting as independent readings not the face rows but the
    blocks they fall in: one track's faces within BLOCK_SEC of each other (a photo's faces: that
    photo). So 30 s of one face at 5 fps weighs as 6 readings, not 150, and "44 % angry" on one
    face is shown for what it is."""
    if not len(groups):
        return np.empty(0), np.empty(0)
    t = faces["t_sec"].to_numpy(np.float64) if "t_sec" in faces else np.full(len(faces), np.nan)
    track = faces["track_id"] if "track_id" in faces else pd.Series(np.nan, index=faces.index)
    block = pd.DataFrame({"root": faces["root"], "source": faces["source"],
                          "track": track.astype("Float64").fillna(-1).to_numpy(np.float64),
                          "b": np.nan_to_num(np.floor(t / BLOCK_SEC), nan=-1)})
    block_id = block.groupby(list(block), sort=False, dropna=False).ngroup()
    n = block_id.groupby([faces[k] for k in keys], sort=True, dropna=False).nunique()
    n = n.to_numpy(np.float64)
    p = np.where(groups["dominant"].notna(), [
        row[f"share_{d}"] if isinstance(d, str) else np.nan
        for row, d in zip(groups.to_dict("records"), groups["dominant"], strict=True)], np.nan)
    z = 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def summarize(
    faces: pd.DataFrame | pa.Table,
    files: pd.DataFrame | pa.Table | None = None,
    frames: pd.DataFrame | pa.Table | None = None,
    min_track_sec: float = 0.0,
) -> pd.DataFrame:
    """Statistics per run, top-level folder, file and track, one row each, told by `level`.

    Columns: level ('run'|'folder'|'file'|'track'), root, folder (first component of source,
    '.' at the root), source, track_id, media_type, n_files, faces (face rows),
    seconds_on_screen, p_<class> (mean probability), share_<class> (fraction of face rows whose
    top class is <class>), uncertain_share (fraction of face rows whose top-class probability
    is under segments.UNSURE_BELOW: read, but more likely wrong than right; they count in their
    share_<class> too), dominant (the most frequent top class, ties to the higher mean
    probability), dominant_share_lo / _hi (95 % interval of the dominant class's share, over
    5-s blocks of a track: see `_dominant_interval`), mean_confidence, valence (see `valence`),
    suspect (track rows: probably not
    a person's face, see track.suspect_reasons; null on other levels). Track rows on screen for
    less than `min_track_sec` are left out (the file, folder and run rows keep their faces).

    seconds_on_screen: for a video file, the time its sampled frames with at least one face
    stand for (`frame_seconds`: each until the next sampled frame, at most the sampling
    interval of `sampling_intervals`, never past the end); for a track, the same over its
    frames; images have none (NaN); folders and the run sum their videos' file values.
    Files with status 'no_face' in `files` appear at file level with faces 0. Keys that do not
    apply to a level are null (the run row has no root).
    """
    faces, files, frames = as_frame(faces), as_frame(files), as_frame(frames)
    classes = class_names(faces)
    faces = faces.reset_index(drop=True)  # duplicate labels (concatenated parts) break alignment
    faces = faces.assign(folder=top_folder(faces["source"]))
    interval = sampling_intervals(faces, frames, files)
    faces["_cover"] = frame_seconds(faces, frames, files, interval)

    per_file = _aggregate(faces, ["root", "folder", "source"], classes)
    first = faces.groupby(["root", "source"], sort=False)["media_type"].first()
    idx = pd.MultiIndex.from_frame(per_file[["root", "source"]])
    per_file.insert(3, "media_type", first.reindex(idx).to_numpy())
    # Same keys and sort as _aggregate, so the rows line up.
    per_file["seconds_on_screen"] = np.where(
        per_file["media_type"] == "video",
        _on_screen(faces, ["root", "folder", "source"]).to_numpy(), np.nan)
    if files is not None and len(files):
        nf = files[files["status"] == "no_face"]
        nf = nf.merge(per_file[["root", "source"]], how="left", indicator=True)
        nf = nf[nf["_merge"] == "left_only"]
        extra = pd.DataFrame({"root": nf["root"], "folder": top_folder(nf["source"]),
                              "source": nf["source"], "media_type": nf["media_type"],
                              "faces": 0, "seconds_on_screen": np.where(
                                  nf["media_type"] == "video", 0.0, np.nan)})
        per_file = pd.concat([per_file, extra], ignore_index=True)
    per_file["n_files"] = 1

    tracked = faces[faces["track_id"].notna()] if "track_id" in faces else faces.iloc[:0]
    per_track = _aggregate(tracked, ["root", "folder", "source", "track_id"], classes)
    per_track["seconds_on_screen"] = _on_screen(
        tracked, ["root", "folder", "source", "track_id"]).to_numpy()
    per_track["media_type"], per_track["n_files"] = "video", 1
    per_track["suspect"] = suspect_reasons(tracked).reindex(
        pd.MultiIndex.from_frame(per_track[["root", "source", "track_id"]])).notna().to_numpy()
    if min_track_sec > 0:
        per_track = per_track[~(per_track["seconds_on_screen"] < min_track_sec - 1e-9)]

    secs = per_file.groupby(["root", "folder"])["seconds_on_screen"].sum(min_count=0)
    per_folder = _aggregate(faces, ["root", "folder"], classes)
    fidx = pd.MultiIndex.from_frame(per_folder[["root", "folder"]])
    per_folder["seconds_on_screen"] = secs.reindex(fidx).fillna(0.0).to_numpy()
    per_folder["n_files"] = per_file.groupby(["root", "folder"]).size().reindex(fidx).to_numpy()

    per_run = _aggregate(faces.assign(_all=0), ["_all"], classes).drop(columns="_all")
    if not len(per_run):  # a run that found no face still has its run row
        per_run = pd.DataFrame({"faces": [0]})
    per_run["seconds_on_screen"] = float(per_file["seconds_on_screen"].sum())
    per_run["n_files"] = len(per_file)

    parts = []
    for level, part in (("run", per_run), ("folder", per_folder), ("file", per_file),
                        ("track", per_track)):
        if len(part):
            parts.append(part.assign(level=level))
    out = pd.concat(parts, ignore_index=True)
    cols = (["level", "root", "folder", "source", "track_id", "media_type", "n_files", "faces",
             "seconds_on_screen"] + [f"p_{c}" for c in classes] + [f"share_{c}" for c in classes]
            + ["uncertain_share", "dominant", "dominant_share_lo", "dominant_share_hi",
               "mean_confidence", "valence", "suspect"])
    out = out.reindex(columns=cols)
    out["suspect"] = out["suspect"].astype("boolean")
    out["track_id"] = out["track_id"].astype("Int64")
    out["faces"] = out["faces"].astype(np.int64)
    out["n_files"] = out["n_files"].astype(np.int64)
    return out


def _on_screen(faces: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Sum of `_cover` over the distinct sampled frames of each group (sorted as _aggregate)."""
    once = faces.drop_duplicates(keys + ["frame_index"])
    return once.groupby(keys, sort=True)["_cover"].sum(min_count=1)


def format_seconds(sec: float) -> str:
    """m:ss.s (h:mm:ss from an hour); '-' for NaN."""
    if sec is None or not np.isfinite(sec):
        return "-"
    if sec < 3600:
        m, s = divmod(round(float(sec), 1), 60)
        return f"{int(m)}:{s:04.1f}"
    s = int(round(sec))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}"


def _text(value: object, fmt: str = "") -> str:
    return "-" if value is None or pd.isna(value) else format(value, fmt)


NAME_WIDTH = 60  # longer names lose their middle, keeping the top folder and the file name


def _row_name(level: str, r: dict) -> str:
    if level == "track":
        return f"{r['source']} #{r['track_id']}"
    return {"run": "all", "folder": f"{r['root']}:{r['folder']}"}.get(level, str(r["source"]))


def _fit(name: str, width: int) -> str:
    if len(name) <= width:
        return name
    keep = width - 1
    return name[: keep // 3] + "…" + name[len(name) - (keep - keep // 3):]


def format_summary(df: pd.DataFrame, levels: tuple[str, ...] = ("run", "folder", "file"),
                   max_rows: int = 60) -> str:
    """A fixed-width text table of `summarize` output for the terminal (tracks left out by
    default; at most `max_rows` rows per level, the most faces first)."""
    classes = class_names(df, "share_")
    widths = [max(5, len(c)) for c in classes]  # whole class names ("disgust", not "disgu")
    rows = []
    for level in levels:
        part = df[df["level"] == level]
        if len(part):
            part = part.sort_values("faces", ascending=False, kind="stable")
            rows.append((level, part, [_row_name(level, r) for r in
                                       part.head(max_rows).to_dict("records")]))
    width = min(NAME_WIDTH, max([4] + [len(n) for *_, names in rows for n in names]))
    head = f"{'name':<{width}} {'files':>5} {'faces':>7} {'screen':>8} {'dominant':<9}"
    head += "".join(f" {c:>{w}}" for c, w in zip(classes, widths, strict=True))
    head += f" {'conf':>5} {'val':>6}"
    lines = []
    for level, part, names in rows:
        lines += ["", f"{level} ({len(part)})", head, "-" * len(head)]
        for name, r in zip(names, part.head(max_rows).to_dict("records"), strict=True):
            line = (f"{_fit(name, width):<{width}} {r['n_files']:>5} {r['faces']:>7} "
                    f"{format_seconds(r['seconds_on_screen']):>8} {_text(r['dominant']):<9}")
            line += "".join(f" {_text(r[f'share_{c}'], '.0%'):>{w}}"
                            for c, w in zip(classes, widths, strict=True))
            line += f" {_text(r['mean_confidence'], '.2f'):>5} {_text(r['valence'], '+.2f'):>6}"
            lines.append(line)
        if len(part) > max_rows:
            lines.append(f"… {len(part) - max_rows} more {level} rows")
    return "\n".join(lines[1:]) + "\n"
