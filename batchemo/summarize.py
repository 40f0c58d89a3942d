"""Per-file, per-track, per-folder and per-run statistics of a faces table, and the
dominant-emotion segments of a timeline (re-exported by timeline.py).

Also the one definition of `valence` and of the class list (from the `p_<class>` columns) that
timeline.py, plots.py and report.py import, so every table agrees on them.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd
import pyarrow as pa

from .track import suspect_reasons

LEVELS = ("run", "folder", "file", "track")
SEGMENT_COLUMNS = ["root", "source", "track_id", "emotion", "start_sec", "end_sec",
                   "duration_sec", "mean_confidence", "n_faces"]

# Valence weight per class; absent classes weigh 0 (neutral, surprise: surprise is positive or
# negative depending on context, so it counts as neither). `contempt` appears in some datasets.
VALENCE_WEIGHTS = {
    "happy": 1.0,
    "angry": -1.0,
    "disgust": -1.0,
    "fear": -1.0,
    "sad": -1.0,
    "contempt": -1.0,
}


def as_frame(table: pd.DataFrame | pa.Table | None) -> pd.DataFrame | None:
    """A pandas DataFrame from a DataFrame or a pyarrow Table (None stays None)."""
    if table is None or isinstance(table, pd.DataFrame):
        return table
    return table.to_pandas()


def class_names(df: pd.DataFrame, prefix: str = "p_") -> list[str]:
    """The model's classes, in column order, from the `<prefix><class>` columns."""
    return [c[len(prefix) :] for c in df.columns if c.startswith(prefix)]


