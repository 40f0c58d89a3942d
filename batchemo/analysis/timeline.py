"""Per-video timelines: faces binned in time per track and smoothed (segments.py cuts them).

A timeline costs what the faces cost, never what the time span costs: a video whose
timestamps jump by 1e12 s (a broken muxer, a camera clock reset) has as many rows as one that
does not. Bins hold faces; an empty stretch between them, however long, is ONE row (a "gap"
row: n_faces 0, bin_end − bin_start a whole number of bins). So a video's rows number at most
3 × its (track, bin) pairs that hold faces, plus 1 — and time stays covered: every instant
from 0 to the video's last sampled frame lies in a row of a track or of the null track.

`timelines_and_segments` is what the run's derived tables, plots, report and annotate use:
a video whose rows cannot be made (a bug, a limit) is logged and left out, the others kept.

One code path (`timeline_block`) handles any set of complete videos with array operations,
so `timeline` (in memory) and `timeline_stream.iter_timeline_parquet` (streaming, a block of
whole videos at a time) give identical rows, in time linear in the face and frame rows.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from batchemo.analysis.columns import as_frame, class_names, dominant_array, valence_array
from batchemo.choices import SMOOTHING

log = logging.getLogger("batchemo")
_EPS = 1e-9  # t_sec / bin_sec in floating point: 0.3 / 0.1 must land in bin 3, not 2
# Bins past this share the last one: an int64 bin index and its float64 edge stay exact.
MAX_BIN = 2**53
_MEDIAN_CELLS = 4_000_000  # rows × window × classes held at once by the median smoother


@dataclass(frozen=True)
class TimelineParams:
    """How a timeline bins and smooths; checked on creation (ValueError)."""

    bin_sec: float = 1.0
    smoothing: str = "ema"
    window_sec: float = 3.0

    def __post_init__(self) -> None:
        if not (self.bin_sec > 0 and math.isfinite(self.bin_sec)):
            raise ValueError(f"bin_sec must be a finite number > 0, got {self.bin_sec}")
        if self.smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {self.smoothing!r}")
        if not (self.window_sec >= 0 and math.isfinite(self.window_sec)):
            raise ValueError(f"window_sec must be a finite number >= 0, got {self.window_sec}")


def timeline(
    faces: pd.DataFrame | pa.Table,
    frames: pd.DataFrame | pa.Table | None = None,
    bin_sec: float = 1.0,
    smoothing: str = "ema",
    window_sec: float = 3.0,
) -> pd.DataFrame:
    """Binned emotion timeline per video (root, source), per track_id, per time bin.

    Bins are [k·bin_sec, (k+1)·bin_sec) from t = 0. Images, and faces whose t_sec is null or
    not finite, are left out. Rows, sorted by root, source, track_id (null first), bin_start:
      * one per bin in which a track (or the untracked faces: track_id null) has faces;
      * per track, one gap row (n_faces 0) for each empty stretch between two of its bins,
        spanning the whole stretch (bin_start = the end of the bin before, bin_end = the start
        of the bin after);
      * track_id null, n_faces 0: one row per stretch of bins where no face at all was seen,
        from t = 0 to the video's end (its last sampled t_sec, from `frames` when given), so
        a video with frames but no face still has a row.
    A row with faces spans one bin; a gap row spans one bin or many. Columns: root, source,
    track_id (Int64), bin_start, bin_end, n_frames (sampled frames in the row's span: from
    `frames`, else frames holding a face), n_faces (face rows of the track), p_<class> (mean
    probability), smooth_<class> (smoothed p_<class>; null in gap rows), dominant (argmax of
    smooth_*), confidence (mean top-class probability of the bin's face rows, not smoothed;
    null in gap rows), valence (of the p_<class> means; see columns.valence).

    Smoothing runs per track over its bins with faces, per class:
      * "ema": s = x at the first bin, then s ← s + (1 − (1 − α)^Δ)·(x − s), where Δ is the
        number of bins since the track's previous bin and α = 2 / (span + 1), span =
        max(window_sec / bin_sec, 1) (pandas' span convention). Causal: it lags.
      * "median": centred running median over the track's bins within w // 2 bins of each
        bin, w = round(window_sec / bin_sec) (w + 1 if even). Per class, so a bin's values
        need not sum to 1.
      * "none": smooth_* = p_*.
    """
    params = TimelineParams(bin_sec, smoothing, window_sec)
    faces, frames = as_frame(faces), as_frame(frames)
    classes = class_names(faces)
    video = video_face_rows(faces)
    times = frame_times(frames) if frames is not None else {}
    keys = set(map(tuple, video[["root", "source"]].drop_duplicates().to_numpy())) | set(times)
    return timeline_block(video, times, sorted(keys), classes, params)


def timelines_and_segments(
    faces: pd.DataFrame | pa.Table,
    frames: pd.DataFrame | pa.Table | None = None,
    *,
    bin_sec: float = 1.0,
    smoothing: str = "ema",
    window_sec: float = 3.0,
    min_segment_sec: float = 1.0,
    switch_cost: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`timeline` and `segments` of every video in `faces`/`frames` (`switch_cost` None:
    segments' default); a video whose rows cannot be made (any exception) is logged as a
    WARNING and left out of both, the others kept. Bad arguments still raise ValueError."""
    from batchemo.analysis import segments as segments_module

    def segments(tl: pd.DataFrame, min_duration_sec: float) -> pd.DataFrame:
        extra = {} if switch_cost is None else {"switch_cost": switch_cost}
        return segments_module.segments(tl, min_duration_sec, **extra)

    params = TimelineParams(bin_sec, smoothing, window_sec)
    faces, frames = as_frame(faces), as_frame(frames)
    try:  # all videos at once: one call, the fast path
        tl = timeline(faces, frames, bin_sec, smoothing, window_sec)
        return tl, segments(tl, min_segment_sec)
    except Exception:  # noqa: BLE001 - find the video(s) at fault, one by one
        pass
    classes = class_names(faces)
    video = video_face_rows(faces)
    times = frame_times(frames) if frames is not None else {}
    rows_of = dict(iter(video.groupby(["root", "source"], sort=False)))
    keys = sorted(set(rows_of) | set(times))
    tls, segs = [], []
    for key in keys:
        try:
            own = rows_of.get(key, video.iloc[:0])
            tl = timeline_block(own, {key: times[key]} if key in times else {}, [key], classes,
                                params)
            seg = segments(tl, min_segment_sec)
        except Exception as e:  # noqa: BLE001 - any bug or limit: this video only
            log.warning("%s: left out of the timeline and segments: %s: %s", key[1],
                        type(e).__name__, e,
                        extra={"fields": {"event": "derive_failed", "root": key[0],
                                          "source": key[1], "error": str(e)}})
            continue
        tls.append(tl)
        segs.append(seg)
    empty = timeline_block(video.iloc[:0], {}, [], classes, params)
    tl = pd.concat([empty, *tls], ignore_index=True) if tls else empty
    return tl, (pd.concat(segs, ignore_index=True) if segs else segments(empty, min_segment_sec))


def timeline_schema(classes: list[str]) -> pa.Schema:
    """The Arrow schema of a timeline table (fixed, so empty blocks write the same types)."""
    f64 = pa.float64()
    fields = [("root", pa.string()), ("source", pa.string()), ("track_id", pa.int64()),
              ("bin_start", f64), ("bin_end", f64), ("n_frames", pa.int64()),
              ("n_faces", pa.int64())]
    fields += [(f"p_{c}", f64) for c in classes] + [(f"smooth_{c}", f64) for c in classes]
    fields += [("dominant", pa.string()), ("confidence", f64), ("valence", f64)]
    return pa.schema(fields)


def video_face_rows(faces: pd.DataFrame) -> pd.DataFrame:
    """The face rows a timeline places: videos' rows with a finite t_sec."""
    if "media_type" in faces:
        faces = faces[faces["media_type"] == "video"]
    t = pd.to_numeric(faces["t_sec"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return faces[np.isfinite(t)]


def frame_times(frames: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """Sampled times per video (root, source) from a frames table (finite t_sec only)."""
    t = pd.to_numeric(frames["t_sec"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    f = frames[np.isfinite(t)]
    return {k: g.to_numpy(np.float64) for k, g in f.groupby(["root", "source"])["t_sec"]}


def _bins(t: np.ndarray, bin_sec: float) -> np.ndarray:
    k = np.floor(np.asarray(t, np.float64) / bin_sec + _EPS)
    return np.clip(k, 0, MAX_BIN).astype(np.int64)


def timeline_block(faces: pd.DataFrame, times: dict[tuple[str, str], np.ndarray],
                   keys: list[tuple[str, str]], classes: list[str],
                   params: TimelineParams) -> pd.DataFrame:
    """Timeline rows (see `timeline`) of the videos `keys`, given ALL their face rows in `faces`
    (as `video_face_rows` gives them) and their sampled times in `times` (`frame_times`)."""
    keys = sorted(keys)
    nv, nc, bin_sec = len(keys), len(classes), params.bin_sec
    kidx = pd.MultiIndex.from_tuples(keys, names=["root", "source"]) if keys else None
    vid = (kidx.get_indexer(pd.MultiIndex.from_frame(faces[["root", "source"]]))
           if len(faces) else np.zeros(0, np.int64))
    t = faces["t_sec"].to_numpy(np.float64)
    b = _bins(t, bin_sec)
    tr = (faces["track_id"].astype("Float64").fillna(-1).to_numpy(np.int64)
          if "track_id" in faces else np.full(len(faces), -1, np.int64))
    probs = faces[[f"p_{c}" for c in classes]].to_numpy(np.float64, na_value=np.nan)
    conf = (faces["confidence"].to_numpy(np.float64, na_value=np.nan) if "confidence" in faces
            else probs.max(axis=1) if nc else np.full(len(faces), np.nan))

    # Face rows → one aggregate per (video, track, bin), sorted so.
    order = np.lexsort((b, tr, vid))
    vid, tr, b, probs, conf = vid[order], tr[order], b[order], probs[order], conf[order]
    new = np.r_[True, (vid[1:] != vid[:-1]) | (tr[1:] != tr[:-1]) | (b[1:] != b[:-1])][: len(b)]
    first = np.flatnonzero(new)
    count = np.diff(np.r_[first, len(b)])
    g_vid, g_tr, g_b = vid[first], tr[first], b[first]
    g_p = np.add.reduceat(probs, first, axis=0) / count[:, None] if len(first) else probs[:0]
    g_conf = np.add.reduceat(conf, first) / count if len(first) else conf[:0]
    track_new = np.r_[True, (g_vid[1:] != g_vid[:-1]) | (g_tr[1:] != g_tr[:-1])][: len(g_b)]
    g_s = _smooth(g_p, g_b, np.cumsum(track_new) - 1, params)

    # Sampled frames (one entry each) and each video's last bin.
    f_vid, f_b = _frame_bins(keys, times, vid, t[order], bin_sec)
    end = np.full(nv, -1, np.int64)
    np.maximum.at(end, f_vid, f_b)
    np.maximum.at(end, g_vid, g_b)

    # Gap rows: inside each track, then where nobody is on screen (the null track).
    inside = np.flatnonzero(~track_new[1:] & (g_tr[1:] >= 0) & (g_b[1:] > g_b[:-1] + 1))
    nobody_vid, nobody_lo, nobody_hi = _faceless_stretches(g_vid, g_b, end)
    a_vid = np.r_[g_vid, g_vid[inside], nobody_vid]
    a_tr = np.r_[g_tr, g_tr[inside], np.full(len(nobody_vid), -1, np.int64)]
    a_lo = np.r_[g_b, g_b[inside] + 1, nobody_lo]
    a_hi = np.r_[g_b, g_b[inside + 1] - 1, nobody_hi]
    n_gap = len(a_vid) - len(g_b)
    n_frames = _count_in(f_vid, f_b, a_vid, a_lo, a_hi)

    out = np.lexsort((a_lo, a_tr, a_vid))
    a_vid, a_tr, a_lo, a_hi = a_vid[out], a_tr[out], a_lo[out], a_hi[out]
    pad = np.full((n_gap, nc), np.nan)
    a_p = np.vstack([g_p, pad])[out]
    a_s = np.vstack([g_s, pad])[out]
    roots = np.array([k[0] for k in keys] + [""], dtype=object)
    sources = np.array([k[1] for k in keys] + [""], dtype=object)
    data = {
        "root": pd.Series(roots[a_vid], dtype=object),
        "source": pd.Series(sources[a_vid], dtype=object),
        "track_id": pd.arrays.IntegerArray(np.where(a_tr < 0, 0, a_tr), a_tr < 0),
        "bin_start": a_lo * bin_sec, "bin_end": (a_hi + 1) * bin_sec,
        "n_frames": n_frames[out],
        "n_faces": np.r_[count, np.zeros(n_gap, np.int64)][out],
    }
    data.update({f"p_{c}": a_p[:, j] for j, c in enumerate(classes)})
    data.update({f"smooth_{c}": a_s[:, j] for j, c in enumerate(classes)})
    # Explicit object dtype: pandas 3 would infer "str" for some blocks and object for
    # all-null ones, and blocks must concatenate to one type.
    data["dominant"] = pd.Series(dominant_array(a_s, classes), dtype=object)
    data["confidence"] = np.r_[g_conf, np.full(n_gap, np.nan)][out]
    data["valence"] = valence_array(a_p, classes)
    return pd.DataFrame(data)


def _frame_bins(keys: list[tuple[str, str]], times: dict, face_vid: np.ndarray,
                face_t: np.ndarray, bin_sec: float) -> tuple[np.ndarray, np.ndarray]:
    """(video index, bin) per sampled frame; a video missing from `times` counts the distinct
    times of its faces instead (the frames that hold a face)."""
    vids, ts, missing = [], [], []
    for i, k in enumerate(keys):
        ft = times.get(k)
        if ft is None or not len(ft):
            missing.append(i)
        else:
            vids.append(np.full(len(ft), i, np.int64))
            ts.append(ft)
    m = np.isin(face_vid, missing)
    if m.any():
        pairs = pd.DataFrame({"v": face_vid[m], "t": face_t[m]}).drop_duplicates()
        vids.append(pairs["v"].to_numpy(np.int64))
        ts.append(pairs["t"].to_numpy(np.float64))
    if not vids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(vids), _bins(np.concatenate(ts), bin_sec)


def _faceless_stretches(g_vid: np.ndarray, g_b: np.ndarray,
                        end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video, first bin, last bin) of each stretch of bins 0..end[video] that hold no face."""
    nv = len(end)
    # Each video's distinct face bins between two sentinels: bin −1 and bin end + 1.
    v = np.r_[np.arange(nv), g_vid, np.arange(nv)]
    b = np.r_[np.full(nv, -1, np.int64), g_b, end + 1]
    order = np.lexsort((b, v))
    v, b = v[order], b[order]
    gap = np.flatnonzero((v[1:] == v[:-1]) & (b[1:] > b[:-1] + 1))
    return v[gap], b[gap] + 1, b[gap + 1] - 1


def _count_in(f_vid: np.ndarray, f_b: np.ndarray, q_vid: np.ndarray, q_lo: np.ndarray,
              q_hi: np.ndarray) -> np.ndarray:
    """Per query, the sampled frames of video q_vid whose bin lies in [q_lo, q_hi]."""
    nq, nf = len(q_vid), len(f_vid)
    if not nq:
        return np.zeros(0, np.int64)
    # One sort of (video, bin, kind): a query's lower edge sorts before the frames of its bin,
    # its upper edge after them; frames between the two edges are the count.
    v = np.r_[q_vid, f_vid, q_vid]
    b = np.r_[q_lo, f_b, q_hi]
    kind = np.r_[np.zeros(nq, np.int8), np.ones(nf, np.int8), np.full(nq, 2, np.int8)]
    order = np.lexsort((kind, b, v))
    frames_upto = np.cumsum(kind[order] == 1)
    at = np.empty(len(order), np.int64)
    at[order] = np.arange(len(order))
    return frames_upto[at[nq + nf :]] - frames_upto[at[:nq]]


def _smooth(p: np.ndarray, bins: np.ndarray, track: np.ndarray,
            params: TimelineParams) -> np.ndarray:
    """Smooth each track's rows of p (sorted by track, then bin; all-NaN rows are skipped)."""
    how, window_bins = params.smoothing, params.window_sec / params.bin_sec
    if how == "none" or not len(p):
        return p.copy()
    if how == "median":
        return _running_median(p, bins, track, window_bins)
    alpha = 2.0 / (max(window_bins, 1.0) + 1.0)
    start = np.flatnonzero(np.r_[True, track[1:] != track[:-1]])
    length = np.diff(np.r_[start, len(p)])
    out = np.full_like(p, np.nan)
    # Step k of every track at once; tracks sorted longest first, so the active ones are a
    # prefix. Python loops over the longest track's rows, numpy over tracks.
    by_len = np.argsort(-length, kind="stable")
    starts_sorted, len_sorted = start[by_len], length[by_len]
    state = np.full((len(start), p.shape[1]), np.nan)
    last_bin = np.zeros(len(start), np.int64)
    for k in range(int(len_sorted[0])):
        m = int(np.searchsorted(-len_sorted, -k, side="left"))  # tracks with length > k
        rows = starts_sorted[:m] + k
        x = p[rows]
        obs = ~np.isnan(x).all(axis=1)
        if not obs.any():
            continue
        st = state[:m]
        fresh = obs & np.isnan(st).all(axis=1)
        cont = obs & ~fresh
        # Δ can be 1e12 bins: (1 − α)^Δ underflows to 0, the new bin simply takes over.
        w = 1.0 - (1.0 - alpha) ** (bins[rows][cont] - last_bin[:m][cont]).astype(np.float64)
        st[cont] += w[:, None] * (x[cont] - st[cont])
        st[fresh] = x[fresh]
        last_bin[:m][obs] = bins[rows][obs]
        out[rows[obs]] = st[obs]
    return out


def _running_median(p: np.ndarray, bins: np.ndarray, track: np.ndarray,
                    window_bins: float) -> np.ndarray:
    w = max(1, round(window_bins))
    half = (w + 1 - w % 2) // 2
    # A track's bins are distinct and sorted, so the bins within ±half of a row lie within
    # ±half rows of it: gather those neighbours, NaN where out of the window or the track.
    offsets = np.arange(-half, half + 1)
    step = max(1, _MEDIAN_CELLS // (len(offsets) * max(p.shape[1], 1)))
    out = np.empty_like(p)
    for lo in range(0, len(p), step):
        rows = np.arange(lo, min(lo + step, len(p)))
        raw = rows[:, None] + offsets[None, :]
        nb = np.clip(raw, 0, len(p) - 1)
        ok = ((raw == nb) & (track[nb] == track[rows][:, None])
              & (np.abs(bins[nb] - bins[rows][:, None]) <= half))
        vals = np.where(ok[:, :, None], p[nb], np.nan)
        with warnings.catch_warnings():  # an all-NaN window (a NaN row) gives NaN: wanted
            warnings.simplefilter("ignore", RuntimeWarning)
            out[rows] = np.nanmedian(vals, axis=1)
    out[np.isnan(p)] = np.nan
    return out
