"""`--engine ray`: the local engine's stage functions on Ray Data.

Only the processing step is Ray's: `process(job)` yields one FileResult per file, as
`engines.local.process` does; lock, ledger, plan, commits, derived tables and exit codes are the
pipeline's, whichever engine runs.

    files to do ─▶ _detect_crop tasks: extract() = decode → detect → crop, one file per call,
                   as many at once as the cluster's CPUs hold (or --workers)
                ─▶ _Infer actors: hold the model; fixed-size padded batches, as infer.Batcher;
                   an autoscaling pool (--ray-actors MIN..MAX, --ray-gpus each)
                ─▶ the driver gathers rows per file ─▶ a FileResult, as the local engine's

The driver connects to --ray-address, else RAY_ADDRESS (set by `ray job submit`), else starts a
private local Ray. It logs the nodes each file was decoded on and each model actor ran on.

Rows between the stages are flat: one per face crop, one per sampled frame without a face, and a
closing row per file that says how many rows the file sent. Ray Data may reorder rows, so a file
is complete when its closing row and all its rows have arrived, whatever their order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from batchemo.engines.ray_session import ray_data_quiet, ray_session
from batchemo.errors import BatchemoError, ConfigError
from batchemo.media.extract import extract
from batchemo.model import int8_file
from batchemo.options import actor_range
from batchemo.records import (
    EngineJob,
    ExtractSettings,
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
# A model actor's memory: a process loading the shipped model and classifying a batch of 64 with
# TTA peaked at 0.9 GiB RSS. Reserving it also keeps Ray Data from fusing the decode tasks into
# the model actors, which it does when both stages ask for the same resources: decoding would
# then scale with the actors, not with the CPUs.
INFER_MEMORY = 1 << 30
CPUS_PER_ACTOR = 4  # --ray-actors auto: up to one model actor per this many CPUs of the cluster
# Ray Data retries a task whose worker died, without end; a file whose decoding killed its
# worker this many times becomes an error row instead (ray_remote_args' max_restarts=0 did this,
# deprecated in Ray 2.60, with no named replacement).
MAX_CRASHES = 2
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
    with ray_session(ray, job), ray_data_quiet(ray):
        ds = _dataset(ray, job)
        try:
            seen = _Placement()
            yield from _collect(ds, job, seen)
            log.info("Ray: %s", seen.line())
        except ray.exceptions.RayError as e:
            # Files committed so far are kept; the next run rebuilds the outputs and does the rest.
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise BatchemoError(f"the Ray engine failed ({type(e).__name__}: {first}); files "
                                "finished before are kept, the next run does the rest") from e


# -- the stages (Ray tasks and actors) ---------------------------------------------------------


_DETECTORS: dict[str, object] = {}  # per Ray worker process, reused by its later tasks


class _Attempts:
    """Actor: how often each file's decoding has started (a retry follows a dead worker)."""

    def __init__(self):
        self.started: Counter = Counter()

    def start(self, idx: int) -> int:
        self.started[idx] += 1
        return self.started[idx]


def _detect_crop(batch: dict[str, np.ndarray], settings: ExtractSettings, size: int,
                 chunk_frames: int, attempts) -> Iterator[dict[str, np.ndarray]]:
    """Task: extract() for each file of a batch (one), rows streamed per chunk."""
    import ray

    key = json.dumps(settings.detector_args, sort_keys=True)
    if key not in _DETECTORS:
        from batchemo.media.detect import get_detector

        _DETECTORS[key] = get_detector(**settings.detector_args)
    node = ray.get_runtime_context().get_node_id()
    for idx, blob in zip(batch["idx"], batch["item"], strict=True):
        idx = int(idx)
        crashes = ray.get(attempts.start.remote(idx)) - 1
        if crashes >= MAX_CRASHES:
            meta = {"error": f"decoding it killed the Ray worker {crashes} times",
                    "crashed": True, "node": node}
            yield _rows(idx, size, [DONE], [0], [np.nan], [-1], [(0, 0, 0, 0)], [0.0], [None],
                        meta=json.dumps(meta))
            continue
        yield from _file(idx, pickle.loads(blob), _DETECTORS[key], size, settings,
                         chunk_frames, node)


def _file(idx: int, item, detector, size, settings: ExtractSettings, chunk_frames, node: str):
    started, sent = time.perf_counter(), 0
    for kind, payload in extract(item, settings, detector, size, chunk_frames):
        if kind == "chunk":
            rows = _chunk_rows(idx, payload, size)
            sent += len(rows["idx"])
            yield rows
        else:
            meta = {"info": dataclasses.asdict(payload.info), "cuts": payload.cuts,
                    "error": payload.error, "seconds": time.perf_counter() - started,
                    "node": node}
            yield _rows(idx, size, [DONE], [0], [np.nan], [-1], [(0, 0, 0, 0)], [0.0],
                        [None], n_rows=sent, meta=json.dumps(meta))


