"""Local vs Ray engine on the same inputs: fixed cost (s) and per-file throughput, medians.

    python bench/bench_engines.py [--runs 3] [--sizes 1,64,192] [--model PATH]

Each run is `python -m batchemo run` in a fresh process on a fresh output, as under cron, so its
wall time includes interpreter, TensorFlow and (for Ray) cluster start-up. Inputs are the real
photos of ../shared/media/images, copied round-robin into one folder per size. Per file is the
slope between the two largest sizes, (T_c - T_b) / (c - b); fixed cost is the intercept,
T_b - b * per file; the smallest size (1 file) is what a cron run with one new photo waits.
The slope is taken between large sizes because Ray decodes and detects while its model actor
is still starting, which hides the first files' cost. Engines run alternately so that
background load hits both alike. Without --model a random-weight artifact of the default
architecture is made (inference speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media" / "images"
ENGINES = ("local", "ray")


def make_inputs(base: Path, n: int) -> Path:
    d = base / f"in{n}"
    photos = sorted(MEDIA.glob("*.jpg"))
    for i, src in zip(range(n), itertools.cycle(photos), strict=False):
        (d / f"{i:04d}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, d / f"{i:04d}" / src.name)
    return d


def random_model(base: Path) -> Path:
    from batchemo._util.tf import import_keras
    from batchemo.model import build, save_artifact
    from batchemo.training.datasets import EMOTIONS

    import_keras().utils.set_random_seed(7)
    path = base / "model" / "random.keras"
    save_artifact(build("default", len(EMOTIONS)), path,
                  {"arch": "default", "classes": list(EMOTIONS), "tta": True})
    return path


def timed_run(engine: str, inputs: Path, out: Path, model: Path) -> tuple[float, int]:
    shutil.rmtree(out.with_suffix(".batchemo"), ignore_errors=True)
    cmd = [sys.executable, "-m", "batchemo", "run", "-i", str(inputs), "-o", str(out),
           "--model", str(model), "--engine", engine, "--quiet"]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr}")
    return wall, pq.read_table(out).num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="1,64,192", help="file counts: smallest, then two large")
    ap.add_argument("--model", type=Path, help="model artifact (default: random weights)")
    args = ap.parse_args()
    sizes = sorted(int(n) for n in args.sizes.split(","))
    if len(sizes) != 3:
        sys.exit("--sizes takes three counts, e.g. 1,64,192")
    if not MEDIA.is_dir():
        sys.exit(f"needs the real photos in {MEDIA}")
    base = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        model = args.model or random_model(base)
        inputs = {n: make_inputs(base, n) for n in sizes}
        walls: dict[tuple[str, int], list[float]] = {}
        faces: dict[tuple[str, int], int] = {}
        for run in range(args.runs):
            for n, engine in itertools.product(sizes, ENGINES):
                wall, f = timed_run(engine, inputs[n], base / f"{engine}{n}.parquet", model)
                walls.setdefault((engine, n), []).append(wall)
                faces[(engine, n)] = f
                print(f"run {run + 1}: {engine:5s} {n:4d} files  {wall:7.2f} s  {f:5d} faces",
                      flush=True)
        a, b, c = sizes
        print(f"\nmedians of {args.runs} runs of {', '.join(map(str, sizes))} photos "
              f"({', '.join(p.name for p in sorted(MEDIA.glob('*.jpg')))}, round-robin)")
        print(f"{'engine':8s}" + "".join(f"{f'T {n}':>9s}" for n in sizes)
              + f"{'fixed s':>9s}{'s/file':>9s}{'files/s':>9s}{'faces':>7s}")
        for engine in ENGINES:
            t = {n: statistics.median(walls[(engine, n)]) for n in sizes}
            per_file = (t[c] - t[b]) / (c - b)
            fixed = t[b] - b * per_file
            rate = f"{1 / per_file:9.2f}" if per_file > 0 else f"{'-':>9s}"
            print(f"{engine:8s}" + "".join(f"{t[n]:9.2f}" for n in sizes)
                  + f"{fixed:9.2f}{per_file:9.3f}{rate}{faces[(engine, c)]:7d}")
    finally:
        shutil.rmtree(base, ignore_errors=True)

if __name__ == "__main__":
    main()
