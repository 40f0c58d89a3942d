"""The records that flow between pipeline stages (scan → decode → detect → crop → infer → write)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE = "image"
VIDEO = "video"
OTHER = "other"  # not media: becomes a `skipped` (or, with a media extension, an `error`) row

STATUS_OK, STATUS_NO_FACE, STATUS_ERROR, STATUS_SKIPPED = "ok", "no_face", "error", "skipped"


@dataclass(frozen=True)
class MediaItem:
    """One entry found by the scan. `error` is set for entries that could not even be listed."""

    root: str  # the input root as the user gave it
    source: str  # path relative to root, POSIX; the file name when the root is the file itself
    path: Path  # absolute path
    media_type: str  # IMAGE | VIDEO | OTHER, by content where the extension lies
    size: int = 0
    mtime: float = 0.0
    error: str | None = None
    reason: str | None = None  # why an OTHER item is skipped

    @property
    def key(self) -> tuple[str, str]:
        return (self.root, self.source)


@dataclass
class Frame:
    """One decoded, upright image or sampled video frame (BGR uint8, H×W×3)."""

    frame_index: int
    t_sec: float | None  # None for still images
    image: np.ndarray


@dataclass(frozen=True)
class FaceBox:
    """A detection in pixels of the upright frame; landmarks are (K, 2) x,y pixels or None."""

    x: int
    y: int
    w: int
    h: int
    score: float
    landmarks: np.ndarray | None = field(default=None, compare=False)


@dataclass
class FaceCrop:
    """A face ready for the model: `pixels` is (size, size, 1) uint8 grayscale."""

    frame_index: int
    t_sec: float | None
    face_index: int
    box: FaceBox
    pixels: np.ndarray


@dataclass
class MediaInfo:
    """What decoding learned about a file (goes to the files table)."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    frames_sampled: int = 0
    decode_failures: int = 0
    warning: str | None = None  # the file was used, but is damaged (goes to the `error` column)
