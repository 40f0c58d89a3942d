"""batchemo: batch facial-emotion analysis of photo and video archives.

Layers, each importing only those below it (tests/test_structure.py checks):
  cli, __main__                   the command line over this API
  pipeline, plan                  a run: resolve settings, plan, engine, commit, derive
  engines/ analysis/ training/    running a job; derived tables and pages; training and scoring
  model, tta, media/              the artifact and its TTA rule; decode, detect, crop, track
  output/                         tables, ledger, store, atomic writes: storage only
  config                          option dataclasses
  errors, choices, records, _util/
`batchemo.results` and `batchemo.datasets` are the paths the README gave before the subpackages.
"""

from batchemo.config import EvaluateConfig, RunConfig, TrainConfig
from batchemo.model import load_model
from batchemo.training.datasets import EMOTIONS
from batchemo.training.evaluate import evaluate
from batchemo.training.train import train

__all__ = ["EMOTIONS", "EvaluateConfig", "RunConfig", "RunResult", "TrainConfig", "evaluate",
           "load_model", "run", "train"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # `run` is imported on first use: worker processes import batchemo.media.extract, which must not
    # drag in the pipeline's pandas/pyarrow (~200 MB per worker).
    if name in ("run", "RunResult"):
        from batchemo import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'batchemo' has no attribute {name!r}")
