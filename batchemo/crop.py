"""Box geometry and face crops for the model: pure numpy/OpenCV, no detector or model state."""

from __future__ import annotations

import cv2
import numpy as np

from .records import FaceBox

# Margin added on every side, as a fraction of the box's longer side, so that a crop frames the
# face as FER2013 does. Measured by detecting faces in 536 FER2013 PublicTest images (upscaled
# 2-4x, replicate-padded): the median box side is 42.5-43.5 px of the 48 px frame for
# blazeface-full, 41.2-41.8 for blazeface and 46.5-47 for haar; margin = (48 / side - 1) / 2.
# (Box centres sit 1.5-3.8 px below the frame centre; not corrected: it is under 5% of the side.)
CROP_MARGINS: dict[str, float] = {"blazeface-full": 0.06, "blazeface": 0.08, "haar": 0.02}
CROP_MARGIN = CROP_MARGINS["blazeface-full"]  # the default detector's


def _square(box: FaceBox, margin: float) -> tuple[int, int, int]:
    # Unclipped square around the box centre: (x0, y0, side).
    side = max(1, int(max(box.w, box.h) * (1 + 2 * margin) + 0.5))
    # Twice the centre is an integer, so the floor division keeps the square centred exactly.
    return (2 * box.x + box.w - side) // 2, (2 * box.y + box.h - side) // 2, side


def square_box(box: FaceBox, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The square around the box centre, `margin` × its longer side added on every side, clipped
    to a width × height image: (x0, y0, x1, y1), x1 and y1 exclusive."""
    x0, y0, side = _square(box, margin)
    return max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)


def face_crop(
    image_bgr: np.ndarray, box: FaceBox, size: int = 48, margin: float = CROP_MARGIN
) -> np.ndarray:
    """The face as model input: a (size, size, 1) uint8 grayscale square crop (see square_box).

    Raises ValueError if the box lies outside the image.
    """
    h, w = image_bgr.shape[:2]
    x0, y0, side = _square(box, margin)
    cx0, cy0, cx1, cy1 = square_box(box, margin, w, h)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"box {box.x},{box.y},{box.w}x{box.h} lies outside the {w}x{h} image")
    region = image_bgr[cy0:cy1, cx0:cx1]
    if region.ndim == 3 and region.shape[2] == 3:
        gray = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    else:
        gray = region.reshape(region.shape[:2])
    # Where the square leaves the image, pad by replicating the edge instead of clipping and
    # stretching: the face keeps its shape and scale, and there is no hard black border that no
    # FER2013 training face has.
    gray = cv2.copyMakeBorder(gray, cy0 - y0, y0 + side - cy1, cx0 - x0, x0 + side - cx1,
                              cv2.BORDER_REPLICATE)
    # The same interpolation as datasets.py uses for training images.
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interp)[:, :, None]
