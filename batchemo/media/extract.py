"""Worker side of the pipeline: decode → detect → crop for one file, streamed in small chunks."""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from batchemo.errors import MediaError
from batchemo.media.crop import face_crop
from batchemo.media.decode import iter_frames
from batchemo.media.shotcuts import ShotCuts
from batchemo.records import DetectedFrame, Extracted, ExtractSettings, MediaInfo, MediaItem

log = logging.getLogger("batchemo")


def extract(item: MediaItem, settings: ExtractSettings, detectors, size: int,
            chunk_frames: int = 16) -> Iterator[tuple[str, object]]:
    """Yield ("chunk", [DetectedFrame, ...]) messages, then ("done", Extracted).

    `detectors`: one detector, or a list of them to detect that many frames at once (detected).
    Never raises for bad media: the failure becomes the `error` of the final message, and frames
    decoded before it are still delivered (a truncated video keeps its good part).
    """
    info = MediaInfo()
    chunk, error = [], None
    cuts = ShotCuts()  # hard cuts end tracks; found here, where the pixels are
    try:
        frames = prefetched(iter_frames(item, settings.fps, info))
        for frame, boxes, crops, thumb in detected(frames, detectors, size, settings.margin):
            if frame.t_sec is not None:
                cuts.add(frame.frame_index, frame.image if thumb is None else thumb)
            chunk.append(DetectedFrame(frame.frame_index, frame.t_sec, boxes, crops))
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
    yield "done", Extracted(info, list(cuts.frames), error)


def detected(frames: Iterator, detectors, size: int, margin: float) -> Iterator[tuple]:
    """(frame, boxes, crops, thumbnail) per frame, in order. With several detectors (one
    interpreter each), frames are detected on that many threads, a few frames ahead: LiteRT and
    OpenCV release the GIL, so one long video uses more than one core."""
    detectors = detectors if isinstance(detectors, list) else [detectors]
    free: queue.SimpleQueue = queue.SimpleQueue()
    for d in detectors:
        free.put(d)

    def one(frame) -> tuple:
        det = free.get()
        try:
            boxes = det.detect(frame.image)
            crops = np.stack([face_crop(frame.image, b, size, margin) for b in boxes]) \
                if boxes else np.zeros((0, size, size, 1), np.uint8)
            return frame, boxes, crops, det.thumbnail
        finally:
            free.put(det)

    if len(detectors) == 1:
        yield from map(one, frames)
        return
    with ThreadPoolExecutor(len(detectors), thread_name_prefix="batchemo-detect") as pool:
        ahead: collections.deque = collections.deque()
        for frame in frames:
            ahead.append(pool.submit(one, frame))
            if len(ahead) > 2 * len(detectors):
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def detect_threads(n_workers: int) -> int:
    """Detector threads per worker process: the cores the workers leave over, at most 4."""
    return max(1, min(4, (os.cpu_count() or 1) // max(1, n_workers)))


def prefetched(frames: Iterator, depth: int = 4) -> Iterator:
    """Run `frames` on a thread, `depth` items ahead, so decoding overlaps detection.

    OpenCV's decoder and LiteRT both release the GIL. The thread is always joined and its
    exception re-raised here; memory holds at most `depth` frames.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for f in frames:
                while not stop.is_set():
                    try:
                        q.put(f, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    t = threading.Thread(target=produce, name="batchemo-decode", daemon=True)
    t.start()
    try:
        while (f := q.get()) is not done:
            if isinstance(f, BaseException):
                raise f
            yield f
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)
        t.join()


def worker_main(conn, settings: ExtractSettings, size: int, chunk_frames: int,
                threads: int = 1) -> None:
    """Process entry point: `threads` detectors per process; files `(idx, item)` from `conn`
    (this worker's own pipe) until None, each answered with its messages, the "done" one
    carrying the seconds spent on it. A worker that dies takes only its own pipe with it."""
    import dataclasses
    import multiprocessing
    import signal
    import time

    from batchemo.media.detect import get_detector

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
    if os.environ.get("BATCHEMO_LOG_JSON"):  # jsonlog.ENV: the run logs JSON, so do we
        from batchemo._util.jsonlog import log_json_here

        log_json_here()
    # multiprocessing's own parent handle: a pipe that closes when the parent dies, even one
    # killed while this process was still importing (a pid read here would already be init's)
    if not multiprocessing.parent_process().is_alive():  # don't even load a detector
        _exit_orphan()
    detectors = [get_detector(**settings.detector_args) for _ in range(threads)]
    try:
        conn.send((-1, ("ready", None)))  # a death from here on is a file's, not start-up's
    except OSError:
        _exit_orphan()
    while True:
        try:  # a parent killed with -9 closes its end: recv and send fail, we exit at once
            task = conn.recv()
        except (EOFError, OSError):
            _exit_orphan()
        if task is None:
            return
        idx, item = task
        started = time.perf_counter()
        for kind, payload in extract(item, settings, detectors, size, chunk_frames):
            if kind == "done":
                payload = dataclasses.replace(payload, seconds=time.perf_counter() - started)
            try:
                conn.send((idx, (kind, payload)))
            except OSError:
                _exit_orphan()


def _exit_orphan() -> None:
    # Parent killed (-9): exit at once, without the interpreter's slow shutdown.
    os._exit(0)