def valence_array(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """Valence per row of an (N, C) probability array; see `valence`."""
    probs = np.asarray(probs, dtype=np.float64).reshape(len(probs), len(classes))
    w = np.array([VALENCE_WEIGHTS.get(c, 0.0) for c in classes])
    out = np.full(len(probs), np.nan)
    if not w.any():
        return out  # no class with a valence: undefined rather than a misleading 0
    relevant = probs[:, w != 0]
    ok = ~np.isnan(relevant).all(axis=1)
    out[ok] = np.nansum(probs[ok][:, w != 0] * w[w != 0], axis=1)
    return out


def valence(df: pd.DataFrame, prefix: str = "p_") -> np.ndarray:
    """Valence = P(happy) − P(angry) − P(disgust) − P(fear) − P(sad) [− P(contempt)], in [−1, 1].

    It is the expected valence score under the predicted distribution, scoring each class +1
    (happy), −1 (negative classes) or 0 (neutral, surprise, unknown). Being linear in the
    probabilities, the valence of mean probabilities equals the mean of per-face valences, so
    bins, tracks, files and the run all agree. Classes the model lacks contribute 0; a row
    whose relevant probabilities are all null (an empty bin), or a model with no valenced
    class, gives NaN.
    """
    classes = class_names(df, prefix)
    cols = [prefix + c for c in classes]
    return valence_array(df[cols].to_numpy(dtype=np.float64, na_value=np.nan), classes)


def dominant_array(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """Argmax class name per row of an (N, C) array; None where the row is all NaN."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.full(len(probs), None, dtype=object)
    ok = ~np.isnan(probs).all(axis=1) if len(probs) else np.zeros(0, bool)
    if ok.any():
        idx = np.nanargmax(np.where(np.isnan(probs[ok]), -np.inf, probs[ok]), axis=1)
        out[ok] = np.asarray(classes, dtype=object)[idx]
    return out


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
    g = work.groupby(keys, sort=True, dropna=False)
    out = g.mean()
    out.insert(0, "faces", g.size())
    probs = out[pcols].to_numpy(np.float64)
    shares = out[[f"share_{c}" for c in classes]].to_numpy(np.float64)
    # Most frequent top class; a tie goes to the class with the higher mean probability.
    out["dominant"] = dominant_array(shares + 1e-9 * probs, classes)
    out["valence"] = valence_array(probs, classes)
    return out.reset_index()


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
    top class is <class>), dominant (the most frequent top class, ties to the higher mean
    probability), mean_confidence, valence (see `valence`), suspect (track rows: probably not
    a person's face, see track.suspect_reasons; null on other levels). Track rows on screen for
    less than `min_track_sec` are left out (the file, folder and run rows keep their faces).

    seconds_on_screen: for a video file, the number of sampled frames with at least one face
    × the sampling interval (see `sampling_intervals`); for a track, its sampled frames × the
    interval; images have none (NaN); folders and the run sum their videos' file values.
    Files with status 'no_face' in `files` appear at file level with faces 0. Keys that do not
    apply to a level are null (the run row has no root).
    """
    faces, files, frames = as_frame(faces), as_frame(files), as_frame(frames)
    classes = class_names(faces)
    faces = faces.reset_index(drop=True)  # duplicate labels (concatenated parts) break alignment
    faces = faces.assign(folder=top_folder(faces["source"]))
    interval = sampling_intervals(faces, frames, files)

    per_file = _aggregate(faces, ["root", "folder", "source"], classes)
    first = faces.groupby(["root", "source"], sort=False)["media_type"].first()
    idx = pd.MultiIndex.from_frame(per_file[["root", "source"]])
    per_file.insert(3, "media_type", first.reindex(idx).to_numpy())
    # Same keys and sort as _aggregate, so the rows line up.
    frames_with_face = faces.groupby(["root", "folder", "source"])["frame_index"].nunique()
    per_file["seconds_on_screen"] = np.where(
        per_file["media_type"] == "video",
        frames_with_face.to_numpy() * interval.reindex(idx).to_numpy(), np.nan)
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
    tidx = pd.MultiIndex.from_frame(per_track[["root", "source"]])
    n_frames = tracked.groupby(["root", "folder", "source", "track_id"])["frame_index"].nunique()
    per_track["seconds_on_screen"] = n_frames.to_numpy() * interval.reindex(tidx).to_numpy()
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
            + ["dominant", "mean_confidence", "valence", "suspect"])
    out = out.reindex(columns=cols)
    out["suspect"] = out["suspect"].astype("boolean")
    out["track_id"] = out["track_id"].astype("Int64")
    out["faces"] = out["faces"].astype(np.int64)
    out["n_files"] = out["n_files"].astype(np.int64)
    return out


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


def format_summary(df: pd.DataFrame, levels: tuple[str, ...] = ("run", "folder", "file"),
                   max_rows: int = 60) -> str:
    """A fixed-width text table of `summarize` output for the terminal (tracks left out by
    default; at most `max_rows` rows per level, the most faces first)."""
    classes = class_names(df, "share_")
    head = f"{'name':<38} {'files':>5} {'faces':>7} {'screen':>8} {'dominant':<9}"
    head += "".join(f" {c[:5]:>5}" for c in classes) + f" {'conf':>5} {'val':>6}"
    lines = []
    for level in levels:
        part = df[df["level"] == level]
        if not len(part):
            continue
        part = part.sort_values("faces", ascending=False, kind="stable")
        lines += ["", f"{level} ({len(part)})", head, "-" * len(head)]
        for row in part.head(max_rows).itertuples(index=False):
            r = row._asdict()
            name = {"run": "all", "folder": f"{r['root']}:{r['folder']}"}.get(
                level, str(r["source"]))
            if level == "track":
                name = f"{r['source']} #{r['track_id']}"
            name = name if len(name) <= 38 else "…" + name[-37:]
            line = (f"{name:<38} {r['n_files']:>5} {r['faces']:>7} "
                    f"{format_seconds(r['seconds_on_screen']):>8} {_text(r['dominant']):<9}")
            line += "".join(f" {_text(r[f'share_{c}'], '.0%'):>5}" for c in classes)
            line += f" {_text(r['mean_confidence'], '.2f'):>5} {_text(r['valence'], '+.2f'):>6}"
            lines.append(line)
        if len(part) > max_rows:
            lines.append(f"… {len(part) - max_rows} more {level} rows")
    return "\n".join(lines[1:]) + "\n"


def segments(timeline_df: pd.DataFrame, min_duration_sec: float = 1.0) -> pd.DataFrame:
    """Runs of one dominant emotion per (root, source, track_id), flickers merged away.

    A run is consecutive non-empty bins (empty bins are skipped, not breaks) with one
    `dominant`; it spans start_sec = its first bin_start to end_sec = its last bin_end.
    Merging, shortest run first, while a run is shorter than `min_duration_sec` and its track
    has another run: if both neighbours show the same emotion the three become one; otherwise
    the flicker joins the neighbour whose emotion the flicker's own faces rated more probable
    (ties: the longer neighbour, then the earlier). A merged run keeps the absorbing emotion.
    Columns: root, source, track_id, emotion, start_sec, end_sec, duration_sec,
    mean_confidence (mean over the run's face rows of p_<emotion>: how strongly the model saw
    the segment's emotion), n_faces.
    """
    tl = timeline_df[(timeline_df["n_faces"] > 0) & timeline_df["dominant"].notna()]
    classes = class_names(tl)
    if not len(tl):
        return pd.DataFrame({c: [] for c in SEGMENT_COLUMNS})
    tl = tl.sort_values(["root", "source", "track_id", "bin_start"], kind="stable")
    trk = tl.groupby(["root", "source", "track_id"], sort=False, dropna=False).ngroup().to_numpy()
    dom = tl["dominant"].to_numpy()
    brk = np.r_[True, (trk[1:] != trk[:-1]) | (dom[1:] != dom[:-1])]
    run = np.cumsum(brk) - 1
    first = np.flatnonzero(brk)
    n = tl["n_faces"].to_numpy(np.float64)
    sums = np.add.reduceat(tl[[f"p_{c}" for c in classes]].to_numpy(np.float64) * n[:, None],
                           first, axis=0)
    runs = pd.DataFrame({
        "trk": trk[first], "emotion": dom[first],
        "start": tl["bin_start"].to_numpy()[first],
        "end": pd.Series(tl["bin_end"].to_numpy()).groupby(run).max().to_numpy(),
        "n": np.add.reduceat(n, first)})
    keys = tl.iloc[first][["root", "source", "track_id"]].reset_index(drop=True)
    keep, merged = _merge_flickers(runs, sums, classes, min_duration_sec)
    cidx = {c: j for j, c in enumerate(classes)}
    out = pd.concat([keys.iloc[keep].reset_index(drop=True),
                     merged.reset_index(drop=True)], axis=1)
    out["mean_confidence"] = [s[cidx[e]] / m for s, e, m in
                              zip(out.pop("sums"), out["emotion"], out["n"], strict=True)]
    out = out.rename(columns={"start": "start_sec", "end": "end_sec", "n": "n_faces"})
    out["duration_sec"] = out["end_sec"] - out["start_sec"]
    out["n_faces"] = out["n_faces"].astype(np.int64)
    out["track_id"] = out["track_id"].astype("Int64")
    return out[SEGMENT_COLUMNS]


def _merge_flickers(runs: pd.DataFrame, sums: np.ndarray, classes: list[str],
                    min_dur: float) -> tuple[np.ndarray, pd.DataFrame]:
    """Merge short runs (see `segments`); returns surviving run indices and their values."""
    emo = runs["emotion"].tolist()
    start, end = runs["start"].to_numpy(float).copy(), runs["end"].to_numpy(float).copy()
    n, sums = runs["n"].to_numpy(float).copy(), sums.copy()
    trk = runs["trk"].to_numpy()
    nr = len(runs)
    prev = np.r_[-1, np.arange(nr - 1)]
    nxt = np.r_[np.arange(1, nr), -1]
    prev[np.r_[True, trk[1:] != trk[:-1]]] = -1  # links stop at track boundaries
    nxt[np.r_[trk[1:] != trk[:-1], True]] = -1
    alive = np.ones(nr, bool)
    version = np.zeros(nr, np.int64)
    cidx = {c: j for j, c in enumerate(classes)}
    heap = [(end[i] - start[i], i, 0) for i in range(nr) if end[i] - start[i] < min_dur]
    heapq.heapify(heap)

    def absorb(into: int, i: int) -> None:
        start[into], end[into] = min(start[into], start[i]), max(end[into], end[i])
        n[into] += n[i]
        sums[into] += sums[i]
        alive[i] = False
        p, q = prev[i], nxt[i]
        if p >= 0:
            nxt[p] = q
        if q >= 0:
            prev[q] = p

    while heap:
        dur, i, ver = heapq.heappop(heap)
        if not alive[i] or ver != version[i]:
            continue
        p, q = prev[i], nxt[i]
        if p < 0 and q < 0:
            continue  # the track's only run: nothing to merge into
        if p >= 0 and q >= 0 and emo[p] == emo[q]:
            absorb(p, i)
            absorb(p, q)
            target = p
        else:
            if p < 0 or q < 0:
                target = p if q < 0 else q
            else:
                sp, sq = sums[i][cidx[emo[p]]], sums[i][cidx[emo[q]]]
                lp, lq = end[p] - start[p], end[q] - start[q]
                target = p if (sp, lp) >= (sq, lq) else q
            absorb(target, i)
        version[target] += 1
        if end[target] - start[target] < min_dur:
            heapq.heappush(heap, (end[target] - start[target], target, version[target]))
    keep = np.flatnonzero(alive)
    merged = pd.DataFrame({"emotion": np.asarray(emo, dtype=object)[keep], "start": start[keep],
                           "end": end[keep], "n": n[keep], "sums": list(sums[keep])})
    return keep, merged
