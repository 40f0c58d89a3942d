"""batchemo: batch facial-emotion analysis of photo and video archives."""

from .config import EvaluateConfig, RunConfig, TrainConfig
from .datasets import EMOTIONS
from .evaluate import evaluate
from .model import load_model
from .pipeline import RunResult, run
from .train import train

__all__ = ["EMOTIONS", "EvaluateConfig", "RunConfig", "RunResult", "TrainConfig", "evaluate",
           "load_model", "run", "train"]
__version__ = "0.1.0"
