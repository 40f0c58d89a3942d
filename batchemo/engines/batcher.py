"""The cross-frame, cross-file batcher: crops from anywhere fill fixed-size batches, one model call each."""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np

from batchemo.model import LoadedModel
from batchemo.tta import mirror_below, unsure


class Batcher:
    """Collect (key, crop) pairs; every `batch_size` crops make one model call.

    Batches are padded to a fixed size so TensorFlow traces one graph, and so a face's
    probabilities do not depend on how many other faces shared its batch (worker-count invariance).
    With `tta`, faces the plain pass leaves unsure (predict_tta) queue their mirror images, which
    run in batches of their own: results come back when a face's last pass has run.
    """

    def __init__(self, model: LoadedModel, batch_size: int = 64, tta: bool = False):
        self.model = model
        self.batch_size = batch_size
        self.below = mirror_below(model.meta) if tta else -math.inf
        s = model.input_size
        self._plain, self._mirror = (np.zeros((batch_size, s, s, 1), np.float32) for _ in "pm")
        self._keys: list[Hashable] = []
        self._waiting: list[tuple[Hashable, np.ndarray]] = []  # (key, plain probs) of mirrors

    def add(self, key: Hashable, pixels: np.ndarray) -> list[tuple[Hashable, np.ndarray]]:
        """Queue one crop; returns the (key, probs) of the faces this crop's batch completes."""
        self._plain[len(self._keys)] = pixels
        self._keys.append(key)
        return self._run_plain() if len(self._keys) == self.batch_size else []

    def flush(self) -> list[tuple[Hashable, np.ndarray]]:
        """Run the model on what is queued (padded); returns (key, probs) pairs."""
        return self._run_plain() + self._run_mirror()

    def _call(self, buf: np.ndarray, n: int) -> np.ndarray:
        buf[n:] = 0
        return self.model.predict(buf)[:n]

    def _run_plain(self) -> list[tuple[Hashable, np.ndarray]]:
        if not self._keys:
            return []
        probs = self._call(self._plain, len(self._keys))
        done = []
        for i, (key, p, mirror) in enumerate(zip(self._keys, probs, unsure(probs, self.below),
                                                 strict=True)):
            if not mirror:
                done.append((key, p))
                continue
            self._mirror[len(self._waiting)] = self._plain[i, :, ::-1]
            self._waiting.append((key, p))
            if len(self._waiting) == self.batch_size:
                done += self._run_mirror()
        self._keys = []
        return done

    def _run_mirror(self) -> list[tuple[Hashable, np.ndarray]]:
        if not self._waiting:
            return []
        probs = self._call(self._mirror, len(self._waiting))
        done = [(key, (p + m) / 2) for (key, p), m in zip(self._waiting, probs, strict=True)]
        self._waiting = []
        return done
