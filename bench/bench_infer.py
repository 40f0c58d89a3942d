"""Inference alone: faces/s of the emotion model at batch 1 vs 64, with and without TTA.

    python bench/bench_infer.py [--quick] [--runs 5] [--batch-sizes 1 64] [--model PATH]
                                [--precisions float32 bfloat16]

Random 48x48 crops (speed does not depend on the pixels) go through, per batch size B:

  predict          LoadedModel.predict on (B, 48, 48, 1) float32 arrays: the model call alone
  Batcher          Batcher(model, B, tta=False).add() one crop at a time, as the pipeline feeds it
  Batcher+tta      the same with tta=True (each call carries the crops and their mirrors: 2B rows)
  Batcher, 1/flush (largest B only) flush() after every crop: each face pays a padded B-row
                   call, what per-file batching would cost one-face photos (the pipeline lets
                   faces wait for a full batch across files instead)

Each run pushes max(4, --faces // B) calls (at most --max-calls); the median over --runs (at
least 5 by default) is printed as faces/s and ms per call, with the speed-up against batch 1 and
the cost of TTA, all measured in this invocation. Unless --no-reference, also keras
Model.predict (per-call fixed cost) and an eager model(x) call at batch 1, the ways fer calls its
CNN. The last line turns the batch-64 TTA rate into seconds of inference for a 10-min video at
5 fps with one face per frame (3000 faces). Everything is measured once per --precisions entry
(the model loaded with load_model(path, precision)); the last block compares them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import median, resolve_model  # noqa: E402


def macs_per_face(keras_model) -> int:
    """Multiply-adds of the Conv2D and Dense layers for one input (the bulk of the compute)."""
    total = 0
    for layer in keras_model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, _ = layer.output.shape
            total += h * w * int(np.prod(layer.kernel.shape))
        elif kind == "Dense":
            total += int(np.prod(layer.kernel.shape))
    return total


def timed(fn, runs: int) -> float:
    fn()  # warm-up: traces the graph, allocates
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--quick", action="store_true", help="fewer faces per run (runs stay 5)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--faces", type=int, help="faces per run, batched (default 512; quick 128)")
    ap.add_argument("--max-calls", type=int, help="cap on calls per run (default 128; quick 32)")
    ap.add_argument("--model", help="model artifact (default: the shipped one, else random)")
    ap.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                    choices=["float32", "bfloat16"], help="inference precisions to compare")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip keras Model.predict and the eager call")
    args = ap.parse_args()
    faces = args.faces or (128 if args.quick else 512)
    max_calls = args.max_calls or (32 if args.quick else 128)
    sizes = sorted(set(args.batch_sizes))

    path, model_line = resolve_model(args.model)
    from batchemo._util.tf import import_tf
    from batchemo.engines.batcher import Batcher
    from batchemo.model import load_model

    tf = import_tf()
    from batchemo.model import native_bfloat16

    model = load_model(path)
    s = model.input_size
    load = os.getloadavg()
    print(f"bench_infer: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}, TensorFlow {tf.__version__}, intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}")
    if load[0] > 0.5:
        print("WARNING: the machine is busy (1-min load > 0.5): these are not idle-machine figures")
    print(model_line)
    print(f"CPU has native bfloat16 (avx512_bf16/amx_bf16): {native_bfloat16()}")
    gmac = macs_per_face(model.keras_model) / 1e9
    print(f"{model.model_id}: {s}x{s}x1 input, {gmac * 1000:.0f} M multiply-adds per face, card "
          f"tta={model.meta.get('tta', False)}, median of {args.runs} runs")

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (max(sizes) * 4, s, s, 1), dtype=np.uint8)

    def measure(model) -> dict:
        """Print this model's rows and ratios; returns {(label, batch): faces/s}."""
        def calls_for(b: int) -> int:
            return min(max_calls, max(4, faces // b))

        def predict_fn(b: int):
            x = pool[:b].astype(np.float32)
            n = calls_for(b)

            def go():
                for _ in range(n):
                    model.predict(x)
            return go, n * b, n

        def batcher_fn(b: int, tta: bool, flush_each: bool = False):
            n = calls_for(b) if not flush_each else min(max_calls, max(4, faces // b))
            total = n if flush_each else n * b
            batcher = Batcher(model, b, tta)

            def go():
                done = 0
                for i in range(total):
                    done += len(batcher.add(i, pool[i % len(pool)]))
                    if flush_each:
                        done += len(batcher.flush())
                done += len(batcher.flush())
                assert done == total, (done, total)
            return go, total, n

        rows = []  # (label, b, faces/s, ms/call)
        for b in sizes:
            for label, (fn, n_faces, n_calls) in (
                ("predict", predict_fn(b)),
                ("Batcher", batcher_fn(b, False)),
                ("Batcher+tta", batcher_fn(b, True)),
            ):
                secs = timed(fn, args.runs)
                rows.append((label, b, n_faces / secs, 1000 * secs / n_calls))
                print(f"  {label:20s} batch {b:4d}  {n_faces / secs:8.1f} faces/s  "
                      f"{1000 * secs / n_calls:8.2f} ms/call", flush=True)
        big = sizes[-1]
        if big > 1:
            for tta in (False, True):
                fn, n_faces, n_calls = batcher_fn(big, tta, flush_each=True)
                secs = timed(fn, args.runs)
                label = "Batcher, 1/flush" + ("+tta" if tta else "")
                rows.append((label, big, n_faces / secs, 1000 * secs / n_calls))
                print(f"  {label:20s} batch {big:4d}  {n_faces / secs:8.1f} faces/s  "
                      f"{1000 * secs / n_calls:8.2f} ms/call", flush=True)

        if not args.no_reference:
            km = model.keras_model
            for b in (1, 64):
                x = pool[:b].astype(np.float32)
                secs = timed(lambda x=x: km.predict(x, verbose=0), args.runs)
                rows.append(("keras .predict", b, b / secs, 1000 * secs))
                print(f"  {'keras .predict':20s} batch {b:4d}  {b / secs:8.1f} faces/s  "
                      f"{1000 * secs:8.2f} ms/call", flush=True)
            x = pool[:1].astype(np.float32)
            n = min(max_calls, 32)

            def eager():
                for _ in range(n):
                    km(x, training=False)
            secs = timed(eager, args.runs)
            rows.append(("eager model(x)", 1, n / secs, 1000 * secs / n))
            print(f"  {'eager model(x)':20s} batch {1:4d}  {n / secs:8.1f} faces/s  "
                  f"{1000 * secs / n:8.2f} ms/call", flush=True)

        rate = {(lab, b): r for lab, b, r, _ in rows}
        print("\nratios (same invocation):")
        base = rate.get(("predict", 1))
        for b in sizes[1:]:
            if base:
                print(f"  batch {b} vs batch 1: predict {rate[('predict', b)] / base:5.1f}x, "
                      f"Batcher {rate[('Batcher', b)] / rate[('Batcher', 1)]:5.1f}x, Batcher+tta "
                      f"{rate[('Batcher+tta', b)] / rate[('Batcher+tta', 1)]:5.1f}x faces/s")
        for b in sizes:
            feed = rate[("Batcher", b)] / rate[("predict", b)]
            tta = rate[("Batcher", b)] / rate[("Batcher+tta", b)]
            print(f"  batch {b}: Batcher / predict {feed:.2f} (feeding overhead), tta costs {tta:.2f}x")
        if big > 1:
            print(f"  batch {big}, a flush per face (one-face files) vs full batches: "
                  f"{rate[('Batcher', big)] / rate[('Batcher, 1/flush', big)]:.0f}x slower per face")
        if 64 in sizes:
            r = rate[("Batcher+tta", 64)]
            print(f"  batch 64 with tta sustains {2 * r * gmac * 2:.0f} GFLOP/s "
                  f"({2 * gmac * 2:.2f} GFLOP per face with its mirror)")
            print(f"\n3000 faces (10-min video, 5 fps, 1 face/frame) at batch 64 with tta: "
                  f"{3000 / r:.1f} s of inference; without tta {3000 / rate[('Batcher', 64)]:.1f} s")

        return rate

    rates = {}
    for precision in args.precisions:
        model = load_model(path, precision)
        print(f"\n== precision {model.precision} ==")
        rates[precision] = measure(model)
    if len(rates) == 2 and 64 in sizes:
        a, b = rates["float32"], rates["bfloat16"]
        print("\nbfloat16 vs float32 (same invocation), batch 64: "
              f"predict {b[('predict', 64)] / a[('predict', 64)]:.2f}x, "
              f"Batcher+tta {b[('Batcher+tta', 64)] / a[('Batcher+tta', 64)]:.2f}x faces/s")

if __name__ == "__main__":
    main()
