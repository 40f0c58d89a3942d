"""End-to-end `batchemo run` on a long looped face video: speed, overhead and process-tree memory.

    python bench/bench_run.py [--quick] [--runs N] [--workers 0 1 2] [--model PATH] [--profile W]
                               [--no-bf16]

Builds (once, cached under ~/.cache/batchemo-bench) a 10-min and a 2.5-min copy of
../shared/media/videos/closeup_changing_expression.mp4 looped WITHOUT re-encoding, then measures
on the long one, in this order:

  decode-only   iter_frames at --fps (every frame decoded, samples converted), in this process
  detector-only the same sampled frames through the detector: time inside detect() only, and
                the serial decode+detect+crop total (what one worker does)
  pipeline      `python -m batchemo run --input DIR --out TMP --fps F --workers W --quiet` as a
                subprocess per run (startup, TF import and model load included), for each W, on
                the long and the short video; runs are interleaved across W so background load
                drifts hit every setting alike

and prints medians over --runs, ratios against the baselines measured in the same invocation,
the fixed vs per-frame cost (from the short/long pair), peak RSS of the whole process tree
(/proc polled every 50 ms: sum of VmRSS of batchemo and all its descendants, an upper bound as
shared library pages count once per process; the summed PSS, polled every 0.5 s; and the
kernel's ru_maxrss, the largest single process: a lower bound), whether the peak grows with
video length, and a pass/fail line per requirement. --quick: 2.5-min vs 37.5-s videos, 1 run each.
--profile W: one more run with --workers W under cProfile on the ~150-s video, top entries
(W=0 profiles everything; W>=1 only the main process).
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CLIP,
    cpu_line,
    looped_video,
    median,
    mib,
    resolve_model,
    run_measured,
    video_seconds,
)

from batchemo.choices import PRECISIONS  # noqa: E402

SUMMARY = re.compile(r"(\d+) frames, (\d+) faces, (\d+) errors, ([\d.]+) s")
GB = 1.5 * 1000**3  # the requirement's 1.5 GB, decimal; also shown in MiB


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def decode_only(video: Path, fps: float) -> tuple[float, int, float]:
    """(wall s, sampled frames, CPU s) of iter_frames at `fps`: the floor a run cannot beat."""
    from batchemo.media.decode import iter_frames
    from batchemo.records import VIDEO, MediaInfo, MediaItem

    info = MediaInfo()
    t, c = time.perf_counter(), _cpu()
    for _ in iter_frames(MediaItem(str(video), video.name, video, VIDEO), fps, info):
        pass
    return time.perf_counter() - t, info.frames_sampled, _cpu() - c


def detector_only(video: Path, fps: float, detector: str, size: int = 48) -> dict:
    """Decode the sampled frames; time detect() and the crops separately from the decode."""
    import numpy as np

    from batchemo.media.crop import CROP_MARGIN, CROP_MARGINS, face_crop
    from batchemo.media.decode import iter_frames
    from batchemo.media.detect import get_detector
    from batchemo.records import VIDEO, MediaInfo, MediaItem

    det = get_detector(detector)
    margin = CROP_MARGINS.get(detector, CROP_MARGIN)
    info = MediaInfo()
    t_det = t_crop = 0.0
    faces = 0
    warm = False
    t0 = time.perf_counter()
    for frame in iter_frames(MediaItem(str(video), video.name, video, VIDEO), fps, info):
        if not warm:  # first call allocates; not part of the per-frame cost
            det.detect(frame.image)
            warm = True
        t = time.perf_counter()
        boxes = det.detect(frame.image)
        t1 = time.perf_counter()
        if boxes:
            np.stack([face_crop(frame.image, b, size, margin) for b in boxes])
        t_det += t1 - t
        t_crop += time.perf_counter() - t1
        faces += len(boxes)
    return {"total": time.perf_counter() - t0, "detect": t_det, "crop": t_crop,
            "frames": info.frames_sampled, "faces": faces}


def pipeline_cmd(folder: Path, out: Path, args, workers: int, model: Path) -> list[str]:
    cmd = [sys.executable, "-m", "batchemo", "run", "--input", str(folder), "--out", str(out),
           "--fps", f"{args.fps:g}", "--workers", str(workers), "--detector", args.detector,
           "--model", str(model), "--quiet"]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.precision:
        cmd += ["--precision", args.precision]
    return cmd


def pipeline_once(video: Path, args, workers: int, model: Path, tree: Path = ROOT) -> dict:
    """One `batchemo run` of the code in `tree` (this checkout, or --baseline's)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory(prefix="batchemo-bench-") as tmp:
        cmd = pipeline_cmd(video.parent, Path(tmp) / "results.parquet", args, workers, model)
        r = run_measured(cmd, cwd=tree, interval=args.interval, env=env)
    m = SUMMARY.search(r["stderr"])
    if r["rc"] != 0 or not m:
        sys.exit(f"batchemo run failed (exit {r['rc']}):\n{' '.join(cmd)}\n{r['stderr'][-3000:]}")
    r.update(frames=int(m[1]), faces=int(m[2]), errors=int(m[3]), internal=float(m[4]))
    # Growth inside one run: the peak over 25-50% of its time vs over 75-95% (still processing
    # frames), and over the last 5% (the file's commit and the output tables' rebuild).
    r["q2_peak"] = r["poller"].window_peak(0.25, 0.5)
    r["q4_peak"] = r["poller"].window_peak(0.75, 0.95)
    r["end_peak"] = r["poller"].window_peak(0.95, 1.0)
    del r["poller"], r["stderr"]
    return r


def profile_once(video: Path, args, workers: int, model: Path, top: int) -> None:
    with tempfile.TemporaryDirectory(prefix="batchemo-bench-") as tmp:
        prof = Path(tmp) / "run.prof"
        cmd = pipeline_cmd(video.parent, Path(tmp) / "results.parquet", args, workers, model)
        cmd[1:1] = ["-m", "cProfile", "-o", str(prof)]
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit(f"profiled run failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        st = pstats.Stats(str(prof))
    scope = "the whole run (decode, detect, crop, inference)" if workers == 0 else \
        "the MAIN process only (inference, batching, IPC, writing); workers are not profiled"
    print(f"\ncProfile, --workers {workers}, {video.name}: {wall:.1f} s wall (profiling slows "
          f"Python-heavy code), {scope}")
    everything = sorted(st.stats.items(), key=lambda kv: -kv[1][2])
    ours = sorted(((k, v) for k, v in st.stats.items() if "/batchemo/" in k[0]),
                  key=lambda kv: -kv[1][3])
    for rows, label in ((everything, "own time (all functions)"),
                        (ours, "cumulative time (batchemo's own functions)")):
        print(f"  top {top} by {label}:\n    {'own s':>7} {'cum s':>7} {'calls':>8}  function")
        for (file, line, fn), (_cc, nc, tt, ct, _callers) in rows[:top]:
            where = f"{_short(file)}:{line}({fn})" if line else fn
            print(f"    {tt:7.2f} {ct:7.2f} {nc:8d}  {where}")


def _short(file: str) -> str:
    for marker in ("site-packages/", "/batchemo/", "/lib/python"):
        if marker in file:
            return file.split(marker, 1)[1] if marker != "/batchemo/" else \
                "batchemo/" + file.split(marker, 1)[1]
    return file


def fmt_mib(b: float) -> str:
    return f"{mib(b):6.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--quick", action="store_true", help="2.5-min vs 37.5-s video, 1 run")
    ap.add_argument("--runs", type=int, help="repeats of every measurement (default 3; quick 1)")
    ap.add_argument("--seconds", type=float, help="long video length (default 600; quick 150)")
    ap.add_argument("--workers", type=int, nargs="+",
                    help="--workers settings compared (default -1 0 2; quick -1: the default)")
    ap.add_argument("--clip", type=Path, default=CLIP,
                    help=f"the clip to loop (default {CLIP}: ../shared/media)")
    ap.add_argument("--baseline", type=Path, metavar="TREE",
                    help="also time the code in this checkout (e.g. a worktree of the previous "
                         "release), interleaved run by run with this one")
    ap.add_argument("--model", help="model artifact (default: the shipped one, else random)")
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--detector", default="blazeface-full")
    ap.add_argument("--batch-size", type=int, help="passed to batchemo run (default: its own)")
    ap.add_argument("--precision", choices=PRECISIONS,
                    help="passed to batchemo run (default: its own, auto)")
    ap.add_argument("--no-bf16", action="store_true",
                    help="as on a CPU without native bf16: BATCHEMO_NO_BF16=1, oneDNN (TensorFlow's "
                         "kernels) held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2); --precision auto then "
                         "resolves to int8 (float32 for a model without an int8 copy)")
    ap.add_argument("--interval", type=float, default=0.05, help="RSS poll interval, seconds")
    ap.add_argument("--skip-short", action="store_true", help="long video only (no growth check)")
    ap.add_argument("--profile", type=int, metavar="W", help="also profile one run, --workers W")
    ap.add_argument("--top", type=int, default=10, help="profile entries to print")
    args = ap.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    args.workers = args.workers or ([-1] if args.quick else [-1, 0, 2])
    if not args.clip.is_file():
        sys.exit(f"no such clip: {args.clip}. The bench loops the shared close-up clip "
                 "(../shared/media/videos/closeup_changing_expression.mp4, 640x360 H.264); "
                 "give another with --clip PATH")
    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    if args.no_bf16:  # inherited by the `batchemo run` subprocesses
        os.environ.update(BATCHEMO_NO_BF16="1", ONEDNN_MAX_CPU_ISA="AVX2")
    long_s = args.seconds or (150.0 if args.quick else 600.0)
    short_s = long_s / 4

    import cv2

    load0 = os.getloadavg()
    print(f"bench_run: {os.cpu_count()} CPUs, load average {load0[0]:.2f} {load0[1]:.2f} "
          f"{load0[2]:.2f} at start, OpenCV {cv2.__version__}, python {sys.version.split()[0]}"
          + (", --no-bf16: auto = int8 (or float32), oneDNN held to AVX2 (LiteRT and OpenCV "
             "keep their own kernels)" if args.no_bf16 else ""))
    if load0[0] > 0.5:
        print("WARNING: the machine is busy (1-min load > 0.5): these are not idle-machine figures")
    model, model_line = resolve_model(args.model)
    print(cpu_line())
    print(model_line)
    long_v, how = looped_video(long_s, args.clip)
    lengths = [(long_s, long_v)]
    if not args.skip_short:
        lengths.append((short_s, looped_video(short_s, args.clip)[0]))
    dur = {s: video_seconds(v) for s, v in lengths}
    print(f"videos: {CLIP.name} looped by {how}: "
          + ", ".join(f"{v.name} ({dur[s]:.1f} s)" for s, v in lengths)
          + f"\nsampling {args.fps:g} fps, detector {args.detector}, median of {runs} run(s)")

    # Baselines on the long video, in this process.
    dec = [decode_only(long_v, args.fps) for _ in range(runs)]
    dec_s, frames, dec_cpu = median(d[0] for d in dec), dec[0][1], median(d[2] for d in dec)
    det = [detector_only(long_v, args.fps, args.detector) for _ in range(runs)]
    det_ms = 1000 * median(d["detect"] / d["frames"] for d in det)
    crop_ms = 1000 * median(d["crop"] / d["frames"] for d in det)
    serial_s = median(d["total"] for d in det)
    print(f"\nbaselines on {long_v.name} ({frames} sampled frames, {det[0]['faces']} faces):")
    print(f"  decode-only            {dec_s:7.2f} s  {1000 * dec_s / frames:6.2f} ms/sampled frame"
          f"  {dur[long_s] / dec_s:6.1f}x real time  {dec_cpu:.2f} CPU s")
    print(f"  detector-only          {det_ms * frames / 1000:7.2f} s  {det_ms:6.2f} ms/frame "
          f"(inside detect(), 1 LiteRT thread)   crop {crop_ms:.2f} ms/frame")
    print(f"  decode+detect+crop     {serial_s:7.2f} s  {1000 * serial_s / frames:6.2f} ms/frame  "
          f"(serially, one process: one worker's work)")

    # Pipeline runs, interleaved across worker counts (and trees, with --baseline).
    res: dict[tuple, list[dict]] = {}
    for r in range(runs):
        for s, v in lengths:
            for w in args.workers:
                for tag, tree in trees:
                    one = pipeline_once(v, args, w, model, tree)
                    res.setdefault((s, w) if tag == "this" else (s, w, tag), []).append(one)
                    parts = "+".join(f"{mib(b):.0f}" for b in one["peak_parts"])
                    print(f"  run {r + 1}/{runs} {v.name} --workers {w} ({tag} tree): "
                          f"{one['wall']:.1f} s, {one['cpu']:.1f} CPU s, tree peak "
                          f"{mib(one['tree_peak']):.0f} MiB ({parts})", flush=True)

    def med(s, w, key, tag="this"):
        return median(x[key] for x in res[(s, w) if tag == "this" else (s, w, tag)])

    # Issue 30's figures: whole run (start-up included) against the decode-only pass above.
    print(f"\nissue 30 figures on {long_v.name} ({dur[long_s]:.0f} s, {args.fps:g} fps), median "
          f"of {runs}; bars: >= 30x real time (goal 45x), run/decode <= 2.2 (goal 1.5), faces "
          ">= 99 % of the previous code's")
    print(f"  {'tree':>8} {'workers':>7} {'wall s':>7} {'x real':>7} {'run/decode':>10} "
          f"{'CPU s':>7} {'CPU/decode CPU':>14} {'faces':>6}")
    for w in args.workers:
        for tag, _ in trees:
            wall, cpu = med(long_s, w, "wall", tag), med(long_s, w, "cpu", tag)
            faces = res[(long_s, w) if tag == "this" else (long_s, w, tag)][0]["faces"]
            print(f"  {tag:>8} {w:7d} {wall:7.2f} {dur[long_s] / wall:6.1f}x {wall / dec_s:10.2f} "
                  f"{cpu:7.1f} {cpu / dec_cpu:14.2f} {faces:6d}")
        if args.baseline:
            ratio = {k: med(long_s, w, k) / med(long_s, w, k, "baseline") for k in ("wall", "cpu")}
            f0 = res[(long_s, w, "baseline")][0]["faces"]
            print(f"  {'':>8} {w:7d} this/baseline: wall {ratio['wall']:.2f}, CPU "
                  f"{ratio['cpu']:.2f}, faces {res[(long_s, w)][0]['faces'] / max(f0, 1):.1%}")

    print(f"\npipeline on {long_v.name} ({dur[long_s]:.0f} s of video), median of {runs}; wall "
          "time includes startup, TF import and model load")
    print("  (MiB: RSS = summed RSS of the process tree, polled; PSS = summed PSS, polled every "
          f"{10 * args.interval:g} s; 1-proc = kernel ru_maxrss, the largest single process)")
    print(f"  {'workers':>7} {'wall s':>7} {'x real':>7} {'ms/frame':>8} {'/detect':>7} "
          f"{'/decode':>7} {'internal s':>10} {'RSS peak':>8} {'PSS peak':>8} {'1-proc':>6} "
          f"{'procs':>5} {'faces':>6}")
    for w in args.workers:
        wall = med(long_s, w, "wall")
        fr = res[(long_s, w)][0]["frames"]
        print(f"  {w:7d} {wall:7.2f} {dur[long_s] / wall:6.1f}x {1000 * wall / fr:8.2f} "
              f"{1000 * wall / fr / det_ms:6.2f}x {wall / dec_s:6.2f}x "
              f"{med(long_s, w, 'internal'):10.2f} {fmt_mib(med(long_s, w, 'tree_peak')):>8} "
              f"{fmt_mib(med(long_s, w, 'tree_pss_peak')):>8} "
              f"{fmt_mib(med(long_s, w, 'maxrss_single')):>6} {res[(long_s, w)][0]['procs']:5d} "
              f"{res[(long_s, w)][0]['faces']:6d}")
    if res[(long_s, args.workers[0])][0]["frames"] != frames:
        print(f"  NOTE: the pipeline sampled {res[(long_s, args.workers[0])][0]['frames']} "
              f"frames, the baselines {frames}")
    best = min(args.workers, key=lambda w: med(long_s, w, "wall"))
    auto = max(1, (os.cpu_count() or 2) - 1)
    print(f"  fastest: --workers {best} ({med(long_s, best, 'wall'):.2f} s); the default "
          f"(--workers -1) means {auto} on this machine")

    marginal = {}  # workers -> seconds per frame, start-up excluded
    if not args.skip_short:
        print(f"\ncost split from the {dur[short_s]:.1f} s and {dur[long_s]:.0f} s videos "
              "(wall = fixed + frames x marginal):")
        print(f"  {'workers':>7} {'fixed s':>8} {'marginal ms/frame':>17} {'/detect':>7}")
        for w in args.workers:
            f_l, f_s = res[(long_s, w)][0]["frames"], res[(short_s, w)][0]["frames"]
            slope = (med(long_s, w, "wall") - med(short_s, w, "wall")) / (f_l - f_s)
            fixed = med(long_s, w, "wall") - slope * f_l
            marginal[w] = slope
            print(f"  {w:7d} {fixed:8.2f} {1000 * slope:17.2f} {1000 * slope / det_ms:6.2f}x")
        print("\npeak RSS vs video length (process tree, MiB; median of runs):")
        short_h, long_h = f"{dur[short_s]:.0f} s video", f"{dur[long_s]:.0f} s video"
        print(f"  {'workers':>7} {short_h:>12} {long_h:>12} "
              f"{'change':>7} {'PSS change':>10}   inside the long run, peak RSS over 25-50% "
              "-> 75-95% of its time; last 5% (commit, rebuild)")
        for w in args.workers:
            a, b = med(short_s, w, "tree_peak"), med(long_s, w, "tree_peak")
            pa, pb = med(short_s, w, "tree_pss_peak"), med(long_s, w, "tree_pss_peak")
            q2, q4 = med(long_s, w, "q2_peak"), med(long_s, w, "q4_peak")
            end = med(long_s, w, "end_peak")
            print(f"  {w:7d} {mib(a):12.0f} {mib(b):12.0f} {mib(b - a):+7.0f} {mib(pb - pa):+10.0f}"
                  f"   {mib(q2):.0f} -> {mib(q4):.0f} ({mib(q4 - q2):+.0f}); {mib(end):.0f}")

    # Requirements (the issue's), judged on the medians above.
    note = "; --quick: indicative only" if args.quick else ""
    print(f"\nrequirements ({dur[long_s]:.0f} s video{note}):")
    for w in args.workers:
        wall = med(long_s, w, "wall")
        fr = res[(long_s, w)][0]["frames"]
        peak = med(long_s, w, "tree_peak")
        ok_speed = dur[long_s] / wall >= 20
        ok_mem = peak <= GB
        # Per-frame overhead: the marginal cost when both videos ran (start-up is paid once per
        # run, not per frame); else the whole run's wall time per frame.
        per_frame = 1000 * marginal.get(w, wall / fr)
        ok_over = per_frame <= 1.5 * det_ms
        how = "marginal, start-up excluded" if w in marginal else "start-up included"
        line = (f"  --workers {w}: >=20x real time {'PASS' if ok_speed else 'FAIL'} "
                f"({dur[long_s] / wall:.1f}x)   peak RSS <=1.5 GB {'PASS' if ok_mem else 'FAIL'} "
                f"({peak / 1e9:.2f} GB)   ms/frame <=1.5x detector {'PASS' if ok_over else 'FAIL'} "
                f"({per_frame / det_ms:.2f}x {how}; {1000 * wall / fr / det_ms:.2f}x with it)")
        if not args.skip_short:
            grow = med(long_s, w, "tree_peak") - med(short_s, w, "tree_peak")
            line += (f"   peak growth <50 MiB {'PASS' if grow < 50 * 2**20 else 'FAIL'} "
                     f"({mib(grow):+.0f} MiB)")
        print(line)
    load1 = os.getloadavg()
    print(f"load average {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at end (the bench itself "
          "adds up to ~2)")

    if args.profile is not None:  # on the video nearest 150 s: per-frame costs, not start-up
        video = min(lengths, key=lambda sv: abs(sv[0] - 150))[1]
        profile_once(video, args, args.profile, model, args.top)


if __name__ == "__main__":
    main()
