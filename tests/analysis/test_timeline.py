"""Timelines on tiny hand-computed tables (segments: test_segments.py)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import timeline_columns

from batchemo.analysis.columns import valence
from batchemo.analysis.segments import segments
from batchemo.analysis.timeline import timeline
from batchemo.analysis.timeline_stream import timeline_from_parquet

CLASSES = ["angry", "happy", "neutral", "sad"]


def face(source, t, probs, track=0, media="video", root="r", fi=None):
    p = dict(zip(CLASSES, probs, strict=True))
    top = max(p, key=p.get)
    row = {"root": root, "source": source, "media_type": media,
           "frame_index": int(round(t * 2)) if fi is None else fi,
           "t_sec": t if media == "video" else None, "face_index": 0, "track_id": track,
           "x": 0, "y": 0, "w": 10, "h": 10, "det_score": 0.9}
    row.update({f"p_{c}": np.float32(v) for c, v in p.items()})
    row.update(emotion=top, confidence=np.float32(p[top]), model_id="m", run_id="run1")
    return row


def frames_for(source, n, dt=0.5, root="r"):
    return pd.DataFrame({"root": root, "source": source, "frame_index": np.arange(n),
                         "t_sec": np.arange(n) * dt, "n_faces": 0})


def onehot(name, strength=1.0):
    rest = (1 - strength) / (len(CLASSES) - 1)
    return [strength if c == name else rest for c in CLASSES]


def track_rows(tl, track):
    return tl[tl["track_id"].eq(track).fillna(False)].reset_index(drop=True)


def test_binning_means_counts_and_columns():
    faces = pd.DataFrame([face("v.mp4", 0.0, [0.1, 0.8, 0.1, 0.0]),
                          face("v.mp4", 0.5, [0.3, 0.4, 0.3, 0.0]),
                          face("v.mp4", 1.0, [0.0, 0.0, 0.2, 0.8]),
                          face("img.jpg", 0.0, [0, 1, 0, 0], media="image")])
    tl = timeline(faces, frames_for("v.mp4", 4), smoothing="none")
    assert list(tl.columns) == timeline_columns(CLASSES)
    assert set(tl["source"]) == {"v.mp4"}  # images have no timeline
    assert tl["bin_start"].tolist() == [0.0, 1.0] and tl["bin_end"].tolist() == [1.0, 2.0]
    assert tl["n_faces"].tolist() == [2, 1] and tl["n_frames"].tolist() == [2, 2]
    np.testing.assert_allclose(tl["p_happy"], [0.6, 0.0], atol=1e-6)
    np.testing.assert_allclose(tl["p_angry"], [0.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(tl["confidence"], [0.6, 0.8], atol=1e-6)
    assert tl["dominant"].tolist() == ["happy", "sad"]
    # valence = happy − (angry + sad), of the bin means.
    np.testing.assert_allclose(tl["valence"], [0.6 - 0.2, -0.8], atol=1e-6)


def test_bin_edges_survive_floating_point():
    faces = pd.DataFrame([face("v.mp4", 0.3, onehot("happy")), face("v.mp4", 0.7, onehot("sad"))])
    tl = timeline(faces, None, bin_sec=0.1, smoothing="none")
    got = tl[tl["n_faces"] > 0]["bin_start"].to_numpy()
    np.testing.assert_allclose(got, [0.3, 0.7])


def test_ema_numbers_with_a_gap():
    # window 3 s, bins 1 s → span 3, alpha = 0.5. p_happy per bin: 1, 0, (empty), 1.
    # s0 = 1; s1 = 1 + 0.5 (0 − 1) = 0.5; bin 3 is 2 bins on: w = 1 − 0.5² = 0.75,
    # s3 = 0.5 + 0.75 (1 − 0.5) = 0.875.
    faces = pd.DataFrame([face("v.mp4", 0.0, onehot("happy")), face("v.mp4", 1.0, onehot("sad")),
                          face("v.mp4", 3.0, onehot("happy"))])
    tl = track_rows(timeline(faces, None, smoothing="ema", window_sec=3.0), 0)
    assert tl["bin_start"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert tl["n_faces"].tolist() == [1, 1, 0, 1]
    s = tl["smooth_happy"].to_numpy()
    np.testing.assert_allclose(s[[0, 1, 3]], [1.0, 0.5, 0.875])
    assert np.isnan(s[2]) and tl["dominant"].isna().tolist() == [False, False, True, False]
    # Sad: 0, 1, -, 0 → 0, 0.5, -, 0.125. Bin 1 is a tie happy/sad at 0.5: first class wins.
    np.testing.assert_allclose(tl["smooth_sad"].to_numpy()[[0, 1, 3]], [0, 0.5, 0.125])


def test_ema_window_below_one_bin_is_no_smoothing():
    faces = pd.DataFrame([face("v.mp4", 0.0, onehot("happy")), face("v.mp4", 1.0, onehot("sad"))])
    tl = timeline(faces, None, smoothing="ema", window_sec=0.5)
    np.testing.assert_allclose(tl["smooth_happy"], tl["p_happy"])


def test_median_numbers():
    # p_happy per bin 0, 1, 0, 0, 1; a centred window of 3 bins.
    seq = ["sad", "happy", "sad", "sad", "happy"]
    faces = pd.DataFrame([face("v.mp4", float(i), onehot(e)) for i, e in enumerate(seq)])
    for window in (3.0, 2.0):  # an even window grows to the next odd number of bins
        tl = timeline(faces, None, smoothing="median", window_sec=window)
        np.testing.assert_allclose(tl["smooth_happy"], [0.5, 0.0, 0.0, 0.0, 0.5])
        assert tl["dominant"].tolist() == ["happy", "sad", "sad", "sad", "happy"]  # tie → first


def test_median_ignores_empty_bins():
    faces = pd.DataFrame([face("v.mp4", 0.0, onehot("happy")), face("v.mp4", 2.0, onehot("sad"))])
    tl = track_rows(timeline(faces, None, smoothing="median", window_sec=3.0), 0)
    np.testing.assert_allclose(tl["smooth_happy"].to_numpy()[[0, 2]], [1.0, 0.0])


def test_empty_bins_keep_time_aligned():
    # 6 s of video at 2 fps (last sample 5.5 s): faces in bins 0, 1 (track 0), 4 (track 1).
    faces = pd.DataFrame([face("v.mp4", 0.5, onehot("happy")), face("v.mp4", 1.0, onehot("happy")),
                          face("v.mp4", 4.5, onehot("sad"), track=1)])
    tl = timeline(faces, frames_for("v.mp4", 12))
    empty = tl[tl["track_id"].isna()]
    # Nobody on screen in bins 2-3 (one gap row) and 5.
    assert empty[["bin_start", "bin_end", "n_frames"]].values.tolist() == [[2, 4, 4], [5, 6, 2]]
    assert (empty["n_faces"] == 0).all() and empty["p_happy"].isna().all()
    assert empty["dominant"].isna().all()
    spans = sorted(zip(tl["bin_start"], tl["bin_end"], strict=True))
    assert spans == [(0, 1), (1, 2), (2, 4), (4, 5), (5, 6)]  # each instant exactly once
    assert track_rows(tl, 1)["bin_start"].tolist() == [4.0]


def test_untracked_faces_and_faceless_videos_cover_each_bin_once():
    faces = pd.DataFrame([face("v.mp4", 1.0, onehot("happy"), track=None),
                          face("v.mp4", 3.0, onehot("sad"), track=None)])
    frames = pd.concat([frames_for("v.mp4", 10), frames_for("empty.mp4", 4)])
    tl = timeline(faces, frames)
    v = tl[tl["source"] == "v.mp4"]
    assert v["bin_start"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert v["n_faces"].tolist() == [0, 1, 0, 1, 0] and v["track_id"].isna().all()
    e = tl[tl["source"] == "empty.mp4"]  # no face at all: one row for its 2 s
    assert e[["bin_start", "bin_end", "n_frames", "n_faces"]].values.tolist() == [[0, 2, 4, 0]]


def test_a_gap_inside_a_track_is_one_row():
    # Track 0 at 0 s and 10 s, track 1 at 5 s; frames every 0.5 s up to 10.5 s.
    faces = pd.DataFrame([face("v.mp4", 0.0, onehot("happy")), face("v.mp4", 10.0, onehot("sad")),
                          face("v.mp4", 5.0, onehot("sad"), track=1)])
    tl = timeline(faces, frames_for("v.mp4", 22), smoothing="none")
    t0 = track_rows(tl, 0)
    assert t0[["bin_start", "bin_end", "n_faces", "n_frames"]].values.tolist() == [
        [0, 1, 1, 2], [1, 10, 0, 18], [10, 11, 1, 2]]
    assert t0["dominant"].tolist() == ["happy", None, "sad"]
    nobody = tl[tl["track_id"].isna()]
    assert nobody[["bin_start", "bin_end"]].values.tolist() == [[1, 5], [6, 10]]


def test_rows_cost_what_the_faces_cost_after_a_timestamp_jump():
    # Issue 28 item 1: a video whose timestamps jump by 1e12 s after 50 frames (the old code
    # allocated one row per bin: 7.28 TiB) and its 1e6 s variant (1,000,006 rows).
    for jump in (1e12, 1e6):
        t = np.r_[np.arange(50) / 25, jump + np.arange(50, 72) / 25]
        faces = pd.DataFrame([face("j.mkv", float(x), onehot("happy" if i < 50 else "sad"),
                                   fi=i) for i, x in enumerate(t)])
        frames = pd.DataFrame({"root": "r", "source": "j.mkv", "frame_index": np.arange(72),
                               "t_sec": t, "n_faces": 1})
        for smoothing in ("ema", "median", "none"):
            tl = timeline(faces, frames, smoothing=smoothing)
            assert len(tl) <= 2 * (len(faces) + 1), (jump, smoothing, len(tl))
            assert tl["n_faces"].sum() == 72 and tl["n_frames"].sum() == 72
            gap = tl[tl["n_faces"] == 0]
            assert len(gap) == 2  # the jump: once in track 0, once as "nobody on screen"
            assert gap["bin_start"].tolist() == [2.0, 2.0]  # frame 49 is at 1.96 s
            assert gap["bin_end"].tolist() == [np.floor(jump + 2.0)] * 2
            assert tl["dominant"].dropna().iloc[-1] == "sad"  # the new bins take over
        segs = segments(tl)
        assert segs["emotion"].tolist() == ["happy", "sad"]
        assert segs["end_sec"].iat[-1] == np.floor(jump + 71 / 25) + 1


def test_times_far_beyond_any_bin_share_the_last_one():
    faces = pd.DataFrame([face("v.mp4", 0.0, onehot("happy")), face("v.mp4", 1e300, onehot("sad"), fi=1),
                          face("v.mp4", np.inf, onehot("sad"), fi=2)])  # inf: left out
    tl = timeline(faces, None, bin_sec=0.001)
    assert tl["n_faces"].sum() == 2 and len(tl) == 4
    assert tl["bin_start"].max() == 2**53 * 0.001

def test_valence_null_safe_for_other_class_sets():
    six = pd.DataFrame({"p_angry": [0.1], "p_disgust": [0.1], "p_fear": [0.1], "p_happy": [0.5],
                        "p_sad": [0.1], "p_surprise": [0.1]})  # no neutral
    np.testing.assert_allclose(valence(six), [0.1])
    only_happy = pd.DataFrame({"p_happy": [0.7], "p_neutral": [0.3]})
    np.testing.assert_allclose(valence(only_happy), [0.7])
    assert np.isnan(valence(pd.DataFrame({"p_neutral": [1.0], "p_surprise": [0.0]}))).all()
    assert np.isnan(valence(pd.DataFrame({"p_happy": [np.nan], "p_sad": [np.nan]}))).all()


def seq_faces(emotions, track=0, source="v.mp4", strength=0.7):
    return [face(source, float(i), onehot(e, strength), track=track)
            for i, e in enumerate(emotions)]


def write(df, path):
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def many_videos():
    rng = np.random.default_rng(0)
    rows = []
    for v in range(5):
        for i in range(int(rng.integers(3, 30))):
            for track in range(2):
                if rng.random() < 0.8:
                    p = rng.dirichlet(np.ones(len(CLASSES)))
                    rows.append(face(f"d{v % 2}/v{v}.mp4", i * 0.5, p, track=track, fi=i))
    faces = pd.DataFrame(rows).sort_values(["root", "source", "frame_index", "track_id"])
    frames = pd.concat([frames_for(s, int(g["frame_index"].max()) + 4)
                        for s, g in faces.groupby("source")] + [frames_for("none.mp4", 6)])
    return faces.reset_index(drop=True), frames


@pytest.mark.parametrize("smoothing", ["ema", "median"])
def test_streaming_matches_in_memory(tmp_path, smoothing):
    faces, frames = many_videos()
    fp, frp = write(faces, tmp_path / "f.parquet"), write(frames, tmp_path / "fr.parquet")
    want = timeline(faces, frames, smoothing=smoothing)
    got = timeline_from_parquet(fp, frp, smoothing=smoothing, batch_rows=7)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    out = timeline_from_parquet(fp, frp, smoothing=smoothing, batch_rows=7,
                                out_path=tmp_path / "tl.parquet")
    back = pq.read_table(out).to_pandas()
    for col in ("root", "source", "dominant"):  # the string dtype read back varies by pandas
        back[col] = back[col].astype(object).where(back[col].notna(), None)
    pd.testing.assert_frame_equal(back, want, check_dtype=False)


def test_streaming_refuses_interleaved_videos(tmp_path):
    faces = pd.DataFrame([face("a.mp4", 0.0, onehot("happy")), face("b.mp4", 0.0, onehot("sad")),
                          face("a.mp4", 0.5, onehot("happy"))])
    with pytest.raises(ValueError, match="contiguous"):
        timeline_from_parquet(write(faces, tmp_path / "f.parquet"), batch_rows=2)


def test_bad_arguments():
    faces = pd.DataFrame(seq_faces(["happy"]))
    with pytest.raises(ValueError, match="smoothing"):
        timeline(faces, None, smoothing="gauss")
    with pytest.raises(ValueError, match="bin_sec"):
        timeline(faces, None, bin_sec=0)


def test_streaming_reads_a_dataset_folder_and_writes_empty_tables(tmp_path):
    faces, frames = many_videos()
    (tmp_path / "faces").mkdir()
    cut = int(faces.index[faces["source"] != faces["source"].iat[0]][0])  # a video boundary
    write(faces.iloc[:cut], tmp_path / "faces" / "part-0.parquet")
    write(faces.iloc[cut:], tmp_path / "faces" / "part-1.parquet")
    got = timeline_from_parquet(tmp_path / "faces", write(frames, tmp_path / "fr.parquet"))
    pd.testing.assert_frame_equal(got, timeline(faces, frames), check_dtype=False)
    images = pd.DataFrame([face("p.jpg", 0.0, onehot("happy"), media="image")])
    out = timeline_from_parquet(write(images, tmp_path / "img.parquet"),
                                out_path=tmp_path / "tl.parquet")
    back = pq.read_table(out)
    # Written through output.tables.write_batches (issue 27): zstd and the schema version.
    meta = pq.read_metadata(out)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert b"batchemo.schema_version" in meta.metadata
    assert back.num_rows == 0 and back.schema.names == timeline_columns(CLASSES)
    assert len(timeline(images)) == 0
