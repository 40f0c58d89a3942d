import gc
import logging
import math
import struct
import time
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import MEDIA, ODD_NAME, needs_shared

from batchemo.errors import DecodeError, MediaOpenError
from batchemo.media import decode
from batchemo.media.decode import MAX_IMAGE_PIXELS, iter_frames, read_image
from batchemo.media.scan import scan
from batchemo.records import IMAGE, OTHER, VIDEO, MediaInfo, MediaItem

IMAGES, VIDEOS = MEDIA / "images", MEDIA / "videos"


def item_for(path: Path, media_type: str | None = None) -> MediaItem:
    if media_type is None:
        (found,) = scan([path])
        return found
    return MediaItem(str(path), path.name, path, media_type)


def frames_of(path: Path, fps: float = 0, media_type: str | None = None):
    info = MediaInfo()
    frames = [(f.frame_index, f.t_sec, f.image.shape, f.image.dtype)
              for f in iter_frames(item_for(path, media_type), fps, info)]  # fmt: skip
    return frames, info


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


# ---------------------------------------------------------------- images


def test_image_bgr_and_one_frame(make_image):
    p = make_image("a.jpg", size=(60, 90), faces=[(20, 5, 40)])
    img = read_image(p)
    assert img.shape == (60, 90, 3) and img.dtype == np.uint8
    info = MediaInfo()
    (frame,) = iter_frames(item_for(p), 2.0, info)
    assert (frame.frame_index, frame.t_sec) == (0, None)
    assert np.array_equal(frame.image, img)
    assert (info.width, info.height, info.frames_sampled, info.decode_failures) == (90, 60, 1, 0)
    assert info.fps is None and info.duration is None


@pytest.mark.parametrize("ext", [".png", ".bmp", ".webp", ".tif", ".tiff", ".jpeg"])
def test_image_formats(make_image, ext):
    img = read_image(make_image(f"f{ext}", size=(30, 40)))
    assert img.shape == (30, 40, 3) and img.dtype == np.uint8


def test_gray_becomes_three_equal_channels(make_image):
    img = read_image(make_image("g.png", channels=1))
    assert img.shape[2] == 3
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_alpha_dropped_keeping_stored_colour(make_image):
    p = make_image("rgba.png", size=(40, 40), channels=4)
    stored = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert stored.shape[2] == 4 and stored[0, 0, 3] == 0  # the top band is transparent
    img = read_image(p)
    assert img.shape == (40, 40, 3)
    assert np.array_equal(img, stored[..., :3])  # not composited on white


def test_16_bit_scaled_to_8_bit(make_image):
    p = make_image("deep.png", size=(20, 30), dtype=np.uint16)
    assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    img = read_image(p)
    assert img.dtype == np.uint8
    expected = (cv2.imread(str(p), cv2.IMREAD_UNCHANGED) >> 8).astype(np.uint8)
    assert np.array_equal(img, expected)


def test_16_bit_gray_tiff(tmp_path):
    p = tmp_path / "g16.tif"
    cv2.imwrite(str(p), np.full((10, 12), 40000, np.uint16))
    img = read_image(p)
    assert img.shape == (10, 12, 3) and img.dtype == np.uint8 and (img == 40000 >> 8).all()


def test_multipage_tiff_first_page(tmp_path):
    p = tmp_path / "pages.tiff"
    red, green = (0, 0, 255), (0, 255, 0)
    pages = [np.full((10, 10, 3), red, np.uint8), np.full((20, 30, 3), green, np.uint8)]
    assert cv2.imwritemulti(str(p), pages)
    img = read_image(p)
    assert img.shape == (10, 10, 3) and tuple(img[0, 0]) == red


def test_cmyk_jpeg(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="Pillow writes the CMYK JPEG")
    p = tmp_path / "cmyk.jpg"
    pil.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p)  # pure red in CMYK
    b, g, r = read_image(p)[8, 8].astype(int)
    assert r > 200 and g < 40 and b < 40


TURNS = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_CLOCKWISE, 8: cv2.ROTATE_90_COUNTERCLOCKWISE}


