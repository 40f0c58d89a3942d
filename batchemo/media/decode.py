"""Decode images (upright, 3-channel, 8-bit BGR) and time-sampled video frames."""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from batchemo._util.quiet import quiet_video_libraries
from batchemo.errors import DecodeError, MediaOpenError
from batchemo.media.scan import image_format
from batchemo.records import IMAGE, VIDEO, Frame, MediaInfo, MediaItem

log = logging.getLogger(__name__)
quiet_video_libraries()  # here: every process that decodes (workers too) imports this module

# Above any camera still (a 100 MP decode is 300 MB), for photos and video frames alike. The check
# reads the header only, so a tiny "decompression bomb" is refused before anything is allocated.
MAX_IMAGE_PIXELS = 100_000_000
# No face fits in an image with a side this short (crops are 48 px; detectors find none under
# ~20 px): such a photo is valid but is not searched (status no_face, with a note why).
MIN_FACE_SIDE = 16
# About a second of video: after this many failed grab()/retrieve() in a row the file is over.
MAX_CONSECUTIVE_FAILURES = 25
# Matroska/WebM store whole milliseconds (1/30 s is 0.033): without slack such a frame would miss
# its sample time and the next frame would be taken instead.
_T_SLACK = 1e-3
_FALLBACK_FPS = 25.0  # only when the container states no usable frame rate either


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to an upright H×W×3 uint8 BGR array.

    EXIF orientation is applied; gray becomes 3 channels; alpha is dropped (the stored colour
    is kept, not composited); 16-bit is scaled to 8-bit; CMYK JPEG is converted; a multi-page
    TIFF gives its first page. A truncated JPEG gives what is there (missing rows gray) and a
    warning. Raises MediaOpenError (unreadable, empty, not an image) or DecodeError (over
    MAX_IMAGE_PIXELS, corrupt).
    """
    image, problem = _decode_image(Path(path))
    if problem:
        log.warning("%s: %s", path, problem)
    return image


def iter_frames(item: MediaItem, fps: float, info: MediaInfo) -> Iterator[Frame]:
    """Yield the upright BGR frames of an image (one) or a video (sampled by time), filling `info`.

    Video: `fps` samples per second of media time, the first frame at or after each k/fps;
    fps=0 yields every frame. Only one decoded frame is alive at a time. Failed frames are
    counted in info.decode_failures and skipped. Raises MediaOpenError / DecodeError when the
    file gives no frame at all.
    """
    if not (fps >= 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a finite number >= 0, got {fps!r}")
    if item.error:
        raise MediaOpenError(item.error)
    if item.media_type == IMAGE:
        image, problem = _decode_image(item.path)
        if problem:
            log.warning("%s: %s", item.path, problem)
            info.decode_failures += 1
            info.warning = problem
        info.height, info.width = image.shape[:2]
        if min(image.shape[:2]) < MIN_FACE_SIDE:  # a 20000x3 strip: valid, but holds no face
            info.warning = (f"image {info.width}x{info.height} too thin to hold a face (a side "
                            f"under {MIN_FACE_SIDE} pixels): not searched")
            log.info("%s: %s", item.path, info.warning)
            return
        info.frames_sampled = 1
        yield Frame(frame_index=0, t_sec=None, image=image)
    elif item.media_type == VIDEO:
        yield from _iter_video(item.path, fps, info)
    else:
        raise MediaOpenError(item.reason or f"not media: {item.media_type}")


def expected_samples(item: MediaItem, fps: float) -> int | None:
    """About how many frames `iter_frames` yields for `item` (a progress bar's total), from the
    container's header without decoding; None when the header does not say."""
    if item.media_type != VIDEO:
        return 1 if item.media_type == IMAGE else 0
    cap = _open_capture(item.path)
    try:
        n, rate = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    if not (math.isfinite(n) and n > 0):
        return None
    if fps == 0:
        return int(n)
    return max(1, math.ceil(n / rate * fps)) if 0 < rate < 1000 else None


def _decode_image(path: Path) -> tuple[np.ndarray, str | None]:
    # Bytes + imdecode rather than imread: one read serves the header check and the decode, and
    # imdecode applies EXIF orientation too (checked on OpenCV 4.14).
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaOpenError(f"cannot read file: {e.strerror or e}") from e
    if not data:
        raise MediaOpenError("empty file (0 bytes)")
    fmt = image_format(data[:64])
    if fmt is None:
        raise MediaOpenError("not an image: content is not a known image format")
    _check_pixels(*_header_size(data, fmt), "image")
    if fmt in ("heif", "avif"):  # iPhone photos and AVIF: OpenCV's wheels decode neither
        return _decode_with_pillow(data, fmt), None
    problem = None
    if fmt == "jpeg" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        # No end-of-image after the last scan: the file was cut. imdecode refuses such a buffer
        # while imread keeps the decoded part; appending the marker gives imdecode the same
        # partial image (missing rows gray).
        data += b"\xff\xd9"
        problem = "truncated JPEG (no end-of-image marker): missing part decoded as gray"
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:  # OpenCV's own pixel limit, or a codec assertion
        raise DecodeError(f"cannot decode {fmt} image: {e.err or e}") from e
    if image is None:
        raise DecodeError(f"cannot decode {fmt} image: corrupt or truncated data")
    return _to_bgr8(image), problem


def _header_size(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) the decode will produce, read by Pillow, which opens lazily: it parses
    the header the way libjpeg/libtiff do (skipping junk bytes between JPEG markers, reading
    BigTIFF) without decoding a pixel. A header it cannot read is refused: without a size the
    decode could allocate anything."""
    if fmt == "heif":
        _register_heif()
    try:
        with warnings.catch_warnings():  # Pillow warns from 89 MP; MAX_IMAGE_PIXELS decides here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError as e:  # Pillow refuses twice its own limit outright,
        # naming the pixel count but not the sides
        count = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{count[1]} pixels" if count else "the header's size"
        raise DecodeError(f"image too large: {size} > {MAX_IMAGE_PIXELS} pixels") from None
    except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        raise DecodeError(f"cannot read the {fmt} header: {e}") from None


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise DecodeError(f"{what} too large: {width}x{height} > {MAX_IMAGE_PIXELS} pixels")


def _register_heif() -> None:
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()  # idempotent
    except ImportError:
        raise DecodeError("HEIF photos need pillow-heif: pip install pillow-heif") from None


def _decode_with_pillow(data: bytes, fmt: str) -> np.ndarray:
    """HEIF (pillow-heif's opener) and AVIF (Pillow's own) to upright BGR; the size is checked."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DecodeError(f"cannot decode {fmt} image: {e}") from e
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _cut_short(cap: cv2.VideoCapture, decoded: int, info: MediaInfo,
               first_pts: float | None) -> str | None:
    """Why the video ended before its container says it should (a truncated file), or None.

    Containers only estimate their frame count at times, hence the slack (10 %, 2 frames).
    The count comes from the stated duration, which some muxers (FFmpeg's Matroska) write as
    the absolute end time: a stream starting at 1e9 s would "lack" 24 billion frames. The
    first frame's own timestamp (in frames, `first_pts`) is then taken off. A video decoded up
    to its stated end is whole, however few frames its timestamps spread over."""
    stated = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    if not (info.fps and math.isfinite(stated) and stated > 0):
        return None
    if stated / info.fps - info.duration <= 2 / info.fps:
        return None  # decoded up to the stated end: fewer frames because the timestamps jump
    if first_pts is not None and math.isfinite(first_pts) and 0 < first_pts < stated:
        stated -= first_pts
    if decoded + info.decode_failures >= 0.9 * stated or stated - decoded < 2:
        return None
    return (f"truncated or damaged video: decoding stopped at {info.duration:.1f} s of "
            f"{stated / info.fps:.1f} s ({decoded} of {int(stated)} frames)")


def _open_capture(path: Path) -> cv2.VideoCapture:
    # FFmpeg pinned: with CAP_ANY a file FFmpeg rejects is retried by other backends, whose
    # timestamps and failure modes differ. One decoder thread: the same frames, and FFmpeg's
    # second thread cost 40 % more CPU for no speed while detection and inference hold the cores.
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])


