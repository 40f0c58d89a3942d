"""Sequential decode-only throughput of iter_frames on one real clip.

    python bench/bench_decode.py [VIDEO] [--runs N]

Prints, per sampling rate, the median over N runs (default 3) of video frames decoded per
second (grab-only frames included) and of frames delivered per second. fps=5 shows what
grab()-skipping saves: every frame is still decoded, only the samples are converted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from batchemo.media.decode import iter_frames
from batchemo.records import VIDEO, MediaInfo, MediaItem

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT = SHARED / "media/videos/closeup_changing_expression.mp4"


def one_run(path: Path, fps: float) -> tuple[float, int]:
    item = MediaItem(str(path), path.name, path, VIDEO)
    info = MediaInfo()
    start = time.perf_counter()
    for _frame in iter_frames(item, fps, info):
        pass
    return time.perf_counter() - start, info.frames_sampled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"no such video: {args.video} (needs ../shared/media)")
    print(f"{args.video.name}, median of {args.runs} runs, {os.cpu_count()} CPUs")
    total = 0
    for fps in (0.0, 5.0):
        runs = [one_run(args.video, fps) for _ in range(args.runs)]
        seconds = statistics.median(r[0] for r in runs)
        sampled = runs[0][1]
        total = total or sampled  # fps=0 delivers every frame
        print(
            f"fps={fps:g}: {seconds:.3f} s, {total / seconds:7.1f} video frames/s, "
            f"{sampled / seconds:7.1f} delivered frames/s ({sampled} of {total})"
        )


if __name__ == "__main__":
    main()
