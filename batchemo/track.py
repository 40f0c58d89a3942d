"""IoU tracker: links the faces of one video across sampled frames into `track_id`s.

This is short-term tracking by box geometry only, not re-identification: it never looks at
what a face looks like. A person who leaves the picture for longer than `max_gap_sec` and comes
back gets a new id; after a hard cut, a different person whose face lands where the previous one
was (same place, similar size, within the gap) continues that person's track. Downstream
statistics per track mean "per continuous appearance", not "per person".

Motion rule. Each track keeps its last box and a centre velocity (pixels/second, the mean of
the latest two frame-to-frame measurements). Its box is predicted forward to the new frame's
time, and a detection may continue it when either
  * IoU(predicted box, detection) >= iou_threshold, or
  * the centre distance is < `centre_frac` × the track's box size (sqrt(w·h)) and the areas
    differ by less than `max_area_ratio` (sampling at 1-2 fps lets a face move further than
    its own width's overlap allows).
Pairs are matched greedily, best first: IoU matches rank above centre-distance matches, which
rank by closeness. Velocity is what keeps two crossing faces apart: at the crossing, each
track's prediction sits on its own face, not on the other one. Two faces of the same size that
move in step and then meet exactly are indistinguishable by geometry; ids may swap there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (K, 4) with every box in `b` (M, 4); boxes are x, y, w, h."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[:, 0], b[:, 1]
    bx2, by2 = bx1 + b[:, 2], by1 + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _sample_interval(times: np.ndarray) -> float:
    """Smallest gap between distinct sampled times: the sampling interval, as far as the faces
    show it (frames with no face leave no row, so the median would overestimate)."""
    gaps = np.diff(np.unique(times))
    return float(gaps.min()) if len(gaps) else 0.0


def assign_tracks(
    frame_index: np.ndarray,
    t_sec: np.ndarray,
    boxes: np.ndarray,
    *,
    iou_threshold: float = 0.3,
    max_gap_sec: float = 1.0,
    centre_frac: float = 0.5,
    max_area_ratio: float = 2.0,
    sample_interval: float | None = None,
) -> np.ndarray:
    """Track ids (N,) int64 for the faces of ONE video, numbered 0, 1, 2… by first appearance.

    `frame_index` (N,), `t_sec` (N,) seconds and `boxes` (N, 4) x, y, w, h describe one face per
    row, rows in any order (sorted internally by t_sec, then frame_index, stably; ties keep
    their input order). See the module docstring for the matching rule. A track survives while
    its face is unseen for at most `max_gap_sec`: it may continue at time t if
    t − t_last_seen − sample_interval <= max_gap_sec, so one missed sample is always bridged.
    `sample_interval` defaults to the smallest gap between distinct times in `t_sec`.
    """
    frame_index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
    t = np.asarray(t_sec, dtype=np.float64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(t)
    if not (len(frame_index) == n == len(boxes)):
        raise ValueError("frame_index, t_sec and boxes must have the same length")
    if n and not np.isfinite(t).all():
        raise ValueError("t_sec must be finite: tracking is for video faces only")
    ids = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return ids
    dt_sample = _sample_interval(t) if sample_interval is None else float(sample_interval)
    limit = max_gap_sec + dt_sample + 1e-9

    order = np.lexsort((frame_index, t))  # stable: equal keys keep input order
    ts, fs = t[order], frame_index[order]
    cuts = np.flatnonzero((np.diff(ts) != 0) | (np.diff(fs) != 0)) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, n]

    # Active tracks as parallel arrays: id, last box, last time, centre velocity.
    tid = np.zeros(0, np.int64)
    tbox = np.zeros((0, 4))
    tlast = np.zeros(0)
    tvel = np.zeros((0, 2))
    tobs = np.zeros(0, np.int64)
    next_id = 0
    for s, e in zip(starts, ends, strict=True):
        now = ts[s]
        rows = order[s:e]
        det = boxes[rows]
        alive = now - tlast <= limit  # tracks unseen for longer are over for good
        tid, tbox, tlast = tid[alive], tbox[alive], tlast[alive]
        tvel, tobs = tvel[alive], tobs[alive]

        pred = tbox.copy()
        pred[:, :2] += tvel * (now - tlast)[:, None]
        score = _affinity(pred, det, iou_threshold, centre_frac, max_area_ratio)
        det_track = np.full(len(rows), -1)
        if score.size:
            flat = np.argsort(-score, axis=None, kind="stable")
            used_t, used_d = set(), set()
            for k in flat:
                if score.flat[k] <= -1:
                    break
                i, j = divmod(int(k), len(rows))
                if i in used_t or j in used_d:
                    continue
                used_t.add(i)
                used_d.add(j)
                det_track[j] = i

        # Update matched tracks; velocity from centre displacement over elapsed time.
        for j, i in enumerate(det_track):
            if i < 0:
                continue
            dt = now - tlast[i]
            if dt > 0:
                v = (det[j, :2] + det[j, 2:] / 2 - tbox[i, :2] - tbox[i, 2:] / 2) / dt
                tvel[i] = v if tobs[i] == 1 else (tvel[i] + v) / 2
            tbox[i], tlast[i], tobs[i] = det[j], now, tobs[i] + 1
            ids[rows[j]] = tid[i]
        new = np.flatnonzero(det_track < 0)
        if len(new):
            new_ids = np.arange(next_id, next_id + len(new))
            next_id += len(new)
            ids[rows[new]] = new_ids
            tid = np.r_[tid, new_ids]
            tbox = np.vstack([tbox, det[new]])
            tlast = np.r_[tlast, np.full(len(new), now)]
            tvel = np.vstack([tvel, np.zeros((len(new), 2))])
            tobs = np.r_[tobs, np.ones(len(new), np.int64)]
    return ids


def _affinity(pred: np.ndarray, det: np.ndarray, iou_threshold: float, centre_frac: float,
              max_area_ratio: float) -> np.ndarray:
    """(K, M) match scores: 1 + IoU for IoU matches, (0, 1] for centre-distance matches,
    -1 where the pair may not match."""
    iou = iou_matrix(pred, det)
    pc = pred[:, None, :2] + pred[:, None, 2:] / 2
    dc = det[None, :, :2] + det[None, :, 2:] / 2
    dist = np.linalg.norm(pc - dc, axis=2)
    size = np.sqrt(np.maximum(pred[:, 2] * pred[:, 3], 1e-9))[:, None]
    area_p = (pred[:, 2] * pred[:, 3])[:, None]
    area_d = (det[:, 2] * det[:, 3])[None, :]
    ratio = np.maximum(area_p, area_d) / np.maximum(np.minimum(area_p, area_d), 1e-9)
    near = (dist < centre_frac * size) & (ratio < max_area_ratio)
    score = np.where(near, 1 - dist / (centre_frac * size), -1.0)
    return np.where(iou >= iou_threshold, 1 + iou, score)


def add_track_ids(faces: pd.DataFrame, **kwargs: float) -> pd.DataFrame:
    """A copy of a faces table with `track_id` filled by `assign_tracks`, video by video
    (root, source); image rows get null. `kwargs` go to `assign_tracks`."""
    out = faces.copy()
    ids = np.full(len(out), -1, dtype=np.int64)
    video = (out["media_type"] == "video").to_numpy() & out["t_sec"].notna().to_numpy()
    for rows in out[video].groupby(["root", "source"], sort=False).indices.values():
        pos = np.flatnonzero(video)[rows]
        sub = out.iloc[pos]
        ids[pos] = assign_tracks(sub["frame_index"].to_numpy(), sub["t_sec"].to_numpy(float),
                                 sub[["x", "y", "w", "h"]].to_numpy(float), **kwargs)
    out["track_id"] = pd.arrays.IntegerArray(np.where(ids < 0, 0, ids), ids < 0)
    return out
