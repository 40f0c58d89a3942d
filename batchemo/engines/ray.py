"""`--engine ray`: the local engine's stage functions on Ray Data.

Only the processing step is Ray's: `process(job)` yields one FileResult per file, as
`engines.local.process` does; lock, ledger, plan, commits, derived tables and exit codes are the
pipeline's, whichever engine runs.

    files to do ─▶ _DetectCrop actors: extract() = decode → detect → crop, one file per call
                ─▶ _Infer actor: holds the model; fixed-size padded batches, as infer.Batcher
                ─▶ the driver gathers rows per file ─▶ a FileResult, as the local engine's

Rows between the stages are flat: one per face crop, one per sampled frame without a face, and a
closing row per file that says how many rows the file sent. Ray Data may reorder rows, so a file
is complete when its closing row and all its rows have arrived, whatever their order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..crop import margin_for
from ..errors import BatchemoError, ConfigError, OutputError
from ..extract import extract
from ..records import (
    EngineJob,
    Face,
    FaceBox,
    FileResult,
    FileTask,
    MediaInfo,
    SampledFrame,
)

log = logging.getLogger("batchemo")

INSTALL = 'pip install "batchemo[ray]"'
FACE, EMPTY, DONE = 0, 1, 2  # row kinds
# Fractional CPUs: on 2 cores, actors each reserving a whole CPU left Ray Data's own tasks none
# and the pipeline deadlocked. Detection and inference each still use a core when they run.
DETECT_CPUS = 0.5
INFER_CPUS = 0.5
MAX_BLOCKS = 4096  # input blocks (one file each up to this): small blocks balance videos vs images


def require_ray():
    """Import Ray (Data), or say how to install it (ConfigError, exit 2)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"--engine ray needs Ray, which is not installed ({e}); install it "
                          f"with: {INSTALL}") from None
    return ray


def process(job: EngineJob) -> Iterator[FileResult]:
    """`engines.local.process` on Ray: the same files in, the same FileResults out."""
    ray = require_ray()
    if not job.files:  # an incremental run with nothing new does not pay Ray's start-up
        return
    with _ray_session(ray, job.settings), _ray_data_quiet(ray):
        ds = _dataset(ray, job)
        try:
            yield from _collect(ds, job)
        except ray.exceptions.RayError as e:
            # Files committed so far are kept; the next run rebuilds the outputs and does the rest.
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise BatchemoError(f"the Ray engine failed ({type(e).__name__}: {first}); files "
                                "finished before are kept, the next run does the rest") from e


# -- the stages (run in Ray actors) ------------------------------------------------------------


class _DetectCrop:
    """Actor: one detector; extract() for each file of a batch, rows streamed per chunk."""

    def __init__(self, det_args: dict, size: int, margin: float, fps: float, chunk_frames: int):
        from ..detect import get_detector

        self.detector = get_detector(**det_args)
        self.size, self.margin, self.fps, self.chunk_frames = size, margin, fps, chunk_frames

    def __call__(self, batch: dict[str, np.ndarray]):
        for idx, blob in zip(batch["idx"], batch["item"], strict=True):
            yield from self._file(int(idx), pickle.loads(blob))

    def _file(self, idx: int, item):
        started, sent = time.perf_counter(), 0
        for kind, payload in extract(item, self.fps, self.detector, self.size, self.margin,
                                     self.chunk_frames):
            if kind == "chunk":
                rows = _chunk_rows(idx, payload, self.size)
                sent += len(rows["idx"])
                yield rows
            else:
                meta = {"info": dataclasses.asdict(payload.info), "cuts": payload.cuts,
                        "error": payload.error, "seconds": time.perf_counter() - started}
                yield _rows(idx, self.size, [DONE], [0], [np.nan], [-1], [(0, 0, 0, 0)], [0.0],
                            [None], n_rows=sent, meta=json.dumps(meta))


