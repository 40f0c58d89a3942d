"""summarize() and format_summary() on a tiny hand-computed run."""

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from batchemo.analysis.summarize import format_summary, sampling_intervals, summarize, top_folder

CLASSES = ["angry", "happy", "neutral", "sad"]


def face(source, frame, emotion, track=0, media="video", dt=0.5, strength=0.7):
    probs = {c: (strength if c == emotion else (1 - strength) / 3) for c in CLASSES}
    row = {"root": "R", "source": source, "media_type": media, "frame_index": frame,
           "t_sec": frame * dt if media == "video" else None, "face_index": 0,
           "track_id": track if media == "video" else None, "x": 0, "y": 0, "w": 9, "h": 9,
           "det_score": 0.9, "emotion": emotion, "confidence": strength}
    row.update({f"p_{c}": v for c, v in probs.items()})
    return row


def run_tables():
    rows = [face("a.mp4", f, "happy", track=0) for f in range(4)]
    rows += [face("a.mp4", f, "sad", track=1) for f in (2, 3)]
    rows += [face("sub/b.mp4", f, "angry", dt=1.0) for f in (0, 1)]
    rows.append(face("sub/c.jpg", 0, "happy", media="image"))
    faces = pd.DataFrame(rows)
    faces["track_id"] = faces["track_id"].astype("Int64")
    frames = pd.concat([
        pd.DataFrame({"root": "R", "source": "a.mp4", "frame_index": range(10),
                      "t_sec": np.arange(10) * 0.5, "n_faces": 0}),
        # gaps 1, 1, 1, 2 (a failed decode): the median, 1 s, is the interval
        pd.DataFrame({"root": "R", "source": "sub/b.mp4", "frame_index": [0, 1, 2, 3, 5],
                      "t_sec": [0.0, 1.0, 2.0, 3.0, 5.0], "n_faces": 0})])
    files = pd.DataFrame({
        "root": "R", "source": ["a.mp4", "sub/b.mp4", "sub/c.jpg", "sub/d.jpg", "bad.mp4"],
        "media_type": ["video", "video", "image", "image", "video"],
        "status": ["ok", "ok", "ok", "no_face", "error"],
        "error": [None, None, None, None, "moov atom not found"],
        "duration": [5.0, 6.0, None, None, None], "frames_sampled": [10, 5, 1, 1, 0]})
    return faces, files, frames


def level(df, name):
    return df[df["level"] == name].reset_index(drop=True)


def test_file_rows_shares_and_seconds_on_screen():
    faces, files, frames = run_tables()
    s = summarize(faces, files, frames)
    f = level(s, "file").set_index("source")
    assert f.loc["a.mp4", "faces"] == 6
    assert f.loc["a.mp4", "share_happy"] == pytest.approx(4 / 6)
    assert f.loc["a.mp4", "share_sad"] == pytest.approx(2 / 6)
    assert f.loc["a.mp4", "share_neutral"] == 0
    assert f.loc["a.mp4", "dominant"] == "happy"
    # 4 sampled frames hold a face (2 of them hold two) × 0.5 s.
    assert f.loc["a.mp4", "seconds_on_screen"] == pytest.approx(2.0)
    assert f.loc["sub/b.mp4", "seconds_on_screen"] == pytest.approx(2.0)  # 2 frames × 1 s
    assert np.isnan(f.loc["sub/c.jpg", "seconds_on_screen"])
    assert f.loc["sub/d.jpg", "faces"] == 0  # no_face file listed; the error file is not
    assert "bad.mp4" not in f.index
    assert f.loc["a.mp4", "p_happy"] == pytest.approx((4 * 0.7 + 2 * 0.1) / 6)
    assert f.loc["a.mp4", "mean_confidence"] == pytest.approx(0.7)


def test_track_rows():
    faces, files, frames = run_tables()
    t = level(summarize(faces, files, frames), "track").set_index("track_id")
    assert t.index.tolist() == [0, 1, 0]  # a.mp4 #0, #1; sub/b.mp4 #0
    a = t[t["source"] == "a.mp4"]
    assert a["faces"].tolist() == [4, 2]
    np.testing.assert_allclose(a["seconds_on_screen"], [2.0, 1.0])
    assert a["dominant"].tolist() == ["happy", "sad"]
    assert a["share_sad"].tolist() == [0.0, 1.0]


