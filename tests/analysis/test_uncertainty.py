"""Summaries with their uncertainty (issue 31 item 4): the dominant share's interval counts
5-s blocks of a track, not face rows, and faces read below the unsure threshold are counted."""

import numpy as np
import pandas as pd
import pytest

from batchemo.analysis.segments import UNSURE_BELOW
from batchemo.analysis.summarize import summarize

CLASSES = ["angry", "happy", "neutral", "sad"]


def faces_of(track_emotions, fps=5.0, strength=0.8):
    """One face per 1/fps s per track, showing each track's emotions in turn (one per second)."""
    rows = []
    for track, emotions in track_emotions.items():
        for i in range(int(len(emotions) * fps)):
            e = emotions[int(i / fps)]
            p = {c: (strength if c == e else (1 - strength) / 3) for c in CLASSES}
            rows.append({"root": "r", "source": "v.mp4", "media_type": "video",
                         "frame_index": i, "t_sec": i / fps, "face_index": track,
                         "track_id": track, **{f"p_{c}": p[c] for c in CLASSES},
                         "emotion": e, "confidence": strength})
    df = pd.DataFrame(rows)
    df["track_id"] = df["track_id"].astype("Int64")
    return df


def track_row(summary, track):
    return summary[(summary.level == "track") & (summary.track_id == track)].iloc[0]


def test_a_short_track_gets_a_wide_interval_and_a_long_steady_one_a_narrow_one():
    short = ["angry"] * 3 + ["happy"] * 2  # 5 s at 5 fps: 25 faces in one BLOCK_SEC block
    steady = ["happy"] * 120  # 2 min: 24 blocks
    s = summarize(faces_of({0: short, 1: steady}))
    a, b = track_row(s, 0), track_row(s, 1)
    assert a.dominant == "angry" and a.share_angry == pytest.approx(0.6)
    assert a.dominant_share_lo <= 0.6 <= a.dominant_share_hi
    assert a.dominant_share_hi - a.dominant_share_lo > 0.6  # 25 faces, but one reading
    assert b.dominant == "happy" and b.dominant_share_lo > 0.85
    assert b.dominant_share_hi == pytest.approx(1.0)


def test_uncertain_share_counts_faces_read_below_the_threshold():
    df = faces_of({0: ["sad"] * 10})
    unsure = df.index[df.t_sec >= 6]
    df.loc[unsure, [f"p_{c}" for c in CLASSES]] = [0.3, 0.2, 0.2, 0.3]
    df.loc[unsure, "confidence"] = 0.3
    assert 0.3 < UNSURE_BELOW
    s = summarize(df)
    assert track_row(s, 0).uncertain_share == pytest.approx(len(unsure) / len(df))
    run = s[s.level == "run"].iloc[0]
    assert run.uncertain_share == pytest.approx(0.4)
    assert np.isfinite(run.dominant_share_lo) and run.dominant_share_lo <= run.share_sad
