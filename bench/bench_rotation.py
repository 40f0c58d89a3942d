"""Tilted faces: does a face keep its top class when the photo is turned ±20°?

For every face found in the shared photos (the crowded Solvay photo and the face-less ones left
out), the photo is turned by each angle about its centre on a canvas large enough to keep every
pixel, faces are detected again, each upright face is matched to the detection nearest to where
its centre went, and the top class of the two crops (flip TTA, float32, as `run` classifies) is
compared. `--no-level` turns off the eye-levelling of crops to show what it buys.

    python bench/bench_rotation.py [--model X.keras ...] [--angles 20 -20] [--no-level]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from batchemo.media import crop
from batchemo.media.decode import read_image
from batchemo.media.detect import get_detector
from batchemo.model import load_model
from batchemo.training.evaluate import predict_probs

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "media" / "images"
LEFT_OUT = {"group_solvay_1927_grayscale.jpg", "noface_flowers.jpg", "noface_mountain.jpg"}


def turned(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The image turned `angle` degrees counter-clockwise on an enlarged canvas, and the 2x3 map
    from old to new pixel coordinates."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos + 0.5), int(h * cos + w * sin + 0.5)
    m[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
    return cv2.warpAffine(image, m, (nw, nh), borderMode=cv2.BORDER_REPLICATE), m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="*", default=[None], help="artifacts (default: shipped)")
    ap.add_argument("--angles", nargs="*", type=float, default=[20.0, -20.0])
    ap.add_argument("--no-level", action="store_true", help="crop without levelling the eyes")
    args = ap.parse_args()
    if args.no_level:
        crop.LEVEL_MIN_DEG = 360.0
    detector = get_detector()
    pairs = []  # (upright crop, turned crop or None)
    for path in sorted(IMAGES.glob("*.jpg")):
        if path.name in LEFT_OUT:
            continue
        image = read_image(path)
        upright = detector.detect(image)
        for angle in args.angles:
            img2, m = turned(image, angle)
            boxes = detector.detect(img2)
            centres = np.array([(b.x + b.w / 2, b.y + b.h / 2) for b in boxes]).reshape(-1, 2)
            for b in upright:
                c = m @ (b.x + b.w / 2, b.y + b.h / 2, 1)
                d = np.hypot(*(centres - c).T) if len(boxes) else np.array([np.inf])
                k = int(d.argmin())
                match = boxes[k] if d[k] < 0.5 * max(b.w, b.h) else None
                pairs.append((crop.face_crop(image, b), match and crop.face_crop(img2, match)))
    found = [(a, b) for a, b in pairs if b is not None]
    print(f"{len(pairs)} face x angle pairs, {len(found)} found again after turning")
    for name in args.model:
        model = load_model(name)
        a = predict_probs(model, np.stack([p[0] for p in found]), tta=True).argmax(1)
        b = predict_probs(model, np.stack([p[1] for p in found]), tta=True).argmax(1)
        same = int((a == b).sum())
        print(f"{model.model_id}: same top class {same}/{len(found)} ({same / len(found):.0%})"
              f"{' (crops not levelled)' if args.no_level else ''}")


if __name__ == "__main__":
    main()
