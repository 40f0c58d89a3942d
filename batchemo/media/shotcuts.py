"""Hard cuts found while decoding: the tracker ends every track at one."""

from __future__ import annotations

import cv2
import numpy as np


class ShotCuts:
    """Hard-cut detector over the sampled frames of one video, fed frame by frame.

    Each frame becomes a 96×54 thumbnail split in 2×2 regions, each with an HSV histogram
    (8×4×4 bins); the distance between consecutive frames is the median over regions of half
    the L1 distance (0 = same colours, 1 = none shared). A cut is a distance >= `threshold`.
    Measured at 5 fps on the shared clips: the stage clip's three camera cuts 0.45-0.61 and a
    cut to a title card 0.9+, while pans, people crossing close to the camera and zooms stay
    <= 0.31. Regions rather than one histogram: a cut between two dark shots keeps the global
    colours but moves them.
    """

    def __init__(self, threshold: float = 0.4):
        self.threshold = threshold
        self.frames: list[int] = []  # frame indices that start a new shot
        self._prev: np.ndarray | None = None

    def add(self, frame_index: int, image: np.ndarray) -> bool:
        sig = self.signature(image)
        cut = self._prev is not None and self.distance(self._prev, sig) >= self.threshold
        if cut:
            self.frames.append(int(frame_index))
        self._prev = sig
        return cut

    @staticmethod
    def signature(image: np.ndarray) -> np.ndarray:
        small = cv2.resize(image, (96, 54), interpolation=cv2.INTER_AREA)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
        out = []
        for region in (hsv[:27, :48], hsv[:27, 48:], hsv[27:, :48], hsv[27:, 48:]):
            h = cv2.calcHist([region], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256])
            out.append(h.ravel() / max(h.sum(), 1.0))
        return np.asarray(out)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.median(0.5 * np.abs(a - b).sum(axis=1)))
