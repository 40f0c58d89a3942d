"""The records that flow between pipeline stages (scan → decode → detect → crop → infer → write)
and across the engine seam (an EngineJob in, one FileResult per file out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from batchemo.model import LoadedModel

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
class MediaInfo:
    """What decoding learned about a file (goes to the files table)."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    frames_sampled: int = 0
    decode_failures: int = 0
    warning: str | None = None  # the file was used, but is damaged (goes to the `error` column)


@dataclass(frozen=True)
class DetectedFrame:
    """A sampled frame's detections and their model-ready crops ((N, size, size, 1) uint8)."""

    frame_index: int
    t_sec: float | None
    boxes: list[FaceBox]
    crops: np.ndarray


@dataclass(frozen=True)
class Extracted:
    """The closing message of one file's extraction: what decoding learned, and why it stopped."""

    info: MediaInfo
    cuts: list[int]  # frame indices of hard cuts (they end tracks)
    error: str | None
    seconds: float = 0.0  # spent decoding, detecting and cropping this file (the engine's)


class FileTask(NamedTuple):
    """A file the plan sends to an engine; `fingerprint` is "" where the plan did not need one."""

    item: MediaItem
    fingerprint: str


@dataclass(frozen=True)
class FileRow:
    """One input file's row in the ledger (and, less `settings_id` and `part`, in the files
    table): what was last done with it. Fields follow output.tables.FILES_SCHEMA, in order."""

    root: str
    source: str
    media_type: str
    status: str
    error: str | None = None
    size: int | None = None
    mtime: float | None = None  # Unix seconds, as the scan read it
    fingerprint: str | None = None  # of the bytes that were decoded (ledger.fingerprint)
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    frames_sampled: int = 0
    faces: int = 0
    decode_failures: int = 0
    seconds: float | None = None  # work on this file: decode, detect and its share of the model
    present: bool = True
    model_id: str | None = None
    run_id: str | None = None
    settings_id: str | None = None  # None: processed again by the next plan
    part: str | None = None  # its staged rows (output.store), None when it has none

    @property
    def key(self) -> tuple[str, str]:
        return (self.root, self.source)


@dataclass(frozen=True)
class ExtractSettings:
    """Every setting that changes a file's rows on its way to face crops: hashed into the
    settings id (plan.settings_id), so a new one cannot be left out of it, and handed to both
    engines as is."""

    fps: float
    detector: str
    min_face: int
    score_threshold: float
    margin: float  # crop margin around the box, the detector's (media.crop.margin_for)

    @property
    def detector_args(self) -> dict:
        return {"name": self.detector, "min_face": self.min_face,
                "score_threshold": self.score_threshold}


@dataclass(frozen=True)
class EngineJob:
    """What an engine is asked to do: these files, extracted so, classified by this model; the
    rest only says how to spread the work (none of it changes a row)."""

    files: list[FileTask]
    extract: ExtractSettings
    model: LoadedModel
    tta: bool
    batch_size: int = 64
    workers: int = -1  # local: worker processes (-1: cores - 1); Ray: decode tasks (0: auto)
    quiet: bool = True
    ray_address: str | None = None
    ray_gpus: float = 0.0
    ray_actors: str = "auto"


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame of a file and how many faces it had (the frames table)."""

    frame_index: int
    t_sec: float | None
    n_faces: int


@dataclass(frozen=True)
class Face:
    """One classified face: where it is and the model's probabilities (in class order)."""

    frame_index: int
    t_sec: float | None
    face_index: int
    box: FaceBox
    probs: np.ndarray


@dataclass(frozen=True)
class FileResult:
    """An engine's answer for one file: its frames and faces in (frame, face) order; `seconds`
    is the work done on it (decode, detect, crop, and its faces' share of the model calls),
    not the time it waited in queues."""

    task: FileTask
    frames: list[SampledFrame]
    faces: list[Face]
    info: MediaInfo
    cuts: list[int]
    error: str | None
    seconds: float

    @property
    def item(self) -> MediaItem:
        return self.task.item
