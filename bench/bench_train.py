"""Training throughput: images/s of the default architecture's training step, per precision,
augmentation and feed.

    python bench/bench_train.py [--runs 5] [--steps 20] [--batch-size 128]
                                [--precisions mixed_bfloat16 float32] [--augments layers gather]
                                [--feeds batches tfdata]

Random 48x48 faces (speed does not depend on the pixels) train `build("default", 7)` with the
optimizer, loss and class weights `batchemo train` uses. Per combination, one fit of --steps
steps warms up (graph tracing), then --runs fits of --steps steps each are timed; the median is
printed as images/s (the first combination also runs once, untimed, before all of them).
Augments (`batchemo train --augment`): `layers` (Keras's RandomFlip,
Rotation, Zoom, Translation) and `gather` (augment.FaceAugment, one batched resampling). Feeds:

  batches   train._batches: the numpy PyDataset `batchemo train` uses (runs under any backend)
  tfdata    tf.data from_tensor_slices + shuffle + batch + prefetch: TensorFlow's own pipeline,
            what `batchemo train` fed before (the baseline for the feed's cost)

The last lines give each combination's speed relative to the first one, per precision, measured
in this invocation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import median  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--precisions", nargs="+", default=["mixed_bfloat16", "float32"])
    ap.add_argument("--augments", nargs="+", default=["layers", "gather"],
                    choices=["layers", "gather"])
    ap.add_argument("--feeds", nargs="+", default=["batches"], choices=["batches", "tfdata"])
    args = ap.parse_args()

    from batchemo._util.tf import import_keras
    from batchemo.model import build
    from batchemo.training.datasets import Split, class_weights
    from batchemo.training.train import _batches

    keras = import_keras()
    n = args.steps * args.batch_size
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8),
                  rng.integers(0, 7, n), tuple(f"c{i}" for i in range(7)), [""] * n)

    def feed(kind: str):
        if kind == "batches":
            return _batches(keras, split, args.batch_size, 0, shuffle=True)
        import tensorflow as tf
        ds = tf.data.Dataset.from_tensor_slices((split.x, np.eye(7, dtype=np.float32)[split.y]))
        return ds.shuffle(n, seed=0).batch(args.batch_size).prefetch(tf.data.AUTOTUNE)

    combos = [(a, f) for a in args.augments for f in args.feeds]
    rates: dict[tuple[str, str, str], float] = {}
    for precision in args.precisions:
        keras.config.set_dtype_policy(precision)
        # The first combination timed in a process measured at half the speed of the same one
        # timed later (125 vs 244 img/s), so it runs once untimed first.
        for i, (augment, kind) in enumerate([combos[0], *combos]):
            keras.utils.set_random_seed(0)
            model = build("default", 7, augment)
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                          keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
            data, weights = feed(kind), class_weights(split.y, 7)
            model.fit(data, epochs=1, class_weight=weights, verbose=0)  # warm-up: tracing
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                model.fit(data, epochs=1, class_weight=weights, verbose=0)
                times.append(time.perf_counter() - t)
            if i == 0:
                continue
            rates[precision, augment, kind] = n / median(times)
            print(f"{precision:15s} {augment:7s} {kind:8s} {rates[precision, augment, kind]:7.0f}"
                  f" img/s (median of {args.runs} x {args.steps} steps of {args.batch_size})",
                  flush=True)
    for precision in args.precisions:
        base = rates[(precision, *combos[0])]
        print(f"{precision}: " + ", ".join(f"{a}/{f} {rates[precision, a, f] / base:.2f}x"
                                           for a, f in combos) + f" (vs {'/'.join(combos[0])})")


if __name__ == "__main__":
    main()
