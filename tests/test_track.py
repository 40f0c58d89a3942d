"""IoU tracker on generated trajectories (sampled at 2 fps unless stated)."""

import numpy as np
import pytest

from batchemo.track import assign_tracks, iou_matrix

DT = 0.5


def run(dets, shuffle_seed=None, **kw):
    """dets: list of (frame_index, t_sec, x, y, w, h, label); returns {label: [ids]}."""
    arr = np.array([d[:6] for d in dets], dtype=np.float64)
    labels = [d[6] for d in dets]
    order = np.arange(len(dets))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(dets))
    ids = assign_tracks(arr[order, 0].astype(np.int64), arr[order, 1], arr[order, 2:], **kw)
    out = {}
    for i, k in zip(order, ids, strict=True):
        out.setdefault(labels[i], []).append(int(k))
    return out


def test_iou_matrix_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])


def test_static_face_keeps_one_id_and_ids_follow_first_appearance():
    dets = [(i, i * DT, 100, 100, 80, 80, "a") for i in range(6)]
    dets += [(i, i * DT, 400, 100, 80, 80, "b") for i in range(3, 6)]  # appears later
    ids = run(dets, shuffle_seed=1)
    assert set(ids["a"]) == {0}
    assert set(ids["b"]) == {1}


def test_crossing_faces_do_not_swap():
    # A moves right, B moves left, 30 px per sample on one line. Just after they pass
    # (frame 11) each detection is nearer the OTHER face's last box than its own, so matching
    # on the last boxes swaps them; the velocity prediction does not.
    dets = []
    for i in range(21):
        dets.append((i, i * DT, 0 + 30 * i, 100, 80, 80, "a"))
        dets.append((i, i * DT, 615 - 30 * i, 100, 80, 80, "b"))
    for seed in range(5):
        ids = run(dets, shuffle_seed=seed)
        assert len(set(ids["a"])) == 1 and len(set(ids["b"])) == 1
        assert ids["a"][0] != ids["b"][0]


def test_missed_detection_in_one_frame_keeps_the_id():
    dets = [(i, i * DT, 100 + 5 * i, 100, 80, 80, "a") for i in range(8) if i != 4]
    assert set(run(dets)["a"]) == {0}


def test_gap_limit_is_unseen_time():
    # Seen up to t=2.0; sampling every 0.5 s. Back at t=3.5: unseen 1.0 s (<= 1.0) → same id.
    seen = [(i, i * DT, 100, 100, 80, 80, "a") for i in range(5)]
    ids = run(seen + [(7, 3.5, 100, 100, 80, 80, "back")] + [(8, 4.0, 500, 0, 10, 10, "x")])
    assert ids["back"] == [0]
    # Back at t=4.5: unseen 2.0 s (> 1.0) → a new track, not re-identification.
    ids = run(seen + [(9, 4.5, 100, 100, 80, 80, "back")] + [(8, 4.0, 500, 0, 10, 10, "x")])
    assert ids["back"] == [2] and ids["x"] == [1]


def test_leaving_and_reentering_after_the_gap_gets_a_new_id():
    dets = [(i, i * DT, 100, 100, 80, 80, "first") for i in range(4)]
    dets += [(i, i * DT, 100, 100, 80, 80, "again") for i in range(10, 14)]
    dets += [(i, i * DT, 600, 300, 80, 80, "other") for i in range(14)]  # fixes the interval
    ids = run(dets)
    assert len(set(ids["first"])) == 1 and len(set(ids["again"])) == 1
    assert ids["first"][0] != ids["again"][0]


def test_hard_cut_starts_new_tracks():
    dets = []
    for i in range(6):
        dets += [(i, i * DT, 100, 100, 80, 80, "a1"), (i, i * DT, 500, 120, 90, 90, "b1")]
    for i in range(6, 12):  # the shot changes: faces elsewhere, other sizes
        dets += [(i, i * DT, 300, 400, 50, 50, "a2"), (i, i * DT, 800, 20, 140, 140, "b2")]
    ids = run(dets, shuffle_seed=3)
    for k in ids:
        assert len(set(ids[k])) == 1, k
    assert {ids["a1"][0], ids["b1"][0]} == {0, 1}
    assert {ids["a2"][0], ids["b2"][0]} == {2, 3}


def test_centre_rule_links_a_jump_with_low_iou():
    # Moves 45 px right, 20 px down: IoU 0.28 < 0.3, centre distance 49.2 < 0.5 × 100.
    dets = [(0, 0.0, 0, 0, 100, 100, "a"), (1, DT, 45, 20, 100, 100, "a")]
    assert set(run(dets)["a"]) == {0}
    assert run(dets, centre_frac=0.3)["a"] == [0, 1]
    # The centre rule needs similar sizes: a face 2.25× the area is someone else.
    dets = [(0, 0.0, 0, 0, 100, 100, "a"), (1, DT, 0, 0, 150, 150, "a")]
    assert run(dets, iou_threshold=0.5)["a"] == [0, 1]


def test_one_face_per_track_per_frame():
    # Two overlapping detections in one frame cannot both continue the same track.
    dets = [(0, 0.0, 100, 100, 80, 80, "a"), (1, DT, 100, 100, 80, 80, "a"),
            (1, DT, 105, 100, 80, 80, "dup")]
    ids = run(dets)
    assert ids["a"] == [0, 0] and ids["dup"] == [1]


def test_bad_input():
    assert assign_tracks(np.zeros(0), np.zeros(0), np.zeros((0, 4))).shape == (0,)
    with pytest.raises(ValueError, match="same length"):
        assign_tracks(np.zeros(2), np.zeros(2), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="finite"):
        assign_tracks(np.zeros(1), np.array([np.nan]), np.zeros((1, 4)))


def test_add_track_ids_per_video_and_null_for_images():
    import pandas as pd

    from batchemo.track import add_track_ids

    rows = []
    for src in ("a.mp4", "b.mp4"):
        for i in range(3):
            rows.append({"root": "r", "source": src, "media_type": "video", "frame_index": i,
                         "t_sec": i * DT, "x": 10, "y": 10, "w": 50, "h": 50})
    rows.append({"root": "r", "source": "p.jpg", "media_type": "image", "frame_index": 0,
                 "t_sec": None, "x": 10, "y": 10, "w": 50, "h": 50})
    out = add_track_ids(pd.DataFrame(rows))
    assert out["track_id"].tolist()[:6] == [0] * 6  # ids restart per video
    assert out["track_id"].isna().tolist() == [False] * 6 + [True]
    assert str(out["track_id"].dtype) == "Int64"