def test_folder_and_run_roll_up():
    faces, files, frames = run_tables()
    s = summarize(faces, files, frames)
    fo = level(s, "folder").set_index("folder")
    assert fo.index.tolist() == [".", "sub"]
    assert fo.loc["sub", "faces"] == 3 and fo.loc["sub", "n_files"] == 3
    assert fo.loc["sub", "share_angry"] == pytest.approx(2 / 3)
    assert fo.loc["sub", "seconds_on_screen"] == pytest.approx(2.0)  # the image adds none
    assert fo.loc[".", "seconds_on_screen"] == pytest.approx(2.0)
    run = level(s, "run").iloc[0]
    assert run["faces"] == 9 and run["n_files"] == 4
    assert run["seconds_on_screen"] == pytest.approx(4.0)
    assert [run[f"share_{c}"] for c in CLASSES] == pytest.approx([2 / 9, 5 / 9, 0, 2 / 9])
    # Per face: happy 0.7 − 0.1 − 0.1 = 0.5; sad or angry 0.1 − 0.8 = −0.7.
    assert run["valence"] == pytest.approx((5 * 0.5 - 4 * 0.7) / 9)
    assert run["dominant"] == "happy"
    assert pd.isna(run["root"]) and pd.isna(run["source"])
    assert s["level"].tolist()[:3] == ["run", "folder", "folder"]


def test_dominant_tie_goes_to_higher_mean_probability():
    faces = pd.DataFrame([face("t.mp4", 0, "sad", strength=0.6),
                          face("t.mp4", 1, "happy", strength=0.9)])
    f = level(summarize(faces), "file").iloc[0]
    assert f["share_happy"] == f["share_sad"] == 0.5
    assert f["dominant"] == "happy"


def test_sampling_interval_fallbacks():
    faces, files, frames = run_tables()
    idx = ("R", "sub/b.mp4")
    assert sampling_intervals(faces, frames, files)[idx] == 1.0
    assert sampling_intervals(faces, None, files)[idx] == pytest.approx(6.0 / 5)
    assert sampling_intervals(faces, None, None)[idx] == 1.0  # gaps between face times
    assert ("R", "sub/c.jpg") not in sampling_intervals(faces).index  # images have none


def test_accepts_arrow_tables_and_six_classes():
    faces, files, frames = run_tables()
    six = faces.drop(columns="p_neutral")
    s = summarize(pa.Table.from_pandas(six), pa.Table.from_pandas(files), frames)
    assert "p_neutral" not in s and "share_neutral" not in s
    assert {"share_angry", "share_happy", "share_sad"} <= set(s.columns)


def test_top_folder():
    assert top_folder(pd.Series(["a.mp4", "x/y/z.jpg", "x/b.mp4"])).tolist() == [".", "x", "x"]


def test_format_summary_is_readable():
    faces, files, frames = run_tables()
    text = format_summary(summarize(faces, files, frames))
    assert "run (1)" in text and "folder (2)" in text and "file (4)" in text
    assert "a.mp4" in text and "sub/b.mp4" in text and "R:sub" in text
    assert "56%" in text  # run share of happy, 5/9
    assert "0:04.0" in text  # run seconds on screen
    assert "track" not in text  # tracks only on request
    text = format_summary(summarize(faces, files, frames), levels=("track",), max_rows=1)
    assert "a.mp4 #0" in text and "… 2 more track rows" in text


def test_run_without_faces_still_summarised():
    faces, files, frames = run_tables()
    s = summarize(faces.iloc[:0], files, frames)
    assert level(s, "run")["faces"].tolist() == [0]
    assert level(s, "file")["source"].tolist() == ["sub/d.jpg"]  # the no_face file
    text = format_summary(s)
    assert "sub/d.jpg" in text and not re.search(r"\bnan\b", text)


