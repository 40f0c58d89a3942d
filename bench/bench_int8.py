"""What int8 inference (`run --precision int8`) costs and saves against TensorFlow float32 and
bfloat16: CPU per face and accuracy, with a fresh int8 copy of the model.

    python bench/bench_int8.py [--model PATH] [--calibration 500] [--runs 5] [--only GLOB]

Makes an int8 copy of the model (default: the shipped one) as `train --int8` does
(`batchemo.model.quantize`: weights and activations int8, float32 in and out, activation ranges
from --calibration training faces of ../shared FER2013, seed 0), then, in this invocation:

  speed      CPU milliseconds per face at batch 64 (process time, median of --runs, one run =
             640 faces): TensorFlow float32 (what `run` uses without native bf16), TensorFlow
             bfloat16 (only where the CPU has it natively), LiteRT float32 and LiteRT int8
  accuracy   on the FER2013 test files matching --only (default PublicTest_*: PrivateTest decides
             nothing), with run's selective flip TTA, for TensorFlow float32 and LiteRT int8, and
             how often the two agree on the top class

Set BATCHEMO_NO_BF16=1 ONEDNN_MAX_CPU_ISA=AVX2 to time TensorFlow as a CPU without native bf16
computes (LiteRT's XNNPACK kernels cannot be held to AVX2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import SHARED, median, resolve_model  # noqa: E402

BATCH = 64


def float_model(keras_model, path: Path) -> None:
    import tensorflow as tf

    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_model).convert())


def litert_predict(path: Path):
    """predict(x) for any number of faces, in padded batches of BATCH, on one thread."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    it.resize_tensor_input(inp, (BATCH, 48, 48, 1))
    it.allocate_tensors()

    def predict(x: np.ndarray) -> np.ndarray:
        probs = []
        for s in range(0, len(x), BATCH):
            b = x[s:s + BATCH].astype(np.float32)
            b = np.concatenate([b, np.zeros((BATCH - len(b), *b.shape[1:]), np.float32)])
            it.set_tensor(inp, b)
            it.invoke()
            probs.append(it.get_tensor(out)[:len(x) - s].copy())
        return np.concatenate(probs)
    return predict


def batched(predict):
    """TensorFlow's predict in batches of BATCH, as run's Batcher calls it."""
    return lambda x: np.concatenate([predict(x[s:s + BATCH]) for s in range(0, len(x), BATCH)])


def cpu_ms_per_face(predict, x: np.ndarray, runs: int) -> float:
    predict(x[:BATCH])  # first call allocates
    times = []
    for _ in range(runs):
        t = time.process_time()
        predict(x)
        times.append((time.process_time() - t) / len(x) * 1e3)
    return median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model artifact (default: the shipped one)")
    ap.add_argument("--calibration", type=int, default=500, help="training faces for int8 ranges")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="PublicTest_*", help="test files scored (a glob)")
    args = ap.parse_args()
    data = SHARED / "data" / "fer2013"
    if not data.is_dir():
        sys.exit(f"no FER2013 at {data}: this benchmark needs ../shared")

    from batchemo.model import load_model, native_bfloat16, quantize
    from batchemo.training.datasets import load_folder
    from batchemo.tta import mirror_below, predict_tta

    path, how = resolve_model(args.model)
    print(f"{how}; CPU has native bf16: {native_bfloat16()}; "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}")
    train = load_folder(data / "train", 48)
    test = load_folder(data / "test", 48, only=args.only)
    f32 = load_model(path, "float32")
    with tempfile.TemporaryDirectory() as tmp:
        copy, lf32 = Path(tmp) / "m.keras", Path(tmp) / "float32.tflite"
        for suffix in (".keras", ".json"):
            shutil.copy(path.with_suffix(suffix), copy.with_suffix(suffix))
        entry = quantize(copy, train.x, n=args.calibration, seed=0)  # as `train --int8` does
        float_model(f32.keras_model, lf32)
        print(f"int8 copy {(copy.parent / entry['file']).stat().st_size / 2**20:.1f} MiB "
              f"(calibrated on {entry['calibration']})")
        ways = {"TensorFlow float32": batched(f32.predict), "LiteRT float32": litert_predict(lf32),
                "LiteRT int8": batched(load_model(copy, "int8").predict)}
        if native_bfloat16():
            ways["TensorFlow bfloat16"] = batched(load_model(path, "bfloat16").predict)
        x = train.x[:640].astype(np.float32)
        base = None
        print(f"\nCPU ms per face, batch {BATCH}, median of {args.runs} runs of {len(x)} faces")
        for name, predict in ways.items():
            ms = cpu_ms_per_face(predict, x, args.runs)
            base = base or ms
            print(f"  {name:22s} {ms:6.3f}   {base / ms:4.2f}x TensorFlow float32")
        print(f"\n{args.only} ({len(test)} faces), selective flip TTA:")
        below, x = mirror_below(f32.meta), test.x.astype(np.float32)  # as run mirrors
        ref = predict_tta(ways["TensorFlow float32"], x, True, below)
        q = predict_tta(ways["LiteRT int8"], x, True, below)
        for name, p in (("TensorFlow float32", ref), ("LiteRT int8", q)):
            print(f"  {name:22s} accuracy {(p.argmax(1) == test.y).mean():.4f}")
        print(f"  top class agrees on {(ref.argmax(1) == q.argmax(1)).mean():.4f} of faces; "
              f"largest probability difference {np.abs(ref - q).max():.3f}")


if __name__ == "__main__":
    main()
