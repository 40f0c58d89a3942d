"""Box geometry and face crops for the model: pure numpy/OpenCV, no detector or model state."""

from __future__ import annotations

import cv2
import numpy as np

from batchemo.records import FaceBox

# Margin added on every side, as a fraction of the box's longer side, so that a crop frames the
# face as FER2013 does. Measured by detecting faces in 536 FER2013 PublicTest images (upscaled
# 2-4x, replicate-padded): the median box side is 42.5-43.5 px of the 48 px frame for
# blazeface-full, 41.2-41.8 for blazeface and 46.5-47 for haar; margin = (48 / side - 1) / 2.
# (Box centres sit 1.5-3.8 px below the frame centre; not corrected: it is under 5% of the side.)
CROP_MARGINS: dict[str, float] = {"blazeface-full": 0.06, "blazeface": 0.08, "haar": 0.02}
CROP_MARGIN = CROP_MARGINS["blazeface-full"]  # the default detector's


def margin_for(detector: str) -> float:
    """Margin that makes this detector's crops framed like the training faces."""
    return CROP_MARGINS.get(detector, CROP_MARGIN)


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


# Crops are turned so the eyes are level (FER2013's faces are upright) once the eye line tilts
# more than this; below it a turn would only resample the pixels.
LEVEL_MIN_DEG = 2.0


def eye_tilt(box: FaceBox) -> float:
    """Degrees the eye line is turned from level (positive: the person's left eye, on the right of
    the image, sits lower), from BlazeFace's first two landmarks; 0 without landmarks."""
    if box.landmarks is None or len(box.landmarks) < 2:
        return 0.0
    (rx, ry), (lx, ly) = box.landmarks[0], box.landmarks[1]
    return float(np.degrees(np.arctan2(ly - ry, lx - rx))) if lx != rx or ly != ry else 0.0


def face_crop(
    image_bgr: np.ndarray, box: FaceBox, size: int = 48, margin: float = CROP_MARGIN
) -> np.ndarray:
    """The face as model input: a (size, size, 1) uint8 grayscale square crop (see square_box),
    turned about the box centre so the eyes are level when the detector gives eye landmarks.

    Raises ValueError if the box lies outside the image.
    """
    h, w = image_bgr.shape[:2]
    x0, y0, side = _square(box, margin)
    cx0, cy0, cx1, cy1 = square_box(box, margin, w, h)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"box {box.x},{box.y},{box.w}x{box.h} lies outside the {w}x{h} image")
    tilt = eye_tilt(box)
    if abs(tilt) > LEVEL_MIN_DEG:
        return _level_crop(image_bgr, tilt, x0, y0, side, size)
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


def _level_crop(image_bgr: np.ndarray, tilt: float, x0: int, y0: int, side: int,
                size: int) -> np.ndarray:
    # Turn the square about its centre by `tilt` (one linear resampling at the source's scale),
    # then shrink as unturned crops are; outside the image the edge pixels repeat, as above.
    h, w = image_bgr.shape[:2]
    centre = (x0 + side / 2, y0 + side / 2)
    m = cv2.getRotationMatrix2D(centre, tilt, 1.0)
    m[:, 2] -= (x0, y0)  # output pixel (0, 0) is the square's corner
    # Only the neighbourhood of the square is converted to grey (a 4K frame stays cheap).
    reach = int(side * 0.75) + 2
    bx0, by0 = max(int(centre[0]) - reach, 0), max(int(centre[1]) - reach, 0)
    region = image_bgr[by0:min(int(centre[1]) + reach, h), bx0:min(int(centre[0]) + reach, w)]
    gray = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY) if region.ndim == 3 else region.reshape(
        region.shape[:2])
    m[:, 2] += m[:, :2] @ (bx0, by0)
    turned = cv2.warpAffine(gray, m, (side, side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(turned, (size, size), interpolation=interp)[:, :, None]