@pytest.mark.parametrize(("orientation", "turn"), TURNS.items())
def test_exif_orientation_synthetic(tmp_path, orientation, turn):
    pil = pytest.importorskip("PIL.Image", reason="Pillow writes the EXIF tag")
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :20] = 255  # a white block in the stored top-left corner
    exif = pil.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    pil.fromarray(stored).save(p, exif=exif, quality=95)
    img = read_image(p)
    assert corr(gray(img), gray(cv2.rotate(stored, turn))) > 0.95


def test_png_bomb_refused_from_header(make_png_bomb):
    p = make_png_bomb("bomb.png")
    assert p.stat().st_size < 100_000
    start = time.perf_counter()
    with pytest.raises(DecodeError, match=rf"image too large: 400000000 pixels > {MAX_IMAGE_PIXELS}"):
        read_image(p)
    assert time.perf_counter() - start < 0.5  # refused before decoding 1.2 GB


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tif", ".gif", ".webp"])
def test_header_sizes(tmp_path, make_image, monkeypatch, ext):
    if ext == ".gif":
        pil = pytest.importorskip("PIL.Image", reason="Pillow writes the GIF")
        p = tmp_path / "x.gif"
        pil.new("RGB", (37, 23)).save(p)
    else:
        p = make_image(f"x{ext}", size=(23, 37))
    monkeypatch.setattr(decode, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DecodeError, match="image too large: 37x23 > 100 pixels"):
        read_image(p)