class _Infer:
    """Actor: holds the model; each batch of rows is one padded model call (infer.Batcher)."""

    def __init__(self, artifact: dict[str, bytes], keras_name: str, batch_size: int, tta: bool,
                 model_id: str, precision: str):
        from ..infer import Batcher
        from ..model import load_model

        # The driver ships the artifact's bytes: workers need no access to the model's path.
        with tempfile.TemporaryDirectory(prefix="batchemo-model-") as d:
            for name, data in artifact.items():
                (Path(d) / name).write_bytes(data)
            # The driver's resolved precision, so every node computes the rows the same way.
            model = load_model(Path(d) / keras_name, precision)
        if model.model_id != model_id:
            raise RuntimeError(f"the Ray worker loaded model {model.model_id}, not {model_id}")
        self.batcher = Batcher(model, batch_size, tta)
        self.n_classes = len(model.classes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kind, pixels = batch["kind"], batch["pixels"]
        probs = np.zeros((len(kind), self.n_classes), np.float32)
        for j in np.flatnonzero(kind == FACE):
            for k, p in self.batcher.add(int(j), pixels[j]):
                probs[k] = p
        for k, p in self.batcher.flush():
            probs[k] = p
        out = {k: v for k, v in batch.items() if k != "pixels"}  # crops stay on the workers
        out["probs"] = probs
        return out


def _chunk_rows(idx: int, chunk: list, size: int) -> dict[str, np.ndarray]:
    """One extract() chunk → rows: a FACE row per crop, an EMPTY row per frame without faces."""
    kinds, fis, ts, fidx, boxes, scores, crops = [], [], [], [], [], [], []
    for frame in chunk:
        t = np.nan if frame.t_sec is None else frame.t_sec
        if not frame.boxes:
            kinds.append(EMPTY), fis.append(frame.frame_index), ts.append(t), fidx.append(-1)
            boxes.append((0, 0, 0, 0)), scores.append(0.0), crops.append(None)
        for face_index, (b, px) in enumerate(zip(frame.boxes, frame.crops, strict=True)):
            kinds.append(FACE), fis.append(frame.frame_index), ts.append(t)
            fidx.append(face_index)
            boxes.append((b.x, b.y, b.w, b.h)), scores.append(b.score), crops.append(px)
    return _rows(idx, size, kinds, fis, ts, fidx, boxes, scores, crops)


def _rows(idx, size, kinds, fis, ts, fidx, boxes, scores, crops, n_rows=0, meta=""):
    n = len(kinds)
    pixels = np.zeros((n, size, size, 1), np.uint8)
    for i, px in enumerate(crops):
        if px is not None:
            pixels[i] = px
    return {"idx": np.full(n, idx, np.int64), "kind": np.array(kinds, np.int8),
            "frame_index": np.array(fis, np.int64), "t_sec": np.array(ts, np.float64),
            "face_index": np.array(fidx, np.int32),
            "box": np.array(boxes, np.int64).reshape(n, 4),
            "score": np.array(scores, np.float64), "pixels": pixels,
            "n_rows": np.full(n, n_rows, np.int64), "meta": np.array([meta] * n, dtype=object)}


# -- the driver --------------------------------------------------------------------------------


def _dataset(ray, job: EngineJob):
    from ray.data import ActorPoolStrategy

    from .local import CHUNK_FRAMES

    cfg, todo, model = job.settings, job.files, job.model

    cpus = ray.cluster_resources().get("CPU", 1)
    # More actors than the CPUs can hold would wait for resources forever (half a CPU spare).
    fits = max(1, int((cpus - 0.5 - INFER_CPUS) / DETECT_CPUS))
    n_detect = cfg.workers if cfg.workers > 0 else max(1, int(cpus) - 1)
    if n_detect > fits:
        log.warning("--workers %d: this Ray cluster's %g CPUs hold %d detect actors; using %d",
                    n_detect, cpus, fits, fits)
    n_detect = min(n_detect, fits, len(todo))
    log.info("Ray: %g CPUs, %d detect actors, 1 model actor", cpus, n_detect)
    det_args = {"name": cfg.detector, "min_face": cfg.min_face,
                "score_threshold": cfg.score_threshold}
    # MediaItems travel pickled: paths need not be valid UTF-8 (Arrow strings must be).
    items = [{"idx": i, "item": pickle.dumps(task.item)} for i, task in enumerate(todo)]
    path = Path(model.path)
    artifact = {path.name: path.read_bytes(),
                path.with_suffix(".json").name: path.with_suffix(".json").read_bytes()}
    with warnings.catch_warnings():
        # By default Ray Data restarts a dead actor and retries its task forever: one file that
        # crashes its decoder would hang the run. Without restarts the run stops (exit 2) like
        # the local engine's, keeping finished files, and Ray no longer logs an error line per
        # run about restartable actors. Ray 2.60 takes this only as a deprecated
        # **ray_remote_args keyword (no named parameter yet), hence the filter.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return (ray.data.from_items(items, override_num_blocks=min(len(items), MAX_BLOCKS))
                .map_batches(_DetectCrop, batch_size=1, batch_format="numpy",
                             compute=ActorPoolStrategy(size=n_detect), num_cpus=DETECT_CPUS,
                             max_restarts=0,
                             fn_constructor_kwargs={"det_args": det_args,
                                                    "size": model.input_size,
                                                    "margin": margin_for(cfg.detector), "fps": cfg.fps,
                                                    "chunk_frames": CHUNK_FRAMES})
                .map_batches(_Infer, batch_size=cfg.batch_size, batch_format="numpy",
                             compute=ActorPoolStrategy(size=1), num_cpus=INFER_CPUS,
                             max_restarts=0,
                             fn_constructor_kwargs={"artifact": artifact,
                                                    "keras_name": path.name,
                                                    "batch_size": cfg.batch_size,
                                                    "tta": job.tta,
                                                    "precision": model.precision,
                                                    "model_id": model.model_id}))


