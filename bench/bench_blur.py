"""Motion blur: how much accuracy does it cost, and does it push predictions towards one class?

Each FER2013 PublicTest face is smeared along a line of N px (a normalised line kernel, turned to
the given angle; 0 = horizontal, as a walker's sideways motion, 90 = vertical) and classified as
`evaluate` does (flip TTA, float32). Prints accuracy and the predicted share of each class per
condition: the check behind docs/model.md's note on the shared crowd clip.

    python bench/bench_blur.py [--model X.keras] [--blur 3:0 5:0 7:0 9:0 5:90 7:90]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from common import SHARED

from batchemo.model import load_model
from batchemo.training.datasets import Split, load_folder
from batchemo.training.evaluate import score

FER_TEST = SHARED / "data" / "fer2013" / "test"


def motion_blur(faces: np.ndarray, length: int, angle: float) -> np.ndarray:
    """(N, s, s, 1) uint8 faces smeared along a `length`-px line at `angle` degrees."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    centre = ((length - 1) / 2, (length - 1) / 2)
    kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(centre, angle, 1.0), (length, length))
    kernel /= kernel.sum()
    return np.stack([cv2.filter2D(f[..., 0], -1, kernel, borderType=cv2.BORDER_REFLECT)[..., None]
                     for f in faces])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="artifact (default: the shipped model)")
    ap.add_argument("--blur", nargs="*", default=["3:0", "5:0", "7:0", "9:0", "5:90", "7:90"],
                    help="LENGTH:ANGLE conditions")
    args = ap.parse_args()
    if not FER_TEST.is_dir():
        raise SystemExit(f"{FER_TEST} not found: this benchmark needs ../shared/data/fer2013")
    val = load_folder(FER_TEST, 48, only="PublicTest_*")
    model = load_model(args.model)
    print("condition   accuracy  " + "  ".join(f"{c[:7]:>7}" for c in model.classes))
    for cond in ["none", *args.blur]:
        if cond == "none":
            x = val.x
        else:
            length, angle = cond.split(":")
            x = motion_blur(val.x, int(length), float(angle))
        r = score(model, Split(x, val.y, val.classes, val.names), tta=True)
        print(f"{cond:<10}  {r['accuracy']:7.2%}  "
              + "  ".join(f"{r['predicted_share'][c]:7.3f}" for c in model.classes), flush=True)


if __name__ == "__main__":
    main()