@pytest.mark.parametrize("lossless", [False, True])
def test_webp_header_sizes(tmp_path, monkeypatch, lossless):
    p = tmp_path / "x.webp"
    quality = 101 if lossless else 80  # above 100 OpenCV writes lossless (VP8L)
    cv2.imwrite(str(p), np.zeros((23, 37, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, quality])
    assert p.read_bytes()[12:16] == (b"VP8L" if lossless else b"VP8 ")
    monkeypatch.setattr(decode, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DecodeError, match="37x23"):
        read_image(p)


def test_bad_images(tmp_path, make_zero_byte, make_text_as_jpg):
    with pytest.raises(MediaOpenError, match=r"empty file \(0 bytes\)"):
        read_image(make_zero_byte("z.jpg"))
    with pytest.raises(MediaOpenError, match="not an image"):
        read_image(make_text_as_jpg("t.jpg"))
    with pytest.raises(MediaOpenError, match="cannot read file"):
        read_image(tmp_path / "missing.jpg")


def test_truncated_png_is_decode_error(make_image):
    p = make_image("cut.png", size=(50, 50))
    p.write_bytes(p.read_bytes()[:-60])
    with pytest.raises(DecodeError, match="cannot decode png"):
        read_image(p)


def test_truncated_jpeg_keeps_decoded_part(make_image, make_truncated_jpeg, caplog):
    whole = read_image(make_image("whole/cut.jpg", faces=[(40, 20, 60)]))  # same seed: same bytes
    p = make_truncated_jpeg("cut.jpg", keep=0.6)
    with caplog.at_level(logging.WARNING, logger="batchemo.media.decode"):
        img = read_image(p)
    assert "truncated JPEG" in caplog.text
    assert img.shape == whole.shape
    assert np.abs(img[:10].astype(int) - whole[:10]).mean() < 3  # the top came through
    assert (img[-1] == 128).all()  # the missing rows are gray
    info = MediaInfo()
    (frame,) = iter_frames(item_for(p), 0, info)
    assert info.decode_failures == 1 and frame.image.shape == whole.shape


def test_iter_frames_refuses_error_and_other_items(tmp_path, make_text_as_jpg):
    (bad,) = scan([make_text_as_jpg("t.jpg")])
    with pytest.raises(MediaOpenError, match="not an image"):
        next(iter_frames(bad, 0, MediaInfo()))
    side = tmp_path / "a.srt"
    side.write_text("x")
    (other,) = scan([side])
    with pytest.raises(MediaOpenError, match=r"not media \(.srt\)"):
        next(iter_frames(other, 0, MediaInfo()))
    with pytest.raises(ValueError, match="fps"):
        next(iter_frames(other, -1, MediaInfo()))


def test_odd_path_image(make_image):
    p = make_image(Path("odd") / ODD_NAME, size=(20, 20))
    assert read_image(p).shape == (20, 20, 3)


@needs_shared
def test_real_exif_orientation6_upright():
    upright = gray(read_image(IMAGES / "grayscale_single_face.jpg"))
    img = read_image(IMAGES / "exif_orientation6_rotated_face.jpg")
    stored = cv2.imread(str(IMAGES / "exif_orientation6_rotated_face.jpg"),
                        cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # fmt: skip
    assert img.shape == upright.shape + (3,)
    assert corr(gray(img), upright) > 0.95
    assert corr(gray(stored), upright) < 0.5  # the stored pixels really are sideways


@needs_shared
def test_real_grayscale_jpeg():
    img = read_image(IMAGES / "group_solvay_1927_grayscale.jpg")
    assert img.shape == (881, 1280, 3)


# ---------------------------------------------------------------- videos


def test_every_frame_at_fps0(make_video):
    p = make_video("v.mp4", 2.0, 10, size=(48, 64))
    frames, info = frames_of(p, 0)
    assert [f[0] for f in frames] == list(range(20))
    assert np.allclose([f[1] for f in frames], np.arange(20) / 10)
    assert all(shape == (48, 64, 3) and dtype == np.uint8 for _, _, shape, dtype in frames)
    assert (info.width, info.height, info.fps, info.frames_sampled) == (64, 48, 10, 20)
    assert info.duration == pytest.approx(2.0) and info.decode_failures == 0


@pytest.mark.parametrize(("fps", "expected"), [
    (2, [0, 5, 10, 15, 20, 25]),  # 0.0, 0.5, ... 2.5 s
    (3, [0, 4, 7, 10, 14, 17, 20, 24, 27]),  # first frame at or after k/3 s
    (0.4, [0, 25]),
    (10, list(range(30))),
    (50, list(range(30))),  # faster than the video: every frame once
])  # fmt: skip
def test_sampling_by_time(make_video, fps, expected):
    frames, info = frames_of(make_video("v.avi", 3.0, 10, codec="MJPG"), fps)
    assert [f[0] for f in frames] == expected
    assert info.frames_sampled == len(expected)
    for index, t, *_ in frames:
        assert t == pytest.approx(index / 10)


def test_gray_video_gives_bgr(make_video):
    frames, _ = frames_of(make_video("g.avi", 0.5, 10, codec="MJPG", color=False), 0)
    assert frames and all(shape[2:] == (3,) for _, _, shape, _ in frames)


def test_odd_path_video(make_video):
    frames, _ = frames_of(make_video("ordner mit leerzeichen/vidéo 日本.mp4", 0.5, 10), 0)
    assert len(frames) == 5


def test_one_frame_alive_at_a_time(make_video):
    it = iter_frames(item_for(make_video("v.mp4", 1.0, 10)), 0, MediaInfo())
    ref = weakref.ref(next(it).image)
    next(it)
    gc.collect()
    assert ref() is None  # dropped by the consumer, so gone before the next frame decoded
    it.close()


def test_bad_videos(tmp_path, make_truncated_mp4, make_zero_byte):
    with pytest.raises(MediaOpenError, match="cannot open video"):
        frames_of(make_truncated_mp4("cut.mp4"), 0, VIDEO)
    with pytest.raises(MediaOpenError, match="cannot open video"):
        frames_of(make_zero_byte("z.mp4"), 0, VIDEO)
    (empty,) = scan([tmp_path / "z.mp4"])
    with pytest.raises(MediaOpenError, match=r"empty file \(0 bytes\)"):
        frames_of(empty.path, 0)


def test_truncated_avi_plays_what_is_there(make_video, tmp_path):
    p = make_video("cut.avi", 2.0, 10, codec="MJPG")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    frames, info = frames_of(p, 0)
    assert 3 < len(frames) < 20 and info.decode_failures == 0


class FakeCapture:
    """Scripted VideoCapture: each step is (grab_ok, pos_msec, retrieve_ok), then False forever."""

    def __init__(self, steps, fps=10.0):
        self.steps, self.fps, self.pos, self.released = list(steps), fps, 0.0, False
        self.retrieved = 0

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop):
        return {
            cv2.CAP_PROP_FPS: self.fps,
            cv2.CAP_PROP_POS_MSEC: self.pos,
            cv2.CAP_PROP_FRAME_WIDTH: 4,
            cv2.CAP_PROP_FRAME_HEIGHT: 2,
        }.get(prop, 0.0)

    def grab(self):
        if not self.steps:
            return False
        self.ok, self.pos, self.retrieve_ok = self.steps.pop(0)
        return self.ok

    def retrieve(self):
        self.retrieved += 1
        return (True, np.zeros((2, 4, 3), np.uint8)) if self.retrieve_ok else (False, None)

    def release(self):
        self.released = True


def run_fake(monkeypatch, steps, fps=0.0, container_fps=10.0):
    cap = FakeCapture(steps, container_fps)
    monkeypatch.setattr(decode, "_open_capture", lambda path: cap)
    info = MediaInfo()
    item = MediaItem("r", "v.mp4", Path("/nowhere/v.mp4"), VIDEO)
    frames = [(f.frame_index, f.t_sec) for f in iter_frames(item, fps, info)]
    assert cap.released
    return frames, info, cap


def test_midstream_failures_counted_and_skipped(monkeypatch):
    steps = [(True, 0, True), (False, 0, False), (False, 0, False), (True, 200, True),
             (True, 300, False), (True, 400, True)]  # fmt: skip
    frames, info, _ = run_fake(monkeypatch, steps)
    assert frames == [(0, 0.0), (1, 0.2), (3, 0.4)]
    assert info.decode_failures == 3  # two grabs, one retrieve; the end of stream is not one
    assert info.duration == pytest.approx(0.5)


def test_failed_retrieve_leaves_sample_to_next_frame(monkeypatch):
    steps = [(True, 0, True), (True, 500, False), (True, 600, True), (True, 1000, True)]
    frames, info, _ = run_fake(monkeypatch, steps, fps=2)
    assert frames == [(0, 0.0), (2, 0.6), (3, 1.0)] and info.decode_failures == 1


def test_endless_failures_terminate(monkeypatch):
    steps = [(True, 0, True)] + [(True, 100 * i, False) for i in range(1, 10_000)]
    frames, info, cap = run_fake(monkeypatch, steps)
    assert frames == [(0, 0.0)]
    assert info.decode_failures == decode.MAX_CONSECUTIVE_FAILURES == cap.retrieved - 1
    grabs = [(True, 0, True)] + [(False, 0, False)] * 10_000  # never at an end
    frames, info, cap = run_fake(monkeypatch, grabs)
    assert frames == [(0, 0.0)] and len(cap.steps) == 10_000 - decode.MAX_CONSECUTIVE_FAILURES


def test_sporadic_grab_failures_do_not_end_the_stream(monkeypatch):
    steps = [s for i in range(60) for s in ((True, 100 * i, True), (False, 0, False))]
    frames, info, _ = run_fake(monkeypatch, steps, fps=1)
    assert [f[0] for f in frames] == [0, 10, 20, 30, 40, 50] and info.decode_failures == 59


def test_grab_only_for_unsampled_frames(monkeypatch):
    steps = [(True, 100 * i, True) for i in range(30)]
    frames, _, cap = run_fake(monkeypatch, steps, fps=1)
    assert [f[0] for f in frames] == [0, 10, 20] and cap.retrieved == 3


def test_zero_pos_msec_falls_back_to_frame_count(monkeypatch):
    frames, _, _ = run_fake(monkeypatch, [(True, 0, True)] * 5, container_fps=4)
    assert frames == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]


