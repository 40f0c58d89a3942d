"""Worker side of the pipeline: decode → detect → crop for one file, streamed in small chunks."""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
from collections.abc import Iterator

import numpy as np

from .crop import face_crop
from .decode import iter_frames
from .errors import MediaError
from .records import MediaInfo, MediaItem

log = logging.getLogger("batchemo")


def extract(item: MediaItem, fps: float, detector, size: int, margin: float,
            chunk_frames: int = 16) -> Iterator[tuple[str, object]]:
    """Yield ("chunk", [(frame_index, t_sec, boxes, crops), ...]) then ("done", (info, error)).

    Never raises for bad media: the failure becomes the `error` of the final message, and frames
    decoded before it are still delivered (a truncated video keeps its good part).
    """
    info = MediaInfo()
    chunk, error = [], None
    try:
        for frame in iter_frames(item, fps, info):
            boxes = detector.detect(frame.image)
            crops = np.stack([face_crop(frame.image, b, size, margin) for b in boxes]) if boxes else \
                np.zeros((0, size, size, 1), np.uint8)
            chunk.append((frame.frame_index, frame.t_sec, boxes, crops))
            if len(chunk) >= chunk_frames:
                yield "chunk", chunk
                chunk = []
    except MediaError as e:
        error = str(e)
    except MemoryError:
        error = "out of memory while decoding (image too large?)"
    except Exception as e:  # a decoder bug on one file must not end an unattended run
        log.debug("unexpected error on %s", item.path, exc_info=True)
        error = f"{type(e).__name__}: {e}"
    if chunk:
        yield "chunk", chunk
    yield "done", (dataclasses.asdict(info), error)


def worker_main(tasks, results, det_args: dict, size: int, margin: float, fps: float,
                chunk_frames: int) -> None:
    """Process entry point: one detector per process, files from `tasks` until None."""
    import signal

    from .detect import get_detector

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
    parent = os.getppid()
    detector = get_detector(**det_args)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # parent killed (-9): don't linger as an orphan
                return
            continue
        if task is None:
            return
        idx, item = task
        for msg in extract(item, fps, detector, size, margin, chunk_frames):
            results.put((idx, msg))
