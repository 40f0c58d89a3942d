"""Segments decoded per track with a sticky HMM (issue 31 items 1-2), and the flicker merging that
follows it, on hand-made timelines and on the shared clips."""

import numpy as np
import pandas as pd
import pytest
from conftest import MEDIA, needs_shared

from batchemo.analysis.segments import UNCERTAIN, segments, viterbi
from batchemo.analysis.timeline import timeline

CLASSES = ["angry", "happy", "neutral", "sad"]
ARGMAX = {"switch_cost": 0.0, "unsure_below": 0.0}  # per-bin argmax: the merging alone


def face(t, probs, track=0, source="v.mp4"):
    p = dict(zip(CLASSES, probs, strict=True))
    top = max(p, key=p.get)
    row = {"root": "r", "source": source, "media_type": "video", "frame_index": int(round(t * 5)),
           "t_sec": t, "face_index": 0, "track_id": track, "x": 0, "y": 0, "w": 10, "h": 10,
           "det_score": 0.9}
    row.update({f"p_{c}": np.float32(v) for c, v in p.items()})
    row.update(emotion=top, confidence=np.float32(p[top]), model_id="m", run_id="run1")
    return row


def onehot(name, strength=0.7):
    rest = (1 - strength) / (len(CLASSES) - 1)
    return [strength if c == name else rest for c in CLASSES]


def per_second(emotions, track=0, strength=0.7, fps=1):
    """One face every 1/fps s showing each emotion of `emotions` (one per second)."""
    return [face(i + k / fps, onehot(e, strength), track=track)
            for i, e in enumerate(emotions) for k in range(fps)]


def tl_of(rows):
    return timeline(pd.DataFrame(rows), None, smoothing="none")


def test_merging_a_flicker_between_equal_neighbours():
    segs = segments(tl_of(per_second(["happy"] * 3 + ["sad"] + ["happy"] * 3)), 2.0, **ARGMAX)
    assert len(segs) == 1
    s = segs.iloc[0]
    assert (s["emotion"], s["start_sec"], s["end_sec"], s["duration_sec"]) == ("happy", 0, 7, 7)
    assert s["n_faces"] == 7
    # mean over the 7 faces of p_happy: six at 0.7, the flicker's at 0.1.
    assert s["mean_confidence"] == pytest.approx((6 * 0.7 + 0.1) / 7, abs=1e-6)
    tl = tl_of(per_second(["happy"] * 3 + ["sad"] + ["happy"] * 3))
    assert segments(tl, 1.0, **ARGMAX)["emotion"].tolist() == ["happy", "sad", "happy"]


def test_a_flicker_joins_the_neighbour_its_faces_favour():
    rows = per_second(["happy"] * 3 + ["sad"] + ["angry"] * 3)
    rows[3].update(p_angry=np.float32(0.3), p_happy=np.float32(0.1), p_sad=np.float32(0.6),
                   p_neutral=np.float32(0.0))
    segs = segments(tl_of(rows), 2.0, **ARGMAX)
    assert segs["emotion"].tolist() == ["happy", "angry"]
    assert segs["start_sec"].tolist() == [0.0, 3.0] and segs["end_sec"].tolist() == [3.0, 7.0]
    assert segs["n_faces"].tolist() == [3, 4]


def test_segments_per_track_and_across_gaps():
    rows = per_second(["happy", "happy"], track=0) + per_second(["sad"], track=1)
    rows.append(face(4.0, onehot("happy"), track=0))  # after 2 empty bins
    segs = segments(tl_of(rows), 1.0)
    assert segs[["track_id", "emotion", "start_sec", "end_sec"]].values.tolist() == [
        [0, "happy", 0.0, 5.0], [1, "sad", 0.0, 1.0]]
    assert len(segments(tl_of(per_second(["sad"])), 10.0)) == 1


def test_a_one_face_flicker_does_not_cut_a_segment_but_a_held_expression_does():
    # 5 faces a second, as `run` samples by default: one sad face among happy ones is noise;
    # sad held for a second is a change a person sees.
    rows = per_second(["happy"] * 6, fps=5)
    rows[12].update(p_happy=np.float32(0.05), p_sad=np.float32(0.85))
    assert segments(tl_of(rows), 0.0)["emotion"].tolist() == ["happy"]
    held = per_second(["happy"] * 3 + ["sad"] + ["happy"] * 3, fps=5, strength=0.8)
    segs = segments(tl_of(held), 0.0)
    assert segs["emotion"].tolist() == ["happy", "sad", "happy"]
    assert segs["start_sec"].tolist() == [0.0, 3.0, 4.0]


