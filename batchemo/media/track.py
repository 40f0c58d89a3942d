"""Tracker: links the faces of one video across sampled frames into `track_id`s.

Short-term tracking by box geometry and motion, not re-identification: it never looks at what a
face looks like. Per-track statistics mean "per continuous appearance within one shot".

1. Online pass, frame by frame, two stages as in ByteTrack: detections scoring at least
   `high_score` are matched to the tracks first; the tracks left may then be continued by the
   weaker detections (a face half turned away keeps its track, and a weak detection never takes
   a track from a strong one). A track's box is predicted forward with its centre velocity (least
   squares over its latest four faces, so one jittery box moves it little), and a detection may
   continue it when either
     * IoU(predicted box, detection) >= iou_threshold, or
     * the centre distance is < `centre_frac` × the track's box size (sqrt(w·h)), a quarter
       wider after a missed sample, and the areas differ by less than `max_area_ratio`
       (sampled at 1-5 fps a face moves further than its overlap allows).
   Pairs are matched greedily, best first: IoU matches rank above centre-distance matches.
   Unmatched detections start tracks. Velocity keeps two crossing faces apart. Online, a track
   waits for one missed sample only: over longer gaps a prediction strays.
2. A hard cut (`cut_frames`, found by `ShotCuts` while decoding) ends every track: a different
   person whose face lands where the previous one was is not continued.
3. Gap bridging, offline over the whole video: a track that ended is joined to one that starts
   within `max_gap_sec` after it, in the same shot, when one side's own motion carried across
   the gap lands within `centre_frac` box sizes of the other side (half as much again for long
   gaps); two single faces need a third, later face on their path. Each jump may be up to
   `max_jump` box sizes per sample: this follows a walker crossing close to the camera (1.7
   face widths per sample at 5 fps), which the online gate misses.
4. A weak detection that joined nothing stays untracked (-1, a null `track_id`): as in
   ByteTrack, one low-score detection starts no track.
Two faces of the same size that move in step and then meet exactly are indistinguishable by
geometry; ids may swap there.
"""

from __future__ import annotations