def test_decreasing_pos_msec_falls_back_without_going_back(monkeypatch):
    steps = [(True, ms, True) for ms in (0, 100, 900, 50, 60)]
    frames, _, _ = run_fake(monkeypatch, steps)
    assert [t for _, t in frames] == pytest.approx([0.0, 0.1, 0.9, 1.0, 1.1])


def test_no_frames_is_decode_error(monkeypatch):
    with pytest.raises(DecodeError, match="no frame could be decoded"):
        run_fake(monkeypatch, [])
    with pytest.raises(DecodeError, match=r"no frame could be decoded \(3 failed\)"):
        run_fake(monkeypatch, [(True, 0, False)] * 3)


def test_unknown_container_fps(monkeypatch):
    frames, info, _ = run_fake(monkeypatch, [(True, 0, True), (True, 40, True)], container_fps=0)
    assert info.fps is None and info.duration == pytest.approx(0.04) and len(frames) == 2


# ---------------------------------------------------------------- real videos


def _boxes(data: bytes, start: int, end: int):
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        size = size or end - start
        yield kind, start + head, start + size
        start += size


def _box(data: bytes, start: int, end: int, *path: bytes):
    for kind, s, e in _boxes(data, start, end):
        if kind == path[0]:
            return (s, e) if len(path) == 1 else _box(data, s, e, *path[1:])
    return None


