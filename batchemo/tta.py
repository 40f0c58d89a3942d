"""The test-time augmentation rule, beside the model whose card it reads: which faces are mirrored
and how a face's passes are averaged (run, evaluate and train all use it)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Selective test-time augmentation: a face whose plain top-class probability reaches this is not
# mirrored (its mirror seldom changes the answer). Chosen on PublicTest: with the step-7a model
# mixed back, 71.08 % against 71.16 % mirroring every face, FER+ 70.94 against 71.00 %, the same
# 0.78 kept at 16 px (temperature fitted for each); about half the mirror passes saved.
MIRROR_BELOW = 0.8


def mirror_below(meta: dict) -> float:
    """The threshold an artifact's temperature was fitted with (its card's `tta_mirror_below`);
    artifacts from before selective TTA mirror every face."""
    return float(meta.get("tta_mirror_below", math.inf))


def unsure(probs: np.ndarray, below: float = MIRROR_BELOW) -> np.ndarray:
    """Which rows of plain-pass `probs` selective TTA mirrors (the one place the rule lives)."""
    return probs.max(-1) < below


def predict_tta(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, tta: bool,
                below: float = MIRROR_BELOW) -> np.ndarray:
    """`predict(x)`; with `tta`, the `unsure` faces are averaged with their mirror image (so
    `run`, `evaluate` and `train` compute TTA the same way)."""
    probs = np.array(predict(x), np.float32)
    need = np.flatnonzero(unsure(probs, below)) if tta else []
    if len(need):
        probs[need] = (probs[need] + predict(x[need][:, :, ::-1])) / 2
    return probs
