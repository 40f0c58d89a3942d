"""Plots (files, pixel sizes, colours) and the self-contained HTML report."""

import re

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from batchemo.analysis.plots import (
    CLASS_COLOURS,
    class_colour,
    plot_run_shares,
    plot_video_timeline,
    video_plot_name,
    video_timeline_figure,
    write_plots,
)
from batchemo.analysis.report import write_report
from batchemo.analysis.segments import segments
from batchemo.analysis.summarize import summarize
from batchemo.analysis.timeline import timeline

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def make_run(n_tracks=2, seconds=20, sources=("clips/a <1>.mp4", "b&c.mp4")):
    rng = np.random.default_rng(7)
    rows, frames = [], []
    for source in sources:
        for i in range(seconds * 2):
            frames.append({"root": "in", "source": source, "frame_index": i, "t_sec": i * 0.5,
                           "n_faces": 0})
            for track in range(n_tracks):
                if (i // 8 + track) % 3 == 2:
                    continue  # tracks come and go
                p = rng.dirichlet(np.ones(len(CLASSES)) * 0.5)
                row = {"root": "in", "source": source, "media_type": "video", "frame_index": i,
                       "t_sec": i * 0.5, "face_index": track, "track_id": track,
                       "emotion": CLASSES[int(p.argmax())], "confidence": float(p.max())}
                row.update({f"p_{c}": v for c, v in zip(CLASSES, p, strict=True)})
                rows.append(row)
    rows.append({**rows[0], "source": "photo.jpg", "media_type": "image", "t_sec": None,
                 "track_id": None, "frame_index": 0})
    files = pd.DataFrame({"root": "in", "source": [*sources, "photo.jpg", "broken.mov", "x.txt"],
                          "media_type": ["video"] * len(sources) + ["image", "video", "other"],
                          "status": ["ok"] * len(sources) + ["ok", "error", "skipped"],
                          "error": [None] * len(sources) + [None, "decode failed: <moov> & more",
                                                            "not media"]})
    return pd.DataFrame(rows), pd.DataFrame(frames), files


def png_size(path_or_buf):
    img = mpimg.imread(path_or_buf)
    return img.shape[1], img.shape[0]  # width, height


def test_class_colours_fixed_and_unknown_classes_stable():
    assert set(CLASSES) <= set(CLASS_COLOURS)
    assert len(set(CLASS_COLOURS.values())) == len(CLASS_COLOURS)
    assert class_colour("happy") == CLASS_COLOURS["happy"]
    assert class_colour("awe") == class_colour("awe")  # fixed by name, not by call order


@pytest.mark.parametrize("n_tracks", [1, 2])
def test_video_timeline_png_size(tmp_path, n_tracks):
    faces, frames, _ = make_run(n_tracks=n_tracks, sources=("v.mp4",))
    tl = timeline(faces, frames)
    out = plot_video_timeline(tl, segments(tl), tmp_path / "v.png")
    assert out.stat().st_size > 5000
    assert png_size(out) == (1200, 200 + 220 * n_tracks)


def test_video_timeline_caps_tracks_and_says_so(tmp_path):
    faces, frames, _ = make_run(n_tracks=8, seconds=6, sources=("v.mp4",))
    tl = timeline(faces, frames)
    fig = video_timeline_figure(tl, segments(tl))
    assert len(fig.axes) == 6
    assert "showing 6 of 8 tracks" in fig.get_suptitle()
    out = plot_video_timeline(tl, None, tmp_path / "v.png")
    assert png_size(out) == (1200, 200 + 220 * 6)


def test_video_timeline_without_faces(tmp_path):
    faces, frames, _ = make_run(sources=("v.mp4",))
    tl = timeline(faces.iloc[:0], frames)
    assert png_size(plot_video_timeline(tl, segments(tl), tmp_path / "e.png")) == (1200, 420)


def test_run_shares_png(tmp_path):
    faces, frames, files = make_run()
    out = plot_run_shares(summarize(faces, files, frames), tmp_path / "shares.png")
    assert out.stat().st_size > 2000 and png_size(out) == (800, 400)


def test_write_plots(tmp_path):
    faces, frames, files = make_run()
    paths = write_plots(faces, frames, tmp_path / "plots", files=files)
    names = [p.name for p in paths]
    assert names[0] == "run_shares.png" and len(paths) == 3  # shares + 2 videos, no image
    assert video_plot_name("in", "clips/a <1>.mp4") in names
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert video_plot_name("in", "a/b.mp4") != video_plot_name("in", "a_b.mp4")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", video_plot_name("in", "clips/a <1>.mp4"))


def test_report_is_self_contained_and_complete(tmp_path):
    faces, frames, files = make_run()
    out = write_report(faces, frames, files, tmp_path / "report.html")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for name in ("clips/a &lt;1&gt;.mp4", "b&amp;c.mp4", "photo.jpg", "broken.mov"):
        assert name in page
    assert "decode failed: &lt;moov&gt; &amp; more" in page
    assert "<moov>" not in page and "a <1>" not in page  # every text escaped
    assert page.count('src="data:image/png;base64,') == 3  # shares + 2 video timelines
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "http" not in text and "//" not in text and "url(" not in text
    assert "<link" not in text and "<script" not in text
    assert re.findall(r'(?:src|href)="([^"]*)"', text) == [""] * 3
    assert "track 0" in page and "track 1" in page
    assert not (tmp_path / "report.html.tmp").exists()


def test_report_without_files_or_failures(tmp_path):
    faces, frames, _ = make_run(sources=("v.mp4",))
    page = write_report(faces, frames, None, tmp_path / "r.html").read_text()
    assert "No failed files." in page and "v.mp4" in page


def test_run_plots_label_sub_second_ticks_on_short_clips():
    faces, frames, _ = make_run(n_tracks=1, seconds=2, sources=("short.mp4",))
    tl = timeline(faces, frames, bin_sec=0.5)
    fig = video_timeline_figure(tl, segments(tl))
    fmt = fig.axes[-1].xaxis.get_major_formatter()
    assert [fmt(t, None) for t in (0, 0.5, 1.0, 1.5)] == ["0:00", "0:00.5", "0:01", "0:01.5"]


def test_video_timeline_counts_tracks_apart_from_untracked_faces():
    # Issue 29: the crowd clip's chart said "showing 6 of 15 tracks" where the data had 14
    # tracks plus untracked faces (null track_id), counted as a 15th track.
    faces, frames, _ = make_run(n_tracks=8, seconds=6, sources=("v.mp4",))
    faces["track_id"] = faces["track_id"].astype("Int64")
    faces.loc[faces["track_id"] == 1, "track_id"] = pd.NA  # one band's faces untracked
    tl = timeline(faces, frames)
    title = video_timeline_figure(tl, segments(tl)).get_suptitle()
    assert "of 7 tracks" in title and "untracked faces" in title, title
    shown = [ax.get_ylabel().split("\n")[0] for ax in video_timeline_figure(tl, None).axes]
    n_tracks = sum(label.startswith("track ") for label in shown)
    assert f"showing {n_tracks} of 7 tracks" in title
    assert ("and the untracked faces" in title) == ("untracked" in shown)


def test_video_timeline_draws_a_timestamp_jump_narrow():
    # Issue 28 item 1: 3 s of faces, then 1e12 s later 1 s more: drawn to scale, every face
    # fell into one pixel. The jump is drawn narrow, marked, and the ticks keep real times.
    rng = np.random.default_rng(3)
    t = np.r_[np.arange(0, 3, 0.5), 1e12 + np.arange(0, 1, 0.5)]
    rows = []
    for i, ti in enumerate(t):
        p = rng.dirichlet(np.ones(len(CLASSES)))
        rows.append({"root": "in", "source": "j.mkv", "media_type": "video", "frame_index": i,
                     "t_sec": ti, "face_index": 0, "track_id": 0, "confidence": p.max(),
                     "emotion": CLASSES[int(p.argmax())],
                     **{f"p_{c}": v for c, v in zip(CLASSES, p, strict=True)}})
    tl = timeline(pd.DataFrame(rows), None)
    fig = video_timeline_figure(tl, segments(tl))
    ax = fig.axes[0]
    right = ax.get_xlim()[1]
    assert right < 10  # 3 s + 1 s of faces, and the jump drawn 0.4 s wide
    fmt = ax.xaxis.get_major_formatter()
    assert fmt(right, None).startswith("277777777:46:4")  # 1e12 s as h:mm:ss
    assert any("no face" in text.get_text() for text in ax.texts)
    tl = timeline(pd.DataFrame(rows[:6]), None)  # without the jump
    plain = video_timeline_figure(tl, segments(tl))
    assert plain.axes[0].get_xlim()[1] == 3.0 and not plain.axes[0].texts  # to scale