def test_a_reading_that_flips_between_two_classes_near_0_4_is_one_uncertain_segment():
    # issue 31: "a synthetic track whose per-face argmax flips every frame between two classes at
    # p ≈ 0.4" — many segments per-bin, one `uncertain` segment decoded.
    rows = []
    for i in range(50):  # 10 s at 5 fps, top class alternating every face
        a, b = (0.41, 0.37) if i % 2 else (0.37, 0.41)
        rows.append(face(i / 5, [a, b, 0.12, 0.10]))
    tl = timeline(pd.DataFrame(rows), None, bin_sec=0.2, smoothing="none")
    assert len(segments(tl, 0.0, **ARGMAX)) == 50
    segs = segments(tl, 1.0)
    assert segs["emotion"].tolist() == [UNCERTAIN]
    assert segs["n_faces"].tolist() == [50]
    assert segs["mean_confidence"].iloc[0] == pytest.approx(0.41, abs=1e-6)  # mean top p


def test_uncertain_only_where_no_class_stays_likely():
    rows = per_second(["sad"] * 4, fps=5, strength=0.8)
    rows += [face(4 + i / 5, [0.3, 0.3, 0.25, 0.15]) for i in range(20)]  # 4 s unsure
    rows += per_second(["happy"] * 4, fps=5, strength=0.8)
    for r in rows[40:]:
        r["t_sec"] += 8.0
    segs = segments(tl_of(rows), 1.0)
    assert segs["emotion"].tolist() == ["sad", UNCERTAIN, "happy"]
    assert segs["start_sec"].tolist() == [0.0, 4.0, 8.0]


def test_viterbi_decodes_each_sequence_on_its_own_and_pays_for_each_switch():
    ev = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8], [0.5, 0.5]]))
    one = np.array([True, False, False, False, False])
    # switching at row 2 gains 2·log(0.8/0.2) = 2.8 nats: worth a cost of 1, not of 10
    assert viterbi(ev, one, 1.0).tolist() == [0, 0, 1, 1, 1]  # the last tie keeps state 1
    assert viterbi(ev, one, 10.0).tolist() == [0] * 5
    # a second sequence starting at row 2 starts afresh, whatever the cost
    assert viterbi(ev, np.array([True, False, True, False, False]), 10.0).tolist() == \
        [0, 0, 1, 1, 1]


@pytest.fixture(scope="module")
def shared_segments(tmp_path_factory):
    """The shipped model's faces of the closeup, stage and crowd clips (default settings)."""
    if not MEDIA.is_dir():
        pytest.skip(f"real media fixtures not present at {MEDIA}")
    from batchemo import RunConfig, run

    tmp = tmp_path_factory.mktemp("segments")
    (tmp / "in").mkdir()
    for name in ("closeup_changing_expression.mp4", "multi_person_stage_audience.mp4",
                 "crowd_walking_1080p.mp4"):
        (tmp / "in" / name).symlink_to(MEDIA / "videos" / name)
    out = tmp / "out.parquet"
    assert run(RunConfig(input=[str(tmp / "in")], out=out, quiet=True)).exit_code == 0
    faces = pd.read_parquet(out)
    frames = pd.read_parquet(out.with_name("out.frames.parquet"))
    return timeline(faces, frames)


@needs_shared
@pytest.mark.slow
def test_shared_clips_segments(shared_segments):
    tl = shared_segments
    by_clip = {name: g for name, g in segments(tl).groupby("source")}
    argmax = {name: g for name, g in segments(tl, **ARGMAX).groupby("source")}
    # The closeup: downcast (sad) to 6 s, surprised with a hand at the mouth (read as fear) to
    # ~9.6 s, then a broad smile: each change a person sees is a boundary, and nothing else.
    close = by_clip["closeup_changing_expression.mp4"]
    assert close["emotion"].tolist() == ["sad", "fear", "happy"]
    assert close["start_sec"].tolist()[1:] == pytest.approx([6.0, 10.0], abs=1.0)
    # The stage clip: no more segments than per-bin argmax, at most one more than its tracks.
    stage = by_clip["multi_person_stage_audience.mp4"]
    assert len(stage) <= len(argmax["multi_person_stage_audience.mp4"])
    assert len(stage) <= stage["track_id"].nunique(dropna=False) + 1
    # The crowd (heads down, motion blur): read as sad 77 % of segment time per bin; decoded,
    # what the model is unsure of says so.
    crowd = by_clip["crowd_walking_1080p.mp4"]
    time = crowd.groupby("emotion")["duration_sec"].sum()
    assert time.get("sad", 0) / time.sum() <= 0.5
    assert time.get(UNCERTAIN, 0) > 0
