"""The cross-frame, cross-file batcher: crops from anywhere fill fixed-size batches, one model call each."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np

from .model import LoadedModel


def predict_tta(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                tta: bool) -> np.ndarray:
    """`predict(x)`, or with `tta` its average with the mirrored faces, both in one call (so
    `run` and `evaluate` compute test-time augmentation the same way)."""
    if not tta:
        return predict(x)
    n = len(x)
    probs = predict(np.concatenate([x, x[:, :, ::-1]]))
    return (probs[:n] + probs[n:]) / 2


class Batcher:
    """Collect (key, crop) pairs; every `batch_size` crops make one model call.

    Batches are padded to a fixed size so TensorFlow traces one graph, and so a face's
    probabilities do not depend on how many other faces shared its batch (worker-count invariance).
    With `tta`, the mirrored crops ride in the same call.
    """

    def __init__(self, model: LoadedModel, batch_size: int = 64, tta: bool = False):
        self.model = model
        self.batch_size = batch_size
        self.tta = tta
        s = model.input_size
        self._buf = np.zeros((batch_size, s, s, 1), np.float32)
        self._keys: list[Hashable] = []

    def add(self, key: Hashable, pixels: np.ndarray) -> list[tuple[Hashable, np.ndarray]]:
        """Queue one crop; returns the (key, probs) of a batch when this crop completes it."""
        self._buf[len(self._keys)] = pixels
        self._keys.append(key)
        return self.flush() if len(self._keys) == self.batch_size else []

    def flush(self) -> list[tuple[Hashable, np.ndarray]]:
        """Run the model on what is queued (padded); returns (key, probs) pairs."""
        n = len(self._keys)
        if n == 0:
            return []
        self._buf[n:] = 0
        probs = predict_tta(self.model.predict, self._buf, self.tta)
        keys, self._keys = self._keys, []
        return list(zip(keys, probs[:n], strict=True))