class _Infer:
    """Actor: holds the model; each batch of rows is one padded model call (infer.Batcher)."""

    def __init__(self, artifact: dict[str, bytes], keras_name: str, batch_size: int, tta: bool,
                 model_id: str, precision: str):
        import ray

        from batchemo.engines.batcher import Batcher
        from batchemo.model import load_model

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
        ctx = ray.get_runtime_context()
        self.where = f"{ctx.get_node_id()} {ctx.get_actor_id()}"

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
        out["actor"] = np.array([self.where] * len(kind), dtype=object)  # node id, actor id
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
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    from batchemo.engines.local import CHUNK_FRAMES

    todo, model = job.files, job.model
    resources = ray.cluster_resources()
    lo, hi = _actor_pool(job, resources)
    n_tasks = min(job.workers, len(todo)) if job.workers > 0 else None
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    log.info("Ray: %d node(s), %g CPUs, %g GPUs; decode/detect tasks: %s; model actors: %s "
             "(%g CPU, %g GPU each)", nodes, resources.get("CPU", 0), resources.get("GPU", 0),
             n_tasks or "as the CPUs allow", f"{lo}..{hi}" if lo < hi else lo, INFER_CPUS,
             job.ray_gpus)
    # MediaItems travel pickled: paths need not be valid UTF-8 (Arrow strings must be).
    items = [{"idx": i, "item": pickle.dumps(task.item)} for i, task in enumerate(todo)]
    path = Path(model.path)
    files = [path, path.with_suffix(".json")]
    if model.precision == "int8":
        files.append(int8_file(path, model.meta))
    artifact = {f.name: f.read_bytes() for f in files}
    attempts = ray.remote(num_cpus=0)(_Attempts).remote()
    return (ray.data.from_items(items, override_num_blocks=min(len(items), MAX_BLOCKS))
            .map_batches(_detect_crop, batch_size=1, batch_format="numpy",
                         compute=TaskPoolStrategy(size=n_tasks), num_cpus=DETECT_CPUS,
                         fn_kwargs={"settings": job.extract, "size": model.input_size,
                                    "chunk_frames": CHUNK_FRAMES, "attempts": attempts})
            .map_batches(_Infer, batch_size=job.batch_size, batch_format="numpy",
                         compute=ActorPoolStrategy(min_size=lo, max_size=hi),
                         num_cpus=INFER_CPUS, num_gpus=job.ray_gpus or None,
                         memory=INFER_MEMORY,
                         fn_constructor_kwargs={"artifact": artifact,
                                                "keras_name": path.name,
                                                "batch_size": job.batch_size,
                                                "tta": job.tta,
                                                "precision": model.precision,
                                                "model_id": model.model_id}))


def _actor_pool(job: EngineJob, resources: dict[str, float]) -> tuple[int, int]:
    """The model actors' pool size (MIN, MAX) for --ray-actors on a cluster with `resources`."""
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    # Actors beyond what the CPUs hold beside one decode task would wait for them forever.
    room = max(1, int((cpus - DETECT_CPUS) / INFER_CPUS))
    auto = max(1, int(cpus // CPUS_PER_ACTOR))
    if job.ray_gpus > 0:
        room = min(room, int(gpus / job.ray_gpus + 1e-9))
        if room < 1:
            raise ConfigError(f"--ray-gpus {job.ray_gpus:g}: this Ray cluster has {gpus:g} "
                              "GPUs, too few for one model actor")
        auto = room
    lo, hi = actor_range(job.ray_actors) or (1, auto)
    if hi > room:
        log.warning("--ray-actors %s: this Ray cluster's %g CPUs and %g GPUs hold %d model "
                    "actors; using at most %d", job.ray_actors, cpus, gpus, room, room)
    return min(lo, room), min(hi, room)


class _Placement:
    """Where the run's work ran: files decoded per node, model actors per node."""

    def __init__(self):
        self.files: Counter = Counter()
        self.actors: set[str] = set()

    def line(self) -> str:
        actors = Counter(a.split()[0] for a in self.actors)
        return (f"decode/detect ran on {len(self.files)} node(s) (files per node: "
                f"{_per_node(self.files)}); {len(self.actors)} model actor(s) on {len(actors)} "
                f"node(s) (actors per node: {_per_node(actors)})")


def _per_node(counts: Counter) -> str:
    return ", ".join(f"{node} {n}" for node, n in sorted(counts.items()))


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


def _collect(ds, job: EngineJob, seen: _Placement) -> Iterator[FileResult]:
    """Gather rows per file; yield each file as soon as all of its rows are in."""
    quiet = job.quiet or not sys.stderr.isatty()
    bar = tqdm(total=len(job.files), unit="file", disable=quiet, desc="files")
    pending: dict[int, _Gathered] = {}
    done: set[int] = set()  # rows of a file given up after crashes may still arrive
    batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for b in batches:
            seen.actors.update(b["actor"])
            for r in range(len(b["idx"])):
                idx = int(b["idx"][r])
                if idx in done:
                    continue
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
                    seen.files[g.meta["node"]] += 1
                    if g.meta.get("crashed"):  # what earlier attempts sent is left out
                        g.faces, g.empty, g.outstanding = [], [], 0
                g.outstanding -= int(kind != DONE)
                if g.meta is not None and g.outstanding == 0:
                    bar.update(1)
                    done.add(idx)
                    yield pending.pop(idx).result()
    finally:
        close = getattr(batches, "close", None)
        if close:  # stops Ray Data's executor at once when the run is interrupted
            close()
        bar.close()
    if pending:
        raise RuntimeError(f"Ray engine: {len(pending)} file(s) did not complete")
