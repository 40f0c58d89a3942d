"""Muting file descriptor 2 around C++ code that prints where Python's logging cannot reach."""

import contextlib
import os
import sys


@contextlib.contextmanager
def fd2_silenced():
    """Within the block, whatever anyone writes to fd 2 goes to /dev/null (cron mails stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_video_libraries() -> None:
    """Keep FFmpeg's and OpenCV's own log lines ("stream 0, offset 0x4f64b: partial file",
    "moov atom not found", "[ WARN:0] … can't be used to capture by name") off the terminal and
    out of cron mail, in every mode: they repeat per packet and name no file, while batchemo
    reports a damaged file itself, once, as a warning and in the files table.

    Call it before the first video is opened: OpenCV reads OPENCV_FFMPEG_LOGLEVEL when it first
    sets up FFmpeg in a process. Spawned workers inherit the variable. A user who set either
    variable (to see those lines: OPENCV_FFMPEG_LOGLEVEL=24 OPENCV_LOG_LEVEL=INFO) keeps it.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
