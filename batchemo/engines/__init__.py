"""Engines: decode → detect → crop → infer for the files of a job, one FileResult per file.

An engine is a function `process(job: EngineJob) -> Iterator[FileResult]` (records.py). It knows
nothing of ledgers, parts or tables: the pipeline tracks, commits and counts what it yields.
Closing the iterator early (SIGTERM, an error) stops the engine's workers. local (worker
processes), ray and ray_session (a Ray cluster; ray_reaper ends a private one whose driver died),
batcher (one model call per batch of crops).

May import: media, model, tta, config and below. Never output, analysis, training or the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from batchemo.records import EngineJob, FileResult


class Engine(Protocol):
    def __call__(self, job: EngineJob) -> Iterator[FileResult]: ...


def get_engine(name: str) -> Engine:
    """The engine called `name`; Ray is imported here, so a missing Ray fails before any output."""
    if name == "ray":
        from batchemo.engines import ray

        ray.require_ray()  # exit 2 with the install command before anything is written
        return ray.process
    from batchemo.engines.local import process

    return process
