"""Segments: runs of one emotion per track, cut from a timeline."""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

from batchemo.analysis.columns import class_names

SEGMENT_COLUMNS = ["root", "source", "track_id", "emotion", "start_sec", "end_sec",
                   "duration_sec", "mean_confidence", "n_faces"]


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