def _iter_video(path: Path, fps: float, info: MediaInfo) -> Iterator[Frame]:
    cap = _open_capture(path)
    try:
        if not cap.isOpened():
            raise MediaOpenError("cannot open video: FFmpeg does not recognise the file")
        container_fps = cap.get(cv2.CAP_PROP_FPS)
        info.fps = container_fps if 0 < container_fps < 1000 else None
        info.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or None
        info.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or None
        # The stream's frame size as FFmpeg's demuxer and decoder set it up, before any frame
        # is decoded: a 12000² MJPEG is refused here, not after 432 MB per frame.
        _check_pixels(info.width or 0, info.height or 0, "video frames")
        first_pts = None  # the first frame's timestamp in frames (CAP_PROP_PTS): where it starts
        clock_fps = info.fps or _FALLBACK_FPS
        index, last_t, next_t = -1, None, 0.0
        anchor = None  # (frame_index, t_sec) the frame-count clock continues from
        grab_streak = retrieve_streak = 0  # consecutive failures of each call
        while max(grab_streak, retrieve_streak) < MAX_CONSECUTIVE_FAILURES:
            if not cap.grab():
                grab_streak += 1
                continue
            # End of stream and a mid-stream failure look alike: count them once a frame follows.
            info.decode_failures += grab_streak
            grab_streak = 0
            index += 1
            if first_pts is None:
                first_pts = cap.get(cv2.CAP_PROP_PTS)
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if anchor is None and not (math.isfinite(t) and (last_t is None or t > last_t)):
                # POS_MSEC right after grab() is the frame's own timestamp, exact on variable-rate
                # files (frame_index/fps was off by seconds); but some files report 0 or run
                # backwards: from there on, count frames from the last good time, never going back.
                anchor = (index, 0.0) if last_t is None else (index - 1, last_t)
                log.debug("%s: unusable timestamps from frame %d, counting frames", path, index)
            if anchor is not None:
                t = anchor[1] + (index - anchor[0]) / clock_fps
            last_t = t
            if fps > 0 and t < next_t - _T_SLACK:
                continue  # not a sample: grabbed (decoded) but never converted
            ok, image = cap.retrieve()
            if not ok or image is None:
                info.decode_failures += 1
                retrieve_streak += 1
                continue
            retrieve_streak = 0
            _check_pixels(image.shape[1], image.shape[0], "video frames")  # size changed mid-stream
            if fps > 0:
                next_t = (math.floor((t + _T_SLACK) * fps) + 1) / fps
            info.frames_sampled += 1
            yield Frame(frame_index=index, t_sec=t, image=_to_bgr8(image))
            del image  # hold no frame while the next one decodes
        if info.frames_sampled == 0:
            detail = f" ({info.decode_failures} failed)" if info.decode_failures else ""
            raise DecodeError(f"no frame could be decoded{detail}")
        info.duration = last_t + (1.0 / info.fps if info.fps else 0.0)
        info.warning = _cut_short(cap, index + 1, info, first_pts)
        if info.warning:
            log.warning("%s: %s", path, info.warning)
    finally:
        cap.release()
