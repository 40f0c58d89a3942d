"""Detector speed on real media: ms/frame end to end vs model only, and faces found per frame.

Run from the repository root: `python bench/bench_detect.py [--runs 5]`. Needs ../shared/media.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchemo.media.detect import DETECTORS, get_detector  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
VIDEOS = ["closeup_changing_expression.mp4", "multi_person_stage_audience.mp4"]  # 640x360
PHOTO = "group_5_people.jpg"  # 1000x667, 5 faces


def load_frames(per_video: int = 4) -> list[tuple[str, np.ndarray]]:
    frames = []
    for name in VIDEOS:
        cap = cv2.VideoCapture(str(MEDIA / "videos" / name))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for i in np.linspace(0, n - 10, per_video).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
            ok, frame = cap.read()
            if ok:
                frames.append((f"{name}#{i}", frame))
        cap.release()
    frames.append((PHOTO, cv2.imread(str(MEDIA / "images" / PHOTO))))
    return frames


class Timed:
    """Wraps the model call to add up the time spent inside it."""

    def __init__(self, fn):
        self.fn, self.total, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - t
            self.calls += 1


def bench(name: str, frames, runs: int) -> None:
    det = get_detector(name)
    if hasattr(det, "_run"):
        model = det._run = Timed(det._run)
    else:  # Haar: the cascade is the model
        cascade = det._cascade
        model = Timed(cascade.detectMultiScale)
        det._cascade = type("C", (), {"detectMultiScale": model})()
    counts = [len(det.detect(f)) for _, f in frames]  # warm-up
    rows = {}
    for label, frame in frames:
        e2e, mod = [], []
        for _ in range(runs):
            model.total = 0.0
            t = time.perf_counter()
            det.detect(frame)
            e2e.append(time.perf_counter() - t)
            mod.append(model.total)
        rows[label] = (1000 * statistics.median(e2e), 1000 * statistics.median(mod))
    video = [v for k, v in rows.items() if "#" in k]
    print(f"\n{name}: {model.calls / ((runs + 1) * len(frames)):.1f} model calls/frame on average")
    for (label, (e, m)), n in zip(rows.items(), counts, strict=True):
        print(f"  {label:42s} faces {n:3d}   {e:7.1f} ms end-to-end  {m:7.1f} ms model")
    print(f"  {'640x360 video frames, mean of medians':42s}           "
          f"{np.mean([e for e, _ in video]):7.1f} ms end-to-end  "
          f"{np.mean([m for _, m in video]):7.1f} ms model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--detectors", nargs="*", default=list(DETECTORS))
    args = ap.parse_args()
    if not MEDIA.is_dir():
        sys.exit(f"{MEDIA} not found (../shared/media holds the benchmark media)")
    frames = load_frames()
    print(f"{len(frames)} frames, median of {args.runs} runs each, OpenCV {cv2.__version__}, "
          f"cv2 threads {cv2.getNumThreads()}")
    for name in args.detectors:
        bench(name, frames, args.runs)


if __name__ == "__main__":
    main()
