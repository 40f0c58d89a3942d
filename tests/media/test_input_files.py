"""Inputs as archives hold them: names that are not UTF-8, every container and photo format,
outputs inside an input root, truncated files, symlinks (issue 14's adversarial run, items 5, 10,
11, 12, 14)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import needs_shared
from facedraw import draw_face
from helpers import faces_at, read_output, run_cfg

from batchemo import run
from batchemo.output.tables import OutputPaths

# -- 5. names that are not UTF-8 stay distinct ------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes")
def test_item5_non_utf8_names_stay_distinct_and_are_not_reprocessed(tmp_path, make_image,
                                                                    random_model):
    raw = os.fsencode(tmp_path / "in")
    os.makedirs(raw)
    for byte, n in ((b"\xff", 1), (b"\xfe", 2)):
        p = make_image(f"{n}.png", size=(160, 240), faces=faces_at(n))
        os.rename(p, os.path.join(raw, byte + b".png"))
    out = tmp_path / "res.parquet"
    cfg = run_cfg([tmp_path / "in"], out, random_model)
    assert run(cfg).exit_code == 0
    faces = read_output(out)
    assert faces.groupby("source").size().to_dict() == {"\\xfe.png": 2, "\\xff.png": 1}
    again = run(cfg)
    assert again.files_unchanged == 2 and again.files_new + again.files_changed == 0
    assert len(read_output(out)) == 3


# -- 10. more formats: probed by content, decoded -----------------------------------------------

VIDEO_FORMATS = {".flv": "FLV1", ".wmv": "WMV2", ".asf": "WMV1", ".3gp": "mp4v",
                 ".ts": "MPG2", ".m2ts": "mp4v", ".mts": "MPG2", ".ogv": "VP80"}


def _still(path, fmt):
    """A photo with a face written by Pillow (HEIF through pillow-heif)."""
    from PIL import Image

    if fmt == "HEIF":
        pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif writes HEIF")
        pillow_heif.register_heif_opener()
    bgr = np.full((200, 240, 3), 90, np.uint8)
    draw_face(bgr, 60, 40, 96)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(bgr[:, :, ::-1].copy()).save(path, format=fmt)
    return path


@pytest.fixture
def every_format(tmp_path, make_video):
    for ext, fourcc in VIDEO_FORMATS.items():
        make_video(f"in/clip{ext}", seconds=1, fps=10, size=(200, 240), codec=fourcc,
                   faces_fn=lambda i, t: [(60, 40, 96)])
    for ext, fmt in ((".gif", "GIF"), (".heic", "HEIF"), (".avif", "AVIF")):
        _still(tmp_path / f"in/photo{ext}", fmt)
    _still(tmp_path / "in/iphone_renamed.jpg", "HEIF")  # a HEIC that says .jpg
    flv = (tmp_path / "in/clip.flv").read_bytes()
    (tmp_path / "in/flash_video.dat").write_bytes(flv)  # an extension that names no media
    (tmp_path / "in/song.ogg").write_bytes(b"OggS\0\2" + bytes(22) + b"\x01vorbis" + bytes(400))
    (tmp_path / "in/notes.txt").write_text("Get free stuff\n" + "G" * 600)  # looks like no media
    return tmp_path / "in"


@pytest.mark.parametrize("name", [f"clip{e}" for e in VIDEO_FORMATS]
                         + ["photo.gif", "photo.heic", "photo.avif", "iphone_renamed.jpg",
                            "flash_video.dat"])
def test_item10_format_is_recognised_and_decoded(every_format, name):
    from batchemo.media.decode import iter_frames
    from batchemo.media.scan import scan
    from batchemo.records import MediaInfo

    (item,) = scan([every_format / name])
    video = name.startswith("clip") or name.endswith(".dat")
    assert item.media_type == ("video" if video else "image") and not item.error
    info = MediaInfo()
    frames = list(iter_frames(item, 0, info))
    assert len(frames) == (10 if video else 1)
    assert frames[0].image.shape == (200, 240, 3)
    face = frames[-1].image[40 + 48, 60 + 48].astype(int)  # the skin colour, BGR
    assert np.abs(face - [140, 170, 215]).max() < 40, face


def test_item10_every_format_gives_face_rows_and_non_media_is_skipped(every_format, tmp_path,
                                                                      random_model):
    out = tmp_path / "res.parquet"
    assert run(run_cfg([every_format], out, random_model, fps=5)).exit_code == 0
    files = read_output(out, "files").set_index("source")
    assert files.loc["song.ogg", "status"] == "skipped"
    assert files.loc["notes.txt", "status"] == "skipped"
    media = files.drop(index=["song.ogg", "notes.txt"])
    assert (media.status == "ok").all(), media[media.status != "ok"][["status", "error"]]
    assert (media.faces >= 1).all()


# -- 11. a run's own outputs inside an input root are not inputs ------------------------------


@pytest.mark.parametrize("out_name", ["res.parquet", "res.csv", "res/"])
def test_item11_outputs_state_and_plots_inside_the_root_are_not_scanned(
        tmp_path, make_image, make_video, random_model, out_name):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    make_video("in/v.mp4", seconds=1, fps=10, size=(160, 200), faces_fn=lambda i, t: faces_at(1))
    out = f"{tmp_path / 'in' / out_name}"
    cfg = run_cfg([tmp_path / "in"], out, random_model, plots=tmp_path / "in" / "plots")
    run(cfg)
    again = run(cfg)
    assert (again.files_unchanged, again.files_skipped, again.files_new) == (2, 0, 0)
    files = OutputPaths.from_out(out).table("files")
    if out_name.endswith(".csv"):
        sources = pd.read_csv(files).source
    else:
        sources = pq.read_table(files).to_pandas().source
    assert sorted(sources) == ["a.png", "v.mp4"]


# -- 12. a truncated file that is still used says so in `error` -------------------------------


def test_item12_truncated_jpeg_and_video_are_used_with_a_warning_in_error(
        tmp_path, make_truncated_jpeg, make_video, random_model):
    make_truncated_jpeg("in/cut.jpg", keep=0.6)
    avi = make_video("in/cut.avi", 3.0, 10, size=(160, 200), codec="MJPG",
                     faces_fn=lambda i, t: faces_at(1))
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    make_video("in/whole.avi", 1.0, 10, size=(160, 200), codec="MJPG")
    out = tmp_path / "res.parquet"
    assert run(run_cfg([tmp_path / "in"], out, random_model)).exit_code == 0
    files = read_output(out, "files").set_index("source")
    for name in ("cut.jpg", "cut.avi"):
        assert files.loc[name, "status"] in ("ok", "no_face")
        assert "truncated" in files.loc[name, "error"], name
    assert "of 3.0 s" in files.loc["cut.avi", "error"]
    assert pd.isna(files.loc["whole.avi", "error"])


@needs_shared
def test_item12_truncated_real_mp4_is_used_with_a_warning(tmp_path, copy_shared, random_model):
    p = copy_shared("videos/closeup_changing_expression.mp4", "in/cut.mp4")  # index up front
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    out = tmp_path / "res.parquet"
    run(run_cfg([tmp_path / "in"], out, random_model, fps=1))
    (row,) = read_output(out, "files").to_dict("records")
    assert row["status"] in ("ok", "no_face") and "truncated" in row["error"]


# -- 14. symlinks: each real file once --------------------------------------------------------


def test_item14_file_symlinks_are_followed_once_by_real_path(tmp_path, make_image, random_model):
    make_image("in/real/r.png", size=(160, 200), faces=faces_at(1))
    make_image("outside/o.png", size=(160, 200), faces=faces_at(2))
    root = tmp_path / "in"
    os.symlink(root / "real" / "r.png", root / "a_link.png")  # into the root
    os.symlink(tmp_path / "outside" / "o.png", root / "b_out.png")  # out of the root
    os.symlink(tmp_path / "outside" / "o.png", root / "c_out_again.png")  # same file again
    out = tmp_path / "res.parquet"
    assert run(run_cfg([root], out, random_model)).exit_code == 0
    assert read_output(out).groupby("source").size().to_dict() == {"b_out.png": 2, "real/r.png": 1}
    files = read_output(out, "files").set_index("source")
    assert files.loc["a_link.png", "status"] == "skipped"
    assert "real/r.png" in files.loc["a_link.png", "error"]
    assert files.loc["c_out_again.png", "status"] == "skipped"
    assert "b_out.png" in files.loc["c_out_again.png", "error"]
