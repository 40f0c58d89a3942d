"""Per-video timelines: faces binned in time per track and smoothed (segments.py cuts them).

One code path (`_timeline_block`) handles any set of complete videos with array operations,
so `timeline` (in memory) and `timeline_stream.iter_timeline_parquet` (streaming, a block of
whole videos at a time) give identical rows, in time linear in the face rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from batchemo.analysis.columns import as_frame, class_names, dominant_array, valence_array
from batchemo.choices import SMOOTHING

_EPS = 1e-9  # t_sec / bin_sec in floating point: 0.3 / 0.1 must land in bin 3, not 2


def timeline(
    faces: pd.DataFrame | pa.Table,
    frames: pd.DataFrame | pa.Table | None = None,
    bin_sec: float = 1.0,
    smoothing: str = "ema",
    window_sec: float = 3.0,
) -> pd.DataFrame:
    """Binned emotion timeline per video (root, source), per track_id, per time bin.

    Bins are [k·bin_sec, (k+1)·bin_sec) from t = 0. Images are left out. Rows, sorted by root,
    source, track_id (null first), bin_start:
      * one per bin from a track's first to its last bin, gaps included (n_faces 0);
      * rows with track_id null and n_faces 0 for the video's bins where no face was seen at
        all (up to the video's end = its last sampled t_sec, from `frames` when given), so the
        rows of a video cover every bin without growing with tracks × duration. Untracked faces
        (track_id null) form one group of their own.
    Columns: root, source, track_id (Int64), bin_start, bin_end, n_frames (sampled frames in
    the bin: from `frames`, else frames holding a face), n_faces (face rows of the track),
    p_<class> (mean probability), smooth_<class> (smoothed p_<class>; null in empty bins),
    dominant (argmax of smooth_*), confidence (mean top-class probability of the bin's face
    rows, not smoothed; null in empty bins), valence (of the
    p_<class> means; see columns.valence).

    Smoothing runs per track over its non-empty bins, per class:
      * "ema": s = x at the first bin, then s ← s + (1 − (1 − α)^Δ)·(x − s), where Δ is the
        number of bins since the last non-empty bin and α = 2 / (span + 1), span =
        max(window_sec / bin_sec, 1) (pandas' span convention). Causal: it lags.
      * "median": centred running median over w = round(window_sec / bin_sec) bins (w + 1 if
        even), ignoring empty bins. Per class, so a bin's values need not sum to 1.
      * "none": smooth_* = p_*.
    """
    faces, frames = as_frame(faces), as_frame(frames)
    _check(bin_sec, smoothing, window_sec)
    classes = class_names(faces)
    video = _video_rows(faces)
    times = _frame_times(frames) if frames is not None else {}
    keys = set(map(tuple, video[["root", "source"]].drop_duplicates().to_numpy())) | set(times)
    return _timeline_block(video, times, sorted(keys), classes, bin_sec, smoothing, window_sec)


def timeline_schema(classes: list[str]) -> pa.Schema:
    """The Arrow schema of a timeline table (fixed, so empty blocks write the same types)."""
    f64 = pa.float64()
    fields = [("root", pa.string()), ("source", pa.string()), ("track_id", pa.int64()),
              ("bin_start", f64), ("bin_end", f64), ("n_frames", pa.int64()),
              ("n_faces", pa.int64())]
    fields += [(f"p_{c}", f64) for c in classes] + [(f"smooth_{c}", f64) for c in classes]
    fields += [("dominant", pa.string()), ("confidence", f64), ("valence", f64)]
    return pa.schema(fields)


def _check(bin_sec: float, smoothing: str, window_sec: float) -> None:
    if not bin_sec > 0:
        raise ValueError(f"bin_sec must be > 0, got {bin_sec}")
    if smoothing not in SMOOTHING:
        raise ValueError(f"smoothing must be one of {SMOOTHING}, got {smoothing!r}")
    if not window_sec >= 0:
        raise ValueError(f"window_sec must be >= 0, got {window_sec}")


def _video_rows(faces: pd.DataFrame) -> pd.DataFrame:
    if "media_type" in faces:
        faces = faces[faces["media_type"] == "video"]
    return faces[faces["t_sec"].notna()]


def _frame_times(frames: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    f = frames[frames["t_sec"].notna()]
    return {k: g.to_numpy(np.float64) for k, g in f.groupby(["root", "source"])["t_sec"]}


def _bins(t: np.ndarray, bin_sec: float) -> np.ndarray:
    return np.maximum(np.floor(np.asarray(t, np.float64) / bin_sec + _EPS), 0).astype(np.int64)


def _timeline_block(faces: pd.DataFrame, times: dict, keys: list[tuple[str, str]],
                    classes: list[str], bin_sec: float, smoothing: str,
                    window_sec: float) -> pd.DataFrame:
    """Timeline rows for the videos `keys` (all their face rows are in `faces`)."""
    keys = sorted(keys)
    kidx = pd.MultiIndex.from_tuples(keys, names=["root", "source"]) if keys else None
    nv, nc = len(keys), len(classes)
    vid = (kidx.get_indexer(pd.MultiIndex.from_frame(faces[["root", "source"]]))
           if len(faces) else np.zeros(0, np.int64))
    t = faces["t_sec"].to_numpy(np.float64)
    b = _bins(t, bin_sec)
    tr = (faces["track_id"].astype("Float64").fillna(-1).to_numpy(np.int64)
          if "track_id" in faces else np.full(len(faces), -1, np.int64))
    probs = faces[[f"p_{c}" for c in classes]].to_numpy(np.float64, na_value=np.nan)
    conf = (faces["confidence"].to_numpy(np.float64, na_value=np.nan) if "confidence" in faces
            else probs.max(axis=1) if nc else np.full(len(faces), np.nan))

    # Face rows → one aggregate per (video, track, bin).
    order = np.lexsort((b, tr, vid))
    vid, tr, b, probs, conf = vid[order], tr[order], b[order], probs[order], conf[order]
    new = np.r_[True, (vid[1:] != vid[:-1]) | (tr[1:] != tr[:-1]) | (b[1:] != b[:-1])][: len(b)]
    first = np.flatnonzero(new)
    count = np.diff(np.r_[first, len(b)])
    g_vid, g_tr, g_b = vid[first], tr[first], b[first]
    g_p = np.add.reduceat(probs, first, axis=0) / count[:, None] if len(first) else probs[:0]
    g_conf = np.add.reduceat(conf, first) / count if len(first) else conf[:0]

    # Video length in bins: up to the last sampled time (frames table, else faces).
    last = np.full(nv, -np.inf)
    n_frames = []
    t_sorted = t[order]
    bounds = np.searchsorted(vid, np.arange(nv + 1))  # vid is the primary sort key
    for i, k in enumerate(keys):
        own = t_sorted[bounds[i] : bounds[i + 1]]
        ft = times.get(k)
        if ft is None or not len(ft):  # no frames table: the frames that hold a face
            ft = np.unique(own)
        last[i] = max(ft.max() if len(ft) else -np.inf, own.max() if len(own) else -np.inf)
        n_frames.append(ft)
    nbins = np.where(np.isfinite(last), _bins(np.maximum(last, 0), bin_sec) + 1, 0)
    voff = np.r_[0, np.cumsum(nbins)]
    frames_per_bin = np.zeros(voff[-1], np.int64)
    for i, ft in enumerate(n_frames):
        if len(ft):
            np.add.at(frames_per_bin, voff[i] + _bins(ft, bin_sec), 1)

    # Each track spans its first..last bin; empty bins inside are explicit rows.
    tnew = np.r_[True, (g_vid[1:] != g_vid[:-1]) | (g_tr[1:] != g_tr[:-1])][: len(first)]
    tfirst = np.flatnonzero(tnew)
    tlast_ = (np.r_[tfirst[1:], len(g_b)] - 1)[: len(tfirst)]
    lo, hi = g_b[tfirst], g_b[tlast_]
    length = hi - lo + 1
    tstart = np.r_[0, np.cumsum(length)][:-1]
    tid_of_g = np.cumsum(tnew) - 1
    pos = tstart[tid_of_g] + (g_b - lo[tid_of_g])
    total = int(length.sum())
    r_track = np.repeat(np.arange(len(tfirst)), length)
    r_vid, r_tr = g_vid[tfirst][r_track], g_tr[tfirst][r_track]
    r_b = lo[r_track] + (np.arange(total) - tstart[r_track])
    r_n = np.zeros(total, np.int64)
    r_n[pos] = count
    r_p = np.full((total, nc), np.nan)
    r_p[pos] = g_p
    r_conf = np.full(total, np.nan)
    r_conf[pos] = g_conf
    r_s = _smooth(r_p, tstart, length, smoothing, window_sec / bin_sec)

    # Bins where nobody is on screen (and that an untracked group does not already cover).
    covered = np.zeros(voff[-1], bool)
    covered[voff[g_vid] + g_b] = True
    null = r_tr == -1
    covered[voff[r_vid[null]] + r_b[null]] = True
    fill = np.flatnonzero(~covered)
    f_vid = np.searchsorted(voff, fill, side="right") - 1
    f_b = fill - voff[f_vid]

    a_vid = np.r_[r_vid, f_vid]
    a_tr = np.r_[r_tr, np.full(len(fill), -1)]
    a_b = np.r_[r_b, f_b]
    out_order = np.lexsort((a_b, a_tr, a_vid))
    a_vid, a_tr, a_b = a_vid[out_order], a_tr[out_order], a_b[out_order]
    pad = np.full((len(fill), nc), np.nan)
    a_p = np.vstack([r_p, pad])[out_order]
    a_s = np.vstack([r_s, pad])[out_order]
    roots = np.array([k[0] for k in keys] + [""], dtype=object)
    sources = np.array([k[1] for k in keys] + [""], dtype=object)
    data = {
        "root": pd.Series(roots[a_vid], dtype=object),
        "source": pd.Series(sources[a_vid], dtype=object),
        "track_id": pd.arrays.IntegerArray(np.where(a_tr < 0, 0, a_tr), a_tr < 0),
        "bin_start": a_b * bin_sec, "bin_end": (a_b + 1) * bin_sec,
        "n_frames": frames_per_bin[voff[a_vid] + a_b] if len(a_b) else np.zeros(0, np.int64),
        "n_faces": np.r_[r_n, np.zeros(len(fill), np.int64)][out_order],
    }
    data.update({f"p_{c}": a_p[:, j] for j, c in enumerate(classes)})
    data.update({f"smooth_{c}": a_s[:, j] for j, c in enumerate(classes)})
    # Explicit object dtype: pandas 3 would infer "str" for some blocks and object for
    # all-null ones, and blocks must concatenate to one type.
    data["dominant"] = pd.Series(dominant_array(a_s, classes), dtype=object)
    data["confidence"] = np.r_[r_conf, np.full(len(fill), np.nan)][out_order]
    data["valence"] = valence_array(a_p, classes)
    return pd.DataFrame(data)


def _smooth(p: np.ndarray, start: np.ndarray, length: np.ndarray, how: str,
            window_bins: float) -> np.ndarray:
    """Smooth each track's run of rows p[start:start+length] (NaN rows are empty bins)."""
    if how == "none" or not len(p):
        return p.copy()
    if how == "median":
        w = max(1, round(window_bins))
        w += 1 - w % 2
        gid = np.repeat(np.arange(len(start)), length)
        med = pd.DataFrame(p).groupby(gid).rolling(w, center=True, min_periods=1).median()
        out = med.to_numpy(copy=True)
        out[np.isnan(p)] = np.nan
        return out
    alpha = 2.0 / (max(window_bins, 1.0) + 1.0)
    out = np.full_like(p, np.nan)
    # Step k of every track at once; tracks sorted longest first, so the active ones are a
    # prefix. Python loops over the longest track's bins, numpy over tracks.
    by_len = np.argsort(-length, kind="stable")
    starts_sorted, len_sorted = start[by_len], length[by_len]
    state = np.full((len(start), p.shape[1]), np.nan)
    last_k = np.zeros(len(start))
    for k in range(int(len_sorted[0]) if len(len_sorted) else 0):
        m = int(np.searchsorted(-len_sorted, -k, side="left"))  # tracks with length > k
        rows = starts_sorted[:m] + k
        x = p[rows]
        obs = ~np.isnan(x).all(axis=1)
        if not obs.any():
            continue
        st = state[:m]
        fresh = obs & np.isnan(st).all(axis=1)
        cont = obs & ~fresh
        w = 1.0 - (1.0 - alpha) ** (k - last_k[:m][cont])
        st[cont] += w[:, None] * (x[cont] - st[cont])
        st[fresh] = x[fresh]
        last_k[:m][obs] = k
        out[rows[obs]] = st[obs]
    return out
