"""Hostile media for tests and the next adversarial round (issue 28): videos whose timestamps
break naive time handling, made from a short clip that the tests draw (conftest.write_video).

Each `make_*` function writes one file into a given folder and returns its path:
  * `jump_mkv`       — PTS jump by `jump` seconds (1e12, 1e6) after frame `after` (50 of 72),
                       as `ffmpeg -vf "setpts='if(gte(N,50),PTS+1e12/TB,PTS)'"` makes it;
  * `late_start_mkv` — an intact MKV whose first frame is at `start` seconds (1e9);
  * `ffmpeg_jump_mkv` — the issue's exact FFmpeg command (H.264 with B-frames), where the
                       `ffmpeg` CLI is installed (None elsewhere).
The first two are written here as Matroska directly (an EBML header, one track of MJPEG
frames, one cluster a frame), with no FFmpeg CLI or PyAV needed: the project depends on
neither, and OpenCV's VideoWriter cannot choose timestamps. OpenCV's FFmpeg reads them back
with the timestamps written (checked by tests/analysis/test_hostile_video.py).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

FPS = 25.0
SIZE = (200, 320)  # h, w: a 64 px face is found by every BlazeFace model (tests/facedraw.py)
Faces = Callable[[int, float], Sequence[tuple[int, int, int]]]


def one_face(i: int, t: float) -> list[tuple[int, int, int]]:
    """A 64 px face drifting right, 1 px a frame."""
    return [(40 + i % 100, 60, 64)]


def clip_frames(folder: Path, frames: int = 72, fps: float = FPS,
                faces_fn: Faces = one_face) -> list[np.ndarray]:
    """The frames of a short clip written by conftest.write_video (MPEG-4) and decoded back."""
    from conftest import write_video

    path = write_video(Path(folder) / ".hostile_source.mp4", frames / fps, fps, SIZE, faces_fn)
    cap = cv2.VideoCapture(str(path))
    out = []
    try:
        while len(out) < frames:
            ok, image = cap.read()
            if not ok:
                break
            out.append(image)
    finally:
        cap.release()
        path.unlink()
    return out


def jump_mkv(folder: Path, jump: float = 1e12, after: int = 50, frames: int = 72,
             fps: float = FPS, name: str | None = None) -> Path:
    """A clip whose timestamps jump by `jump` seconds from frame `after` on."""
    times = [i / fps + (jump if i >= after else 0.0) for i in range(frames)]
    path = Path(folder) / (name or f"jump_{jump:g}.mkv")
    return write_mkv(path, clip_frames(folder, frames, fps), times, fps)


def late_start_mkv(folder: Path, start: float = 1e9, frames: int = 72, fps: float = FPS,
                   name: str | None = None) -> Path:
    """An intact clip whose first frame is at `start` seconds."""
    times = [start + i / fps for i in range(frames)]
    path = Path(folder) / (name or f"start_{start:g}.mkv")
    return write_mkv(path, clip_frames(folder, frames, fps), times, fps)


def ffmpeg_jump_mkv(folder: Path, jump: float = 1e12, after: int = 50,
                    frames: int = 72) -> Path | None:
    """The issue's command on a drawn clip (H.264, B-frames: decode order is not
    presentation order); None where no `ffmpeg` CLI is installed."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    from conftest import write_video

    src = write_video(Path(folder) / ".hostile_source.mp4", frames / FPS, FPS, SIZE, one_face)
    out = Path(folder) / f"ffmpeg_jump_{jump:g}.mkv"
    try:
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(src), "-an",
                        "-frames:v", str(frames), "-vf",
                        f"setpts='if(gte(N,{after}),PTS+{jump:g}/TB,PTS)'",
                        "-fps_mode", "passthrough", "-c:v", "libx264", str(out)],
                       check=True, capture_output=True, timeout=120)
    finally:
        src.unlink()
    return out


# --- Matroska (EBML) writing: just what a one-track MJPEG file needs ------------------------

def ebml_element(ident: int, payload: bytes) -> bytes:
    """An EBML element: its ID, the payload size as an 8-byte vint (0x01 + 7 bytes), payload."""
    return ident.to_bytes((ident.bit_length() + 7) // 8, "big") + \
        (0x01 << 56 | len(payload)).to_bytes(8, "big") + payload


def ebml_uint(ident: int, value: int) -> bytes:
    return ebml_element(ident, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def ebml_text(ident: int, value: str) -> bytes:
    return ebml_element(ident, value.encode("ascii"))


def write_mkv(path: Path, frames: Sequence[np.ndarray], times_sec: Sequence[float],
              fps: float = FPS) -> Path:
    """Write BGR `frames` as MJPEG in Matroska, frame i at `times_sec[i]` (whole ms; the
    container's unit), each frame a keyframe in a cluster of its own."""
    h, w = frames[0].shape[:2]
    header = ebml_element(0x1A45DFA3, ebml_uint(0x4286, 1) + ebml_uint(0x42F7, 1) + ebml_uint(0x42F2, 4)
                          + ebml_uint(0x42F3, 8) + ebml_text(0x4282, "matroska") + ebml_uint(0x4287, 4)
                          + ebml_uint(0x4285, 2))
    # Duration (in ms, the TimestampScale) up to the last frame's end, as FFmpeg writes it: a
    # reader that takes it for the length from 0 sees a late start as a very long video.
    end_ms = (max(times_sec) + 1 / fps) * 1000
    info = ebml_element(0x1549A966, ebml_uint(0x2AD7B1, 1_000_000)
                        + ebml_element(0x4489, struct.pack(">d", end_ms))
                        + ebml_text(0x4D80, "batchemo tests") + ebml_text(0x5741, "tests/hostile.py"))
    video = ebml_element(0xE0, ebml_uint(0xB0, w) + ebml_uint(0xBA, h))
    track = ebml_element(0xAE, ebml_uint(0xD7, 1) + ebml_uint(0x73C5, 1) + ebml_uint(0x83, 1)  # video track 1
                         + ebml_text(0x86, "V_MJPEG") + ebml_uint(0x23E383, round(1e9 / fps)) + video)
    body = [info, ebml_element(0x1654AE6B, track)]
    for image, t in zip(frames, times_sec, strict=True):
        ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert ok, "JPEG encoding failed"
        # SimpleBlock: track 1 (vint 0x81), timestamp relative to the cluster's (0), keyframe.
        block = b"\x81" + struct.pack(">hB", 0, 0x80) + jpg.tobytes()
        body.append(ebml_element(0x1F43B675, ebml_uint(0xE7, round(t * 1000)) + ebml_element(0xA3, block)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + ebml_element(0x18538067, b"".join(body)))
    return path