@dataclass
class _Gathered:
    """One file's rows as they arrive, in any order."""

    task: FileTask
    faces: list[Face] = field(default_factory=list)
    empty: list[SampledFrame] = field(default_factory=list)  # sampled frames without a face
    outstanding: int = 0  # rows announced by the closing row, minus rows received
    meta: dict | None = None

    def result(self) -> FileResult:
        """Rows in the local engine's order (frame, face); frames derived from the faces."""
        faces = sorted(self.faces, key=lambda f: (f.frame_index, f.face_index))
        frames = {f.frame_index: f for f in self.empty}
        counts = Counter(f.frame_index for f in faces)
        t_of = {f.frame_index: f.t_sec for f in faces}
        frames.update((fi, SampledFrame(fi, t_of[fi], n)) for fi, n in counts.items())
        meta = self.meta or {}
        return FileResult(self.task, [frames[k] for k in sorted(frames)], faces,
                          MediaInfo(**meta.get("info", {})), meta.get("cuts", []),
                          meta.get("error"), meta.get("seconds", 0.0))


def _collect(ds, job: EngineJob) -> Iterator[FileResult]:
    """Gather rows per file; yield each file as soon as all of its rows are in."""
    quiet = job.settings.quiet or not sys.stderr.isatty()
    bar = tqdm(total=len(job.files), unit="file", disable=quiet, desc="files")
    pending: dict[int, _Gathered] = {}
    batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for b in batches:
            for r in range(len(b["idx"])):
                idx = int(b["idx"][r])
                g = pending.get(idx) or pending.setdefault(idx, _Gathered(job.files[idx]))
                kind = b["kind"][r]
                fi, t = int(b["frame_index"][r]), float(b["t_sec"][r])
                t = None if np.isnan(t) else t
                if kind == FACE:
                    x, y, w, h = (int(v) for v in b["box"][r])
                    g.faces.append(Face(fi, t, int(b["face_index"][r]),
                                        FaceBox(x, y, w, h, float(b["score"][r])),
                                        b["probs"][r].copy()))
                elif kind == EMPTY:
                    g.empty.append(SampledFrame(fi, t, 0))
                else:
                    g.meta = json.loads(b["meta"][r])
                    g.outstanding += int(b["n_rows"][r])
                g.outstanding -= int(kind != DONE)
                if g.meta is not None and g.outstanding == 0:
                    bar.update(1)
                    yield pending.pop(idx).result()
    finally:
        close = getattr(batches, "close", None)
        if close:  # stops Ray Data's executor at once when the run is interrupted
            close()
        bar.close()
    if pending:
        raise RuntimeError(f"Ray engine: {len(pending)} file(s) did not complete")


@contextlib.contextmanager
def _ray_session(ray, cfg):
    """Connect to cfg.ray_address, or start a private local Ray; leave a caller's Ray alone."""
    if ray.is_initialized():  # the caller's Ray (tests, a notebook): use it, leave it running
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it; pipeline's must stay
    kwargs = {"include_dashboard": False, "log_to_driver": not cfg.quiet,
              "logging_level": logging.WARNING}
    temp = None
    if cfg.ray_address:
        address = cfg.ray_address
    else:
        address = "local"  # a new instance, never a cluster someone started on this machine
        # Ray leaves a session folder per start; under cron they pile up in /tmp/ray.
        temp = kwargs["_temp_dir"] = tempfile.mkdtemp(prefix="batchemo-ray-")
    # A new local Ray turns token authentication on and warns so at every start (cron mail);
    # setting RAY_AUTH_MODE here instead would be too late: Ray reads it when imported.
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    auth_level = auth_log.level
    try:
        try:
            auth_log.setLevel(logging.ERROR)
            ray.init(address=address, **kwargs)
        except Exception as e:
            hint = ""
            if cfg.ray_address and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                hint = ("; a cluster started with `ray start` uses token authentication: set "
                        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token) as on "
                        "the head node")
            raise OutputError(f"cannot start or reach Ray at {address}: "
                              f"{type(e).__name__}: {e}{hint}") from None
        finally:
            auth_log.setLevel(auth_level)
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def _ray_data_quiet(ray):
    """Our files bar replaces Ray Data's progress bars and its per-dataset console log lines."""
    ctx = ray.data.DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    console = [h for h in logging.getLogger("ray.data").handlers if h.get_name() == "console"]
    levels = [h.level for h in console]
    for h in console:
        h.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.enable_progress_bars = bars
        for h, level in zip(console, levels, strict=True):
            h.setLevel(level)
