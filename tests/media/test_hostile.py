"""Issue 28 (second adversarial round): hostile media — decompression bombs in every container,
thin and audio-only files, offset timestamps — and the native libraries' stderr noise
(issue 29). The files come from tests/hostile_media.py."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import hostile_media as hm
import pytest

from batchemo.errors import DecodeError
from batchemo.media.decode import MAX_IMAGE_PIXELS, iter_frames
from batchemo.media.scan import scan
from batchemo.records import IMAGE, OTHER, VIDEO, MediaInfo, MediaItem

ROOT = Path(__file__).resolve().parents[2]
# "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55…] stream 0, offset 0x1e14: partial file", "[mpeg4 @ 0x…]",
# OpenCV's "[ WARN:0@0.06] global cap.cpp:212 open VIDEOIO(FFMPEG): …"
NATIVE = re.compile(r"\[[\w,]+ @ 0x[0-9a-f]+\]|\[ ?(WARN|ERROR|INFO)")


def only_item(path: Path) -> MediaItem:
    (item,) = scan([path])
    return item


def frames(item: MediaItem, fps: float = 0) -> tuple[list, MediaInfo]:
    info = MediaInfo()
    return [(f.frame_index, f.t_sec, f.image.shape) for f in iter_frames(item, fps, info)], info


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- item 4: the pixel limit holds for what the decoder will produce ------------------------


@pytest.mark.parametrize("make", [hm.bigtiff_bomb, hm.jpeg_bomb_with_junk],
                         ids=["bigtiff", "jpeg-junk-after-app0"])
def test_item4_photo_bombs_are_refused_before_decoding(tmp_path, make):
    # Issue 28 item 4: a 140 KB BigTIFF of 12000² and a 12000² JPEG with a 0x00 byte after
    # APP0 passed the header check (the hand parser gave up) and were decoded at 432 MB.
    path = make(tmp_path / ("bomb.tif" if make is hm.bigtiff_bomb else "bomb.jpg"))
    assert path.stat().st_size < 200_000
    item = only_item(path)
    assert item.media_type == IMAGE
    before = peak_rss_mb()
    with pytest.raises(DecodeError, match=r"image too large: 12000x12000 > 100000000 pixels"):
        frames(item)
    assert peak_rss_mb() - before < 100  # refused from the header: nothing was allocated


def test_item4_mjpeg_video_with_bomb_frames_is_refused(tmp_path):
    # Issue 28 item 4: video frames had no pixel limit (a 12000² MJPEG: 3.5 GB RSS).
    item = only_item(hm.mjpeg_bomb_avi(tmp_path / "bomb.avi"))
    assert item.media_type == VIDEO
    with pytest.raises(DecodeError, match=r"video frames too large: 12000x12000"):
        frames(item, fps=1)


def test_limit_itself_is_unchanged_for_ordinary_media(tmp_path, make_image, make_video):
    # The header check now asks Pillow: ordinary photos and videos still decode in full.
    for name in ("a.jpg", "a.png", "a.tif", "a.webp", "a.bmp"):
        got, info = frames(only_item(make_image(name, size=(90, 120))))
        assert got == [(0, None, (90, 120, 3))] and (info.width, info.height) == (120, 90)
    got, info = frames(only_item(make_video("v.avi", 1, 10, size=(48, 64), codec="MJPG")))
    assert len(got) == 10 and info.warning is None
    assert MAX_IMAGE_PIXELS == 100_000_000


# -- minor: thin images, audio-only MPEG-4, an offset Matroska ------------------------------


@pytest.mark.parametrize("size", [(20000, 3), (3, 20000)])
def test_minor_thin_png_is_no_face_with_a_plain_reason(tmp_path, size):
    # Issue 28 minor: a 20000×3 or 3×20000 PNG was an error row "(-215:Assertion failed)
    # inv_scale_x > 0" from the detector's resize; it is a valid image with room for no face.
    w, h = size
    item = only_item(hm.thin_png(tmp_path / "thin.png", w, h))
    got, info = frames(item)
    assert got == [] and (info.width, info.height) == (w, h)
    assert "too thin to hold a face" in info.warning and f"{w}x{h}" in info.warning


def test_minor_thin_png_in_a_run_is_no_face(tmp_path, random_model):
    import pyarrow.parquet as pq

    from batchemo import RunConfig, run
    from batchemo.output.tables import OutputPaths

    hm.thin_png((tmp_path / "in").mkdir() or tmp_path / "in" / "wide.png", 20000, 3)
    # Issue 28 minor (its last case): a strip just wide enough to be searched (16 px) was still an
    # error row "(-215:Assertion failed) inv_scale_x > 0": the detector scaled it to 0 px high.
    hm.thin_png(tmp_path / "in" / "long.png", 50000, 16)
    out = tmp_path / "r.parquet"
    result = run(RunConfig(input=[str(tmp_path / "in")], out=str(out), model=random_model,
                           quiet=True, workers=0))
    rows = {r["source"]: r for r in pq.read_table(OutputPaths.from_out(out).table("files"))
            .to_pylist()}
    assert result.files_failed == 0 and {r["status"] for r in rows.values()} == {"no_face"}
    assert "too thin to hold a face" in rows["wide.png"]["error"]
    assert rows["long.png"]["error"] is None  # searched: a valid image with no face in it


@pytest.mark.parametrize("name", ["talk.mp4", "talk.jpg", "talk.mov"])
def test_minor_audio_only_mpeg4_is_skipped_not_an_error(tmp_path, name):
    # Issue 28 minor: an audio-only .mp4 (FFmpeg writes brand 'isom', not 'M4A ') or one named
    # .jpg was an error "FFmpeg does not recognise the file"; it is skipped, like a .m4a.
    item = only_item(hm.audio_only_mp4(tmp_path / name))
    assert (item.media_type, item.error) == (OTHER, None)
    assert item.reason == "no video stream (audio-only MPEG-4)"


@pytest.mark.parametrize(("name", "doc_type", "what"), [
    ("talk.mkv", "matroska", "audio-only Matroska"), ("talk.webm", "webm", "audio-only WebM"),
    ("talk.jpg", "matroska", "audio-only Matroska"),  # content decides, as for MPEG-4
])
def test_minor_audio_only_matroska_and_webm_are_skipped_not_errors(tmp_path, name, doc_type,
                                                                    what):
    # Issue 28 minor (its follow-up): an audio-only .mkv or .webm was a VIDEO to the scan, then
    # an error row "cannot open video: FFmpeg does not recognise the file"; skipped now, with
    # the reason an audio-only .mp4 gets.
    item = only_item(hm.audio_only_mkv(tmp_path / name, doc_type))
    assert (item.media_type, item.error, item.reason) == (OTHER, None, f"no video stream ({what})")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")
def test_matroska_and_webm_written_by_ffmpeg(tmp_path):
    # The same, on FFmpeg's own files (SeekHead, Void, CRC-32, Tags; sizes unknown when piped).
    def ffmpeg(name, *args, pipe=False):
        cmd = ["ffmpeg", "-v", "error", "-y", *args]
        with open(tmp_path / name, "wb") as out:
            subprocess.run(cmd + (["-f", Path(name).suffix[1:].replace("mkv", "matroska"), "-"]
                                  if pipe else [str(tmp_path / name)]),
                           check=True, stdout=out if pipe else None)
        return only_item(tmp_path / name)

    sine = ["-f", "lavfi", "-i", "sine=d=1"]
    video = ["-f", "lavfi", "-i", "testsrc=d=1:s=64x48:r=10", "-c:v", "mjpeg"]
    for item, what in [(ffmpeg("opus.webm", *sine, "-c:a", "libopus"), "audio-only WebM"),
                       (ffmpeg("aac.mkv", *sine, "-c:a", "aac"), "audio-only Matroska"),
                       (ffmpeg("piped.mkv", *sine, "-c:a", "aac", pipe=True),
                        "audio-only Matroska")]:
        assert (item.media_type, item.reason) == (OTHER, f"no video stream ({what})"), item
    for item in [ffmpeg("both.mkv", *sine, *video, "-c:a", "aac"),
                 ffmpeg("piped_video.mkv", *video, pipe=True)]:
        assert (item.media_type, item.reason) == (VIDEO, None), item


@pytest.mark.parametrize(("name", "head", "what"), [
    ("talk.ogv", b"OggS\0\2" + bytes(22) + b"\x01\x1evorbis", "Ogg audio"),
    ("talk.flv", b"FLV\x01\x04" + bytes(8), "audio-only Flash Video"),  # flags: audio, no video
    ("talk.mp4", b"\0\0\0\x18ftypM4A " + bytes(12), "audio-only MPEG-4"),
], ids=["ogg", "flv", "m4a-brand"])
def test_sound_only_containers_are_skipped(tmp_path, name, head, what):
    path = tmp_path / name
    path.write_bytes(head + bytes(600))
    item = only_item(path)
    assert (item.media_type, item.error, item.reason) == (OTHER, None, f"no video stream ({what})")


def test_mpeg4_with_video_and_cut_mpeg4_stay_video(tmp_path, make_video):
    video = make_video("v.mp4", 1, 10, size=(48, 64))
    assert only_item(video).media_type == VIDEO
    cut = hm.truncated_mp4(tmp_path / "cut.mp4", video, keep=0.5)  # moov lost: decoder's say
    assert only_item(cut).media_type == VIDEO


def test_minor_mkv_starting_at_1e9_s_is_not_called_truncated(tmp_path):
    # Issue 28 minor: an intact MKV starting at 1e9 s got "truncated or damaged video … 144 of
    # 23976024120 frames": the stated count ran from time 0, not from the stream's start.
    got, info = frames(only_item(hm.offset_mkv(tmp_path / "late.mkv")))
    assert len(got) == 144 and info.warning is None
    assert got[0][1] == 0.0 and info.duration == pytest.approx(6.0, abs=0.05)


def test_mkv_starting_at_1e9_s_cut_short_is_still_truncated(tmp_path):
    path = hm.offset_mkv(tmp_path / "late.mkv")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    got, info = frames(only_item(path))
    assert 0 < len(got) < 100 and "truncated or damaged video" in info.warning
    assert "of 144 frames" in info.warning


@pytest.mark.parametrize("jump", [1e6, 1e12])
def test_a_whole_video_whose_timestamps_jump_is_not_called_truncated(tmp_path, jump):
    # Issue 28 item 1's file: decoded to its stated end, it is whole, though its 72 frames are
    # spread over 1e12 s (was "truncated or damaged video … 72 of 25000000000072 frames").
    from hostile import jump_mkv

    path = jump_mkv(tmp_path, jump, frames=60, after=40)
    got, info = frames(only_item(path))
    assert len(got) == 60 and info.warning is None
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # cut before the jump
    got, info = frames(only_item(path))
    assert 0 < len(got) < 40 and "truncated or damaged video" in info.warning


# -- issue 29 friction: FFmpeg/OpenCV lines on stderr -----------------------------------------


def cut_faststart_mp4(tmp_path: Path, make_video, name: str = "cut.mp4") -> Path:
    video = hm.faststart_mp4(tmp_path / "fast.mp4", make_video("v.mp4", 3, 10, size=(120, 160)))
    return hm.truncated_mp4(tmp_path / name, video, keep=0.5)  # opens, then "partial file"


def test_issue29_decoding_a_cut_video_writes_nothing_to_stderr(tmp_path, make_video, capfd):
    # Issue 29: "[mov,mp4,…] stream 0, offset 0x4f64b: partial file" per packet, and OpenCV's
    # "[ WARN:0] … can't be used to capture by name" for a file it cannot open, went to fd 2.
    cut = cut_faststart_mp4(tmp_path, make_video)
    capfd.readouterr()
    got, info = frames(only_item(cut))
    assert 0 < len(got) < 30 and "truncated" in info.warning
    with pytest.raises(Exception, match="FFmpeg does not recognise"):
        frames(MediaItem(str(tmp_path), "a.mp4", hm.audio_only_mp4(tmp_path / "a.mp4"), VIDEO))
    assert capfd.readouterr().err == ""


@pytest.mark.slow
def test_issue29_quiet_run_prints_no_native_ffmpeg_or_opencv_lines(tmp_path, make_video,
                                                                   random_model):
    # Issue 29: --quiet still printed ~25 "[mov,mp4,…] … partial file" lines before the useful
    # warning; in cron (no TTY) too. In spawned workers (which decode) as in the driver.
    (tmp_path / "in").mkdir()
    cut_faststart_mp4(tmp_path, make_video, "in/cut.mp4")
    hm.jpeg_bomb_with_junk(tmp_path / "in" / "bomb.jpg")
    for workers in ("1",):
        proc = subprocess.run(
            [sys.executable, "-m", "batchemo", "run", "-i", str(tmp_path / "in"), "-o",
             str(tmp_path / f"r{workers}.parquet"), "--model", str(random_model), "--quiet",
             "--workers", workers],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
            env={**_env(), "PYTHONPATH": str(ROOT)})
        lines = proc.stderr.splitlines()
        assert proc.returncode == 1, proc.stderr
        assert not [x for x in lines if NATIVE.match(x)], lines
        assert any("cut.mp4" in x for x in lines), lines  # batchemo's own warning is kept
        assert any("image too large" in x for x in lines), lines


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items()
            if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}
