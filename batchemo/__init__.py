"""batchemo: batch facial-emotion analysis of photo and video archives."""

from .config import EvaluateConfig, TrainConfig
from .datasets import EMOTIONS
from .evaluate import evaluate
from .model import load_model
from .train import train

__all__ = ["EMOTIONS", "EvaluateConfig", "TrainConfig", "evaluate", "load_model", "train"]
__version__ = "0.1.0"