def test_suspect_tracks_and_their_reasons():
    from batchemo.analysis.suspect import suspect_reasons

    rows = []
    for f in range(8):  # a person: moves a little, strong detections
        rows.append({**face("v.mp4", f, "happy", track=0), "x": 100 + 3 * f, "y": 50 + f % 2,
                     "w": 60, "h": 60})
    for f in range(6):  # lettering on a title card: weak detections
        rows.append({**face("v.mp4", f, "sad", track=1), "x": 300 + 5 * f, "w": 50, "h": 50,
                     "det_score": 0.54})
    for f in range(2):  # seen twice
        rows.append({**face("v.mp4", f, "angry", track=2), "x": 500 + 9 * f, "w": 40, "h": 40})
    for f in range(6):  # a box that never moves: a poster
        rows.append({**face("v.mp4", f, "neutral", track=3), "x": 700, "y": 20, "w": 70,
                     "h": 70})
    faces = pd.DataFrame(rows)
    faces["track_id"] = faces["track_id"].astype("Int64")
    why = suspect_reasons(faces)
    assert ("R", "v.mp4", 0) not in why.index
    assert why[("R", "v.mp4", 1)] == "low detector scores (mean 0.54)"
    assert why[("R", "v.mp4", 2)] == "only 2 faces"
    assert "does not move" in why[("R", "v.mp4", 3)]
    t = level(summarize(faces), "track").set_index("track_id")
    assert t["suspect"].tolist() == [False, True, True, True]
    assert level(summarize(faces), "file")["suspect"].isna().all()


def test_min_track_leaves_out_short_track_rows_only():
    faces, files, frames = run_tables()
    full = summarize(faces, files, frames)
    short = summarize(faces, files, frames, min_track_sec=1.5)
    # a.mp4's tracks: 4 frames × 0.5 s = 2 s (kept) and 2 × 0.5 s = 1 s (left out)
    assert level(full, "track")["track_id"].tolist() == [0, 1, 0]
    kept = level(short, "track")
    assert list(zip(kept["source"], kept["track_id"], strict=True)) == [("a.mp4", 0),
                                                                       ("sub/b.mp4", 0)]
    pd.testing.assert_frame_equal(level(full, "file"), level(short, "file"))


def test_seconds_on_screen_never_exceeds_the_video():
    # 5 fps sampling of a 1.9 s video whose decoder lands on uneven times (median gap 0.25 s),
    # a face in every sampled frame: the frames stand for 1.9 s, not 9 × 0.25 = 2.25 s.
    t = [0.0, 0.25, 0.5, 0.7, 0.95, 1.2, 1.4, 1.65, 1.85]
    faces = pd.DataFrame([face("v.mp4", i, "happy") for i in range(len(t))]).assign(t_sec=t)
    faces["track_id"] = faces["track_id"].astype("Int64")
    frames = pd.DataFrame({"root": "R", "source": "v.mp4", "frame_index": range(len(t)),
                           "t_sec": t, "n_faces": 1})
    files = pd.DataFrame({"root": ["R"], "source": ["v.mp4"], "media_type": ["video"],
                          "status": ["ok"], "duration": [1.9], "frames_sampled": [len(t)]})
    s = summarize(faces, files, frames)
    assert level(s, "file")["seconds_on_screen"].iloc[0] == pytest.approx(1.9)
    assert level(s, "track")["seconds_on_screen"].iloc[0] == pytest.approx(1.9)
    assert level(s, "run")["seconds_on_screen"].iloc[0] == pytest.approx(1.9)


def test_format_summary_keeps_whole_class_names_and_the_file_name():
    faces, files, frames = run_tables()
    faces = faces.assign(p_disgust=0.0)  # a class name longer than five letters
    long = "a_rather_long_folder_name/" * 4 + "the_clip_that_matters.mp4"
    faces.loc[faces["source"] == "a.mp4", "source"] = long
    text = format_summary(summarize(faces, files, frames))
    header = next(line for line in text.splitlines() if line.startswith("name"))
    assert "disgust" in header.split() and "disgu " not in header
    row = next(line for line in text.splitlines() if "the_clip_that_matters.mp4" in line)
    assert row.startswith("a_rather") and "…" in row  # cut in the middle, both ends kept
    widths = {len(line) for line in text.splitlines() if line and line[0] not in "rf-"}
    assert len(widths) == 1  # columns line up


def test_summary_table_keeps_the_suspect_column():
    from batchemo.output.tables import summary_schema

    faces, files, frames = run_tables()
    table = pa.Table.from_pandas(summarize(faces, files, frames), schema=summary_schema(CLASSES),
                                 preserve_index=False)
    assert "suspect" in table.schema.names
    track = table.to_pandas().query("level == 'track'")
    assert track["suspect"].notna().all()