import numpy as np


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
    scores: np.ndarray | None = None,
    cut_frames: np.ndarray | list[int] | None = None,
    iou_threshold: float = 0.3,
    max_gap_sec: float = 1.0,
    centre_frac: float = 0.7,
    max_area_ratio: float = 2.0,
    sample_interval: float | None = None,
    high_score: float = 0.65,
    max_jump: float = 2.5,
) -> np.ndarray:
    """Track ids (N,) int64 for the faces of ONE video, numbered 0, 1, 2… by first appearance;
    -1 for a lone weak detection left untracked (module docstring, step 4).

    `frame_index` (N,), `t_sec` (N,) seconds and `boxes` (N, 4) x, y, w, h describe one face per
    row, rows in any order (sorted internally by t_sec, then frame_index, stably; ties keep
    their input order). `scores` (N,) are detector scores for the two-stage matching (without
    them every detection is 'high'); `cut_frames` are frame indices that start a new shot. See
    the module docstring for the rules. A track survives while its face is unseen for at most
    `max_gap_sec`: it may continue at time t if t − t_last_seen − sample_interval <=
    max_gap_sec, so one missed sample is always bridged. `sample_interval` defaults to the
    smallest gap between distinct times in `t_sec`.
    """
    frame_index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
    t = np.asarray(t_sec, dtype=np.float64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(t)
    if not (len(frame_index) == n == len(boxes)) or (scores is not None and len(scores) != n):
        raise ValueError("frame_index, t_sec, boxes (and scores) must have the same length")
    if n and not np.isfinite(t).all():
        raise ValueError("t_sec must be finite: tracking is for video faces only")
    if n == 0:
        return np.full(0, -1, dtype=np.int64)
    high = np.ones(n, bool) if scores is None else np.asarray(scores, float) >= high_score
    cuts = np.unique(np.asarray(cut_frames if cut_frames is not None else [], np.int64))
    dt_sample = _sample_interval(t) if sample_interval is None else float(sample_interval)
    limit = max_gap_sec + dt_sample + 1e-9
    order = np.lexsort((frame_index, t))  # stable: equal keys keep input order
    shot = np.searchsorted(cuts, frame_index, side="right")  # shot number of each row
    raw = _online(order, t, frame_index, shot, boxes, high, limit, dt_sample, iou_threshold,
                  centre_frac, max_area_ratio)
    raw = _bridge(raw, order, t, shot, boxes, limit, dt_sample, centre_frac, max_area_ratio,
                  max_jump)
    # A weak detection that joins nothing is background (ByteTrack starts no track from one):
    # a lone low-score face stays untracked (-1).
    tid, count = np.unique(raw, return_counts=True)
    raw[np.isin(raw, tid[count == 1]) & ~high] = -1
    # Number by first appearance in time order.
    first: dict[int, int] = {-1: -1}
    for r in order:
        first.setdefault(int(raw[r]), len(first) - 1)
    return np.array([first[int(k)] for k in raw], dtype=np.int64)


class _Track:
    """An active track: its id, shot, and its latest faces (time, box) for the velocity."""

    def __init__(self, tid: int, shot: int, t: float, box: np.ndarray):
        self.tid, self.shot = tid, shot
        self.times, self.boxes = [t], [box]

    @property
    def last_t(self) -> float:
        return self.times[-1]

    def velocity(self) -> np.ndarray:
        """Centre velocity, least squares over the latest faces: one jittery box moves it less
        than a frame-to-frame difference would."""
        if len(self.times) < 2:
            return np.zeros(2)
        tt = np.asarray(self.times[-_HISTORY:])
        cc = np.asarray([b[:2] + b[2:] / 2 for b in self.boxes[-_HISTORY:]])
        tt = tt - tt.mean()
        return (tt[:, None] * (cc - cc.mean(0))).sum(0) / max((tt**2).sum(), 1e-12)

    def predict(self, now: float) -> np.ndarray:
        box = self.boxes[-1].copy()
        box[:2] += self.velocity() * (now - self.last_t)
        return box

    def add(self, t: float, box: np.ndarray) -> None:
        self.times.append(t)
        self.boxes.append(box)
        del self.times[:-_HISTORY], self.boxes[:-_HISTORY]


_HISTORY = 4  # faces kept per track for its velocity


def _online(order, t, fidx, shot, boxes, high, limit, dt_sample, iou_threshold, centre_frac,
            max_area_ratio) -> np.ndarray:
    n = len(t)
    ids = np.full(n, -1, dtype=np.int64)
    ts, fs = t[order], fidx[order]
    brk = np.flatnonzero((np.diff(ts) != 0) | (np.diff(fs) != 0)) + 1
    tracks: list[_Track] = []
    next_id = 0
    wait = min(limit, 2 * dt_sample + 1e-9)
    for s, e in zip(np.r_[0, brk], np.r_[brk, n], strict=True):
        now, rows = ts[s], order[s:e]
        here = shot[rows[0]]
        # Tracks unseen for too long are over for good; a cut ends every track.
        # Online, a track waits one missed sample: over longer gaps a prediction strays and
        # anything near it would do; bridging (step 3) joins those with a motion check.
        tracks = [k for k in tracks if k.shot == here and now - k.last_t <= wait]
        det = boxes[rows]
        pred = np.array([k.predict(now) for k in tracks]).reshape(-1, 4)
        unseen = np.array([now - k.last_t for k in tracks])
        missed = np.maximum(np.round(unseen / dt_sample) - 1, 0) if dt_sample > 0 else \
            np.zeros(len(tracks))
        widen = np.minimum(1 + 0.25 * missed, 1.5)
        score = _affinity(pred, det, iou_threshold, centre_frac * widen, max_area_ratio)
        score = np.where(score > 0, score / widen[:, None], score)  # the recently seen first
        det_track = np.full(len(rows), -1)
        taken = np.zeros(len(tracks), bool)
        for stage in (high[rows], ~high[rows]):  # ByteTrack: strong detections choose first
            sub = np.where(stage[None, :] & ~taken[:, None], score, -1.0)
            for i, j in _greedy(sub):
                det_track[j], taken[i] = i, True
        for j, i in enumerate(det_track):
            if i >= 0:
                tracks[i].add(now, det[j])
                ids[rows[j]] = tracks[i].tid
            else:
                tracks.append(_Track(next_id, here, now, det[j]))
                ids[rows[j]] = next_id
                next_id += 1
    return ids


def _greedy(score: np.ndarray) -> list[tuple[int, int]]:
    """(track, detection) pairs, best score first, each used once; scores <= -1 never pair."""
    pairs, used_t, used_d = [], set(), set()
    if not score.size:
        return pairs
    for k in np.argsort(-score, axis=None, kind="stable"):
        if score.flat[k] <= -1:
            break
        i, j = divmod(int(k), score.shape[1])
        if i not in used_t and j not in used_d:
            used_t.add(i)
            used_d.add(j)
            pairs.append((i, j))
    return pairs


def _affinity(pred: np.ndarray, det: np.ndarray, iou_threshold: float, centre_frac,
              max_area_ratio: float) -> np.ndarray:
    """(K, M) match scores: 1 + IoU for IoU matches, (0, 1] for centre-distance matches,
    -1 where the pair may not match. `centre_frac` is a number or one per track."""
    iou = iou_matrix(pred, det)
    pc = pred[:, None, :2] + pred[:, None, 2:] / 2
    dc = det[None, :, :2] + det[None, :, 2:] / 2
    dist = np.linalg.norm(pc - dc, axis=2)
    reach = np.reshape(centre_frac, (-1, 1)) * np.sqrt(np.maximum(pred[:, 2] * pred[:, 3],
                                                                  1e-9))[:, None]
    ratio = _area_ratio(pred[:, None], det[None, :])
    near = (dist < reach) & (ratio < max_area_ratio)
    score = np.where(near, 1 - dist / reach, -1.0)
    return np.where(iou >= iou_threshold, 1 + iou, score)


def _area_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    area_a, area_b = a[..., 2] * a[..., 3], b[..., 2] * b[..., 3]
    return np.maximum(area_a, area_b) / np.maximum(np.minimum(area_a, area_b), 1e-9)


def _bridge(ids, order, t, shot, boxes, limit, dt_sample, centre_frac, max_area_ratio,
            max_jump) -> np.ndarray:
    """Join tracks across gaps along constant-velocity paths (module docstring, step 3)."""
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    size = np.sqrt(np.maximum(boxes[:, 2] * boxes[:, 3], 1e-9))
    rows: dict[int, list[int]] = {}
    for r in order:
        if ids[r] >= 0:
            rows.setdefault(int(ids[r]), []).append(int(r))
    tracks = sorted(rows, key=lambda k: t[rows[k][0]])
    starts = np.array([t[rows[k][0]] for k in tracks])
    step = max(dt_sample, 1e-9)

    def velocity(pts: list[int]) -> np.ndarray:
        tt = t[pts] - t[pts].mean()
        return (tt[:, None] * (centre[pts] - centre[pts].mean(0))).sum(0) / max((tt**2).sum(), 1e-12)

    def miss(a: int, b: int, n_b: int) -> float:
        """How far, in box sizes, the joined path misses: each side's own motion (over its
        three faces nearest the gap) extrapolated across the gap, the better of the two."""
        ea, sb = rows[a][-1], rows[b][0]
        gap, ref = t[sb] - t[ea], min(size[ea], size[sb])
        errs = []
        if len(rows[a]) >= 2:
            errs.append(np.linalg.norm(centre[ea] + velocity(rows[a][-3:]) * gap - centre[sb]))
        if len(rows[b]) >= 2:
            errs.append(np.linalg.norm(centre[sb] - velocity(rows[b][:3]) * gap - centre[ea]))
        if not errs:  # two single faces: a third, later track must continue their path
            end = t[sb] + limit
            later = tracks[n_b + 1 : int(np.searchsorted(starts, end, "right"))]
            v = (centre[sb] - centre[ea]) / gap
            errs = [min((np.linalg.norm(centre[sb] + v * (t[rows[c][0]] - t[sb])
                                        - centre[rows[c][0]]) for c in later
                         if may_join(b, c)), default=np.inf)]
        return float(min(errs) / ref)

    def may_join(a: int, b: int) -> bool:
        ea, sb = rows[a][-1], rows[b][0]
        gap = t[sb] - t[ea]
        if not (0 < gap <= limit) or shot[ea] != shot[sb]:
            return False
        if _area_ratio(boxes[ea], boxes[sb]) >= max_area_ratio:
            return False
        jump = np.linalg.norm(centre[sb] - centre[ea]) / min(size[ea], size[sb])
        return bool(jump <= max_jump * max(round(gap / step), 1))

    active: list[int] = []  # tracks (heads of joined chains) that ended at most `limit` ago
    for n_b, b in enumerate(tracks):
        active = [a for a in active if t[rows[a][-1]] >= starts[n_b] - limit]
        best, best_err = None, np.inf
        for a in active:
            if not may_join(a, b):
                continue
            missed = max(round((t[rows[b][0]] - t[rows[a][-1]]) / step) - 1, 0)
            err = miss(a, b, n_b)
            if err < centre_frac * min(1 + 0.25 * missed, 1.5) and err < best_err:
                best, best_err = a, err
        if best is None:
            active.append(b)
        else:
            rows[best] += rows.pop(b)
    out = ids.copy()
    for k, rs in rows.items():
        out[rs] = k
    return out
