"""Archive-scale benchmark (issue 16, part 2): a synthetic archive of small photos (some with a
drawn face, some without) and short videos, run through `batchemo run` as cron would.

Measures, for the single-file output (results.parquet) and the directory output (results/):
first run, no-op rerun, rerun after 1 % of the photos changed, and a DuckDB group-by over the
faces table; prints seconds per file of ledger/plan overhead, the faces footer size and row
groups, the number of part files, and the bars of issue 16.

    python bench/bench_archive.py                 # 10,000 photos + 200 videos (hours on 2 cores)
    python bench/bench_archive.py --files 2040    # the same mix, scaled (photos:videos = 50:1)

Needs `pip install duckdb` (not a package dependency). Files go to the bench cache
(see common.py), never into the work tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, cache_dir  # noqa: E402
from facedraw import draw_face  # noqa: E402

FACE_SHARE = 0.4  # photos with a drawn face; the rest have none


def photo(rng: np.random.Generator, face: bool, size: int = 160) -> np.ndarray:
    img = rng.integers(60, 200, (size, size, 3), np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 6)
    if face:
        s = int(rng.integers(70, 100))
        x, y = (int(v) for v in rng.integers(0, size - s, 2))
        draw_face(img, x, y, s, smile=float(rng.uniform(-1, 1)))
    return img


def video(path: Path, rng: np.random.Generator, seconds: float = 2.0, fps: float = 10.0) -> None:
    h, w = 120, 160
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    back = cv2.GaussianBlur(rng.integers(60, 200, (h, w, 3), np.uint8), (0, 0), 6)
    for i in range(round(seconds * fps)):
        frame = back.copy()
        draw_face(frame, 30 + i, 20, 70, smile=np.sin(i / 5))
        writer.write(frame)
    writer.release()


def make_archive(root: Path, photos: int, videos: int) -> Path:
    src = root / "in"
    stamp = root / "made.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == [photos, videos]:
        return src
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(16)
    for i in range(photos):
        p = src / f"photos/{i // 500:03d}/img_{i:06d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), photo(rng, rng.random() < FACE_SHARE), [cv2.IMWRITE_JPEG_QUALITY, 85])
    for i in range(videos):
        p = src / f"videos/clip_{i:04d}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        video(p, rng)
    stamp.write_text(json.dumps([photos, videos]))
    return src


def change(src: Path, n: int, seed: int) -> list[Path]:
    """Rewrite n photos with new content (a face), as an edited photo would be."""
    rng = np.random.default_rng(seed)
    photos = sorted((src / "photos").rglob("*.jpg"))
    picked = [photos[i] for i in rng.choice(len(photos), n, replace=False)]
    for p in picked:
        cv2.imwrite(str(p), photo(rng, True), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return picked


MODEL: list[str] = []  # ["--model", copy of the model]: a model replaced mid-bench is no matter


def batchemo(src: Path, out: str, workers: int) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "batchemo", "run", "--quiet", "-i", str(src),
                        "-o", out, "--workers", str(workers), *MODEL], cwd=ROOT,
                       capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode not in (0, 1):
        sys.exit(f"batchemo run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return elapsed


def faces_layout(out: Path, is_dir: bool) -> dict:
    import pyarrow.parquet as pq

    files = sorted((out / "faces").glob("*.parquet")) if is_dir else [out]
    footer = groups = rows = 0
    for f in files:
        md = pq.ParquetFile(f).metadata
        footer += md.serialized_size
        groups += md.num_row_groups
        rows += md.num_rows
    return {"faces_files": len(files), "row_groups": groups, "faces_rows": rows,
            "footer_bytes": footer}


def duckdb_query(out: Path, is_dir: bool, repeats: int = 5) -> float:
    import duckdb

    target = f"{out}/faces/*.parquet" if is_dir else str(out)
    sql = (f"SELECT emotion, count(*) AS n, avg(confidence) AS c "
           f"FROM read_parquet('{target}') GROUP BY emotion")
    con = duckdb.connect()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        con.execute(sql).fetchall()
        best = min(best, time.perf_counter() - t)
    return best


def own_run(picked: list[Path], src: Path, work: Path, workers: int) -> float:
    """The changed files' own processing: a fresh run (model load included, as any run that
    processes a file pays it) over a folder holding only those files."""
    alone = work / "changed-only"
    shutil.rmtree(alone, ignore_errors=True)
    for p in picked:
        dst = alone / "in" / p.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
    t = batchemo(alone / "in", str(alone / "own.parquet"), workers)
    shutil.rmtree(alone, ignore_errors=True)
    return t


def bench_form(src: Path, work: Path, form: str, n_files: int, n_changed: int,
               workers: int, seed: int) -> dict:
    is_dir = form == "dir"
    out = work / ("results" if is_dir else "results.parquet")
    arg = f"{out}/" if is_dir else str(out)
    shutil.rmtree(out, ignore_errors=True) if is_dir else out.unlink(missing_ok=True)
    shutil.rmtree(work / "results.batchemo", ignore_errors=True)
    for f in work.glob("results.*.parquet"):
        f.unlink()
    print(f"  [{form}] first run of {n_files} files ...", flush=True)
    r = {"form": form, "first_run_s": batchemo(src, arg, workers)}
    print(f"  [{form}] no-op rerun ...", flush=True)
    r["noop_s"] = min(batchemo(src, arg, workers) for _ in range(2))
    picked = change(src, n_changed, seed)
    print(f"  [{form}] rerun after {n_changed} changed ...", flush=True)
    r["changed_run_s"] = batchemo(src, arg, workers)
    r["changed_files"] = n_changed
    r["changed_own_s"] = own_run(picked, src, work, workers)
    r["first_run_per_file_s"] = r["first_run_s"] / n_files
    r.update(faces_layout(out, is_dir))
    r["duckdb_s"] = duckdb_query(out, is_dir)
    r["noop_per_file_ms"] = 1000 * r["noop_s"] / n_files
    # bars of issue 16, at this size
    r["changed_bar_s"] = 2 * r["changed_own_s"] + r["noop_s"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_200,
                    help="archive size (photos:videos = 50:1, as 10,000 + 200)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--forms", default="parquet,dir", help="parquet, dir or both")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--model", type=Path, default=ROOT / "batchemo/models/fer2013-default.keras",
                    help="model to run (copied to the cache first; default: the shipped one)")
    args = ap.parse_args()
    videos = max(1, round(args.files * 200 / 10_200))
    photos = args.files - videos
    root = cache_dir() / f"archive-{photos}-{videos}"
    t = time.perf_counter()
    src = make_archive(root, photos, videos)
    print(f"archive: {photos} photos + {videos} videos in {src} "
          f"({time.perf_counter() - t:.0f} s to make); load {os.getloadavg()[0]:.1f}")
    model = cache_dir() / "archive-model" / args.model.name
    model.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json"):
        shutil.copy2(args.model.with_suffix(suffix), model.with_suffix(suffix))
    MODEL[:] = ["--model", str(model)]
    print(f"model: {json.loads(model.with_suffix('.json').read_text()).get('model_id', model)}")
    n_changed = max(1, photos // 100)
    results = []
    for i, form in enumerate(args.forms.split(",")):
        work = root / "work"
        work.mkdir(exist_ok=True)
        shutil.rmtree(src, ignore_errors=True)  # undo the previous form's changes
        (root / "made.json").unlink(missing_ok=True)
        src = make_archive(root, photos, videos)
        results.append(bench_form(src, work, form, args.files, n_changed, args.workers, seed=i))
    scale = 10_200 / args.files
    for r in results:
        print(f"\n== {r['form']} ({args.files} files, {n_changed} changed)")
        for k, v in r.items():
            print(f"  {k:22s} {v:.4g}" if isinstance(v, float) else f"  {k:22s} {v}")
        noop = r["noop_s"] * scale  # an upper bound: part of it is start-up, not per file
        print(f"  bar no-op (10,200 files, linear): {noop:.1f} s <= 10 s: "
              f"{'ok' if noop <= 10 else 'OVER'}")
        print(f"  bar 1% changed: {r['changed_run_s']:.1f} s <= {r['changed_bar_s']:.1f} s: "
              f"{'ok' if r['changed_run_s'] <= r['changed_bar_s'] else 'OVER'}")
        print(f"  bar DuckDB group-by: {r['duckdb_s']:.3f} s <= 0.2 s: "
              f"{'ok' if r['duckdb_s'] <= 0.2 else 'OVER'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
