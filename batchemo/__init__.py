"""batchemo: batch facial-emotion analysis of photo and video archives."""

from .config import EvaluateConfig, RunConfig, TrainConfig
from .datasets import EMOTIONS
from .evaluate import evaluate
from .model import load_model
from .train import train

__all__ = ["EMOTIONS", "EvaluateConfig", "RunConfig", "RunResult", "TrainConfig", "evaluate",
           "load_model", "run", "train"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # `run` is imported on first use: worker processes import batchemo.extract, which must not
    # drag in the pipeline's pandas/pyarrow (~200 MB per worker).
    if name in ("run", "RunResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'batchemo' has no attribute {name!r}")
