"""Segments: runs of one emotion per track, decoded from a timeline with a sticky HMM.

Per-frame readings flicker (a talking mouth, a blink, motion blur), and a person's expression
does not. Each track's non-empty bins are the observations of a hidden state: one of the model's
classes, or `uncertain`. A bin of n faces with mean probabilities p gives class c the evidence
n·log p_c, and `uncertain` the evidence n·log(unsure_below): uncertain wins wherever no class's
probability stays above `unsure_below` (the probabilities are calibrated, so below 0.5 the
reading is more often wrong than right). Changing state costs `switch_cost` nats, so a change of
emotion needs evidence over time (about 2 nats per face for p 0.8 against 0.1): a one-face
flicker does not cut a segment, an expression held for half a second at 5 fps does. Viterbi
finds the best state path per track; runs of one state are the segments. The faces table keeps
the raw per-face probabilities; only segments are decoded.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

from batchemo.analysis.columns import class_names
from batchemo.config import RunConfig

SEGMENT_COLUMNS = ["root", "source", "track_id", "emotion", "start_sec", "end_sec",
                   "duration_sec", "mean_confidence", "n_faces"]
UNCERTAIN = "uncertain"
SWITCH_COST = RunConfig.segment_switch_cost  # its help says how it was chosen
# Calibrated probabilities: under this, the top class is more often wrong than right.
UNSURE_BELOW = 0.45


def segments(timeline_df: pd.DataFrame, min_duration_sec: float = 1.0,
             switch_cost: float = SWITCH_COST, unsure_below: float = UNSURE_BELOW) -> pd.DataFrame:
    """Runs of one decoded state per (root, source, track_id) (module docstring), then flickers
    shorter than `min_duration_sec` merged away.

    Empty bins are skipped, not breaks; a run spans start_sec = its first bin_start to end_sec =
    its last bin_end. Merging, shortest run first, while a run is shorter than
    `min_duration_sec` and its track has another run: if both neighbours show the same emotion
    the three become one; otherwise the flicker joins the neighbour whose emotion the flicker's
    own faces rated more probable (ties: the longer neighbour, then the earlier). With
    `switch_cost` 0 and `unsure_below` 0 the states are the bins' argmax.
    Columns: root, source, track_id, emotion (a class, or `uncertain`), start_sec, end_sec,
    duration_sec, mean_confidence (mean over the run's face rows of p_<emotion>: how strongly
    the model saw the segment's emotion; for `uncertain`, of their top-class probability),
    n_faces.
    """
    tl = timeline_df[timeline_df["n_faces"] > 0]
    classes = class_names(tl)
    if not len(tl):
        return pd.DataFrame({c: [] for c in SEGMENT_COLUMNS})
    tl = tl.sort_values(["root", "source", "track_id", "bin_start"], kind="stable")
    trk = tl.groupby(["root", "source", "track_id"], sort=False, dropna=False).ngroup().to_numpy()
    n = tl["n_faces"].to_numpy(np.float64)
    probs = tl[[f"p_{c}" for c in classes]].to_numpy(np.float64)
    states = np.array([*classes, UNCERTAIN], dtype=object)
    evidence = n[:, None] * np.log(np.clip(np.c_[probs, np.full(len(n), unsure_below)], 1e-6, 1))
    path = viterbi(evidence, np.r_[True, trk[1:] != trk[:-1]], switch_cost)
    dom = states[path]
    brk = np.r_[True, (trk[1:] != trk[:-1]) | (path[1:] != path[:-1])]
    run = np.cumsum(brk) - 1
    first = np.flatnonzero(brk)
    conf = tl["confidence"].to_numpy(np.float64) if "confidence" in tl else probs.max(1)
    # per run: n-weighted sums of p_<class>, of the uncertain evidence and of the top-class p
    weighted = np.c_[probs, np.full(len(n), unsure_below), np.nan_to_num(conf)] * n[:, None]
    sums = np.add.reduceat(weighted, first, axis=0)
    runs = pd.DataFrame({
        "trk": trk[first], "emotion": dom[first],
        "start": tl["bin_start"].to_numpy()[first],
        "end": pd.Series(tl["bin_end"].to_numpy()).groupby(run).max().to_numpy(),
        "n": np.add.reduceat(n, first)})
    keys = tl.iloc[first][["root", "source", "track_id"]].reset_index(drop=True)
    cidx = {c: j for j, c in enumerate(states)}
    keep, merged = _merge_flickers(runs, sums, cidx, min_duration_sec)
    out = pd.concat([keys.iloc[keep].reset_index(drop=True),
                     merged.reset_index(drop=True)], axis=1)
    top = len(states)  # the top-class column of `sums`
    out["mean_confidence"] = [s[top if e == UNCERTAIN else cidx[e]] / m for s, e, m in
                              zip(out.pop("sums"), out["emotion"], out["n"], strict=True)]
    out = out.rename(columns={"start": "start_sec", "end": "end_sec", "n": "n_faces"})
    out["duration_sec"] = out["end_sec"] - out["start_sec"]
    out["n_faces"] = out["n_faces"].astype(np.int64)
    out["track_id"] = out["track_id"].astype("Int64")
    return out[SEGMENT_COLUMNS]


def viterbi(evidence: np.ndarray, starts: np.ndarray, switch_cost: float) -> np.ndarray:
    """The best state per row of `evidence` (N, S log-likelihoods) under a sticky chain: any
    change of state costs `switch_cost`; `starts` marks each sequence's first row (sequences
    are decoded independently, no cost to start). Ties keep the current state."""
    n, s = evidence.shape
    back = np.empty((n, s), np.int32)
    ends = np.r_[starts[1:], True]
    best_end = np.zeros(n, np.int32)
    own = np.arange(s, dtype=np.int32)
    score = np.zeros(s)
    for i in range(n):
        if starts[i]:
            score = evidence[i].copy()
            back[i] = own
        else:
            best = int(score.argmax())
            switched = score[best] - switch_cost
            stay = score >= switched
            back[i] = np.where(stay, own, best)
            score = np.where(stay, score, switched) + evidence[i]
        if ends[i]:
            best_end[i] = score.argmax()
    path = np.empty(n, np.int32)
    state = 0
    for i in range(n - 1, -1, -1):
        if ends[i]:
            state = best_end[i]
        path[i] = state
        state = back[i, state]
    return path


def _merge_flickers(runs: pd.DataFrame, sums: np.ndarray, cidx: dict[str, int],
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