def container_pts(path: Path) -> np.ndarray:
    """Presentation times (s) of the video track from the MP4/MOV sample tables (stts, ctts)."""
    data = path.read_bytes()
    moov = _box(data, 0, len(data), b"moov")
    for kind, s, e in _boxes(data, *moov):
        hdlr = _box(data, s, e, b"mdia", b"hdlr") if kind == b"trak" else None
        if not hdlr or data[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        mdhd = _box(data, s, e, b"mdia", b"mdhd")[0]
        scale = struct.unpack(">I", data[mdhd + (20 if data[mdhd] == 1 else 12) :][:4])[0]

        def table(name: bytes, fmt: str, s: int = s, e: int = e) -> list[int]:
            box = _box(data, s, e, b"mdia", b"minf", b"stbl", name)
            if box is None:
                return []
            (n,) = struct.unpack(">I", data[box[0] + 4 : box[0] + 8])
            rows = struct.iter_unpack(fmt, data[box[0] + 8 : box[0] + 8 + 8 * n])
            return [value for count, value in rows for _ in range(count)]

        deltas = table(b"stts", ">II")
        dts = np.concatenate([[0], np.cumsum(deltas)[:-1]])
        offsets = table(b"ctts", ">Ii") or [0] * len(dts)
        return np.sort(dts + np.array(offsets)) / scale
    raise AssertionError("no video track")


@needs_shared
@pytest.mark.parametrize("name", ["face_then_cut_to_noface.mov", "noface_then_face.mov"])
def test_real_variable_rate_timestamps_match_container(name):
    frames, info = frames_of(VIDEOS / name, 0)
    t = np.array([f[1] for f in frames])
    assert (np.diff(t) > 0).all()
    pts = container_pts(VIDEOS / name)
    assert len(t) == len(pts) == 169
    assert np.abs(t - pts).max() < 1e-3
    # frame_index / fps would be wrong here by a third of a second
    assert np.abs(t - np.arange(len(t)) / info.fps).max() > 0.3
    assert (info.width, info.height) == (960, 540)


@needs_shared
def test_real_title_card_decodes_95_of_claimed_98():
    cap = cv2.VideoCapture(str(VIDEOS / "no_face_title_card.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 98
    cap.release()
    frames, info = frames_of(VIDEOS / "no_face_title_card.mp4", 0)
    assert len(frames) == info.frames_sampled == 95 and info.decode_failures == 0
    assert [f[0] for f in frames] == list(range(95))
    assert info.duration == pytest.approx(4.0, abs=0.05)


@needs_shared
def test_real_two_samples_per_second():
    frames, info = frames_of(VIDEOS / "closeup_changing_expression.mp4", 2)
    t = np.array([f[1] for f in frames])
    assert 39 <= len(t) <= 41
    assert np.abs(np.diff(t) - 0.5).max() < 1 / info.fps
    assert all(k / 2 <= tk < k / 2 + 1 / info.fps for k, tk in enumerate(t))
    assert info.fps == pytest.approx(23.976, abs=1e-3)
    assert info.duration == pytest.approx(19.7, abs=0.05)
    assert math.isclose(info.frames_sampled, len(t))
    assert all(shape == (360, 640, 3) for _, _, shape, _ in frames)


@needs_shared
@pytest.mark.slow
def test_real_media_every_file_decodes():
    for item in scan([MEDIA]):
        if item.media_type == OTHER:
            continue
        info = MediaInfo()
        n = sum(1 for _ in iter_frames(item, 1, info))
        assert n == info.frames_sampled >= 1 and info.width and info.height
        assert info.decode_failures == 0
        if item.media_type == IMAGE:
            assert n == 1
