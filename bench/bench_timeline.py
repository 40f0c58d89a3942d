"""Streaming timeline over 1 M synthetic face rows: seconds and peak RSS.

    python bench/bench_timeline.py [--rows 1000000] [--videos 200] [--batch-rows 32768]

The parent writes the synthetic faces and frames tables to a temp folder in chunks (so its own
memory stays small), then runs `timeline_from_parquet(..., out_path=...)` in a child process and
reports the child's time and peak RSS, and the whole process tree's peak (parent + child
maxima: an upper bound, the two never run their peaks at once).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
FPS = 2.0


def generate(out: Path, rows: int, videos: int, seed: int = 0) -> tuple[Path, Path]:
    """Faces (2 faces per sampled frame; a new track every ~60 s) and frames tables."""
    rng = np.random.default_rng(seed)
    per_video = rows // videos
    n_frames = per_video // 2
    faces_path, frames_path = out / "faces.parquet", out / "frames.parquet"
    fw = frw = None
    for v in range(videos):
        n = per_video if v < videos - 1 else rows - per_video * (videos - 1)
        fi = np.arange(n) // 2
        t = fi / FPS
        face = np.arange(n) % 2
        track = face + 2 * (t // 60).astype(np.int64)
        p = rng.dirichlet(np.ones(len(CLASSES)) * 0.6, size=n).astype(np.float32)
        top = p.argmax(axis=1)
        source = f"folder{v % 10}/video{v:04d}.mp4"
        cols = {"root": pa.array(["/archive"] * n), "source": pa.array([source] * n),
                "media_type": pa.array(["video"] * n), "frame_index": fi, "t_sec": t,
                "face_index": face.astype(np.int32), "track_id": track,
                "x": np.full(n, 100, np.int32), "y": np.full(n, 80, np.int32),
                "w": np.full(n, 90, np.int32), "h": np.full(n, 90, np.int32),
                "det_score": np.full(n, 0.9, np.float32)}
        cols.update({f"p_{c}": p[:, j] for j, c in enumerate(CLASSES)})
        cols.update(emotion=pa.array(np.asarray(CLASSES)[top]),
                    confidence=p[np.arange(n), top], model_id=pa.array(["m"] * n),
                    run_id=pa.array(["r"] * n))
        table = pa.table(cols)
        fw = fw or pq.ParquetWriter(faces_path, table.schema)
        fw.write_table(table)
        m = max(n_frames, int(fi.max()) + 1) + 10  # a few faceless frames at the end
        frames = pa.table({"root": pa.array(["/archive"] * m), "source": pa.array([source] * m),
                           "frame_index": np.arange(m), "t_sec": np.arange(m) / FPS,
                           "n_faces": np.zeros(m, np.int32)})
        frw = frw or pq.ParquetWriter(frames_path, frames.schema)
        frw.write_table(frames)
    fw.close()
    frw.close()
    return faces_path, frames_path


def child(faces: str, frames: str, out: str, batch_rows: int) -> None:
    from batchemo.analysis.timeline_stream import timeline_from_parquet

    t0 = time.perf_counter()
    timeline_from_parquet(faces, frames, out_path=out, batch_rows=batch_rows)
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    rows = pq.ParquetFile(out).metadata.num_rows
    print(json.dumps({"seconds": secs, "peak_rss_mib": rss, "timeline_rows": rows}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--batch-rows", type=int, default=32_768)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.batch_rows)
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        faces, frames = generate(Path(tmp), args.rows, args.videos)
        gen = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--batch-rows", str(args.batch_rows),
               "--child", str(faces), str(frames), str(Path(tmp) / "timeline.parquet")]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"face rows           {args.rows:,} in {args.videos} videos (generated in {gen:.1f} s)")
    print(f"timeline rows       {res['timeline_rows']:,}")
    print(f"timeline seconds    {res['seconds']:.2f}  ({args.rows / res['seconds']:,.0f} rows/s)")
    print(f"timeline peak RSS   {res['peak_rss_mib']:.0f} MiB (child process)")
    print(f"process tree peak   {parent + kids:.0f} MiB (parent {parent:.0f} + child {kids:.0f})")


if __name__ == "__main__":
    main()
