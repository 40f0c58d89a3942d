"""Shared helpers for bench_run.py and bench_infer.py: cache dir, looped test videos, the model,
process-tree RSS polling.

Nothing here is imported by the package. Generated files live under the bench cache
($XDG_CACHE_HOME or ~/.cache)/batchemo-bench, never in the work tree.

    python bench/common.py --make-model PATH   (used by bench_run.py to keep TF out of its process)
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLIP = SHARED / "media" / "videos" / "closeup_changing_expression.mp4"  # 19.7 s, 640x360 H.264


def cpu_line() -> str:
    """The CPU's model name and the flags that pick kernels here (AVX2, AVX-512, bf16)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass

    def has(*names: str) -> str:
        return "yes" if any(n in flags for n in names) else "no"

    return (f"CPU: {model}, {os.cpu_count()} logical CPUs; AVX2 {has('avx2')}, AVX-512 "
            f"{has('avx512f')}, bf16 {has('avx512_bf16', 'amx_bf16')}")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    d = base / "batchemo-bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def median(xs) -> float:
    return statistics.median(list(xs))


# ---------------------------------------------------------------------------------------------
# Looped videos (stream copy: the same H.264 packets, so decode speed is the clip's own)


def looped_video(seconds: float, clip: Path = CLIP) -> tuple[Path, str]:
    """A `seconds`-long copy of `clip` looped without re-encoding, alone in its own folder (the
    folder is what `batchemo run --input` gets). Returns (path, how it was made); cached."""
    if not clip.is_file():
        raise SystemExit(f"no such clip: {clip} (the benchmarks need ../shared/media)")
    st = clip.stat()
    tag = f"{clip.stem}-{seconds:g}s-{st.st_size}"
    folder = cache_dir() / tag
    out = folder / f"{clip.stem}_loop_{seconds:g}s{clip.suffix}"
    how_file = folder / "made-with.txt"
    if out.is_file() and how_file.is_file():
        return out, how_file.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{os.getpid()}{clip.suffix}"
    if shutil.which("ffmpeg"):
        loops = math.ceil(seconds / _duration(clip))  # extra passes; -t cuts to length
        cmd = ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(clip),
               "-t", f"{seconds:g}", "-c", "copy", "-map", "0", str(tmp)]
        subprocess.run(cmd, check=True)
        how = "ffmpeg -stream_loop -c copy"
    else:
        _remux_loop_pyav(clip, tmp, seconds)
        how = "PyAV remux (no ffmpeg binary)"
    os.replace(tmp, out)
    how_file.write_text(how + "\n")
    return out, how


def _duration(path: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        n, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    if not (n > 0 and fps > 0):
        raise SystemExit(f"cannot read the duration of {path}")
    return n / fps


def _remux_loop_pyav(clip: Path, out: Path, seconds: float) -> None:
    """Loop `clip`'s video stream (packets copied, not re-encoded) until `seconds`."""
    try:
        import av
    except ImportError:
        raise SystemExit("neither ffmpeg nor PyAV is available to loop the clip without "
                         "re-encoding: apt-get install ffmpeg, or pip install av") from None
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        tb = vin.time_base
        offset, end = 0, int(seconds / tb)
        while offset < end:
            src.seek(0)
            last = 0
            for pkt in src.demux(vin):
                if pkt.dts is None:  # flush packet at end of stream
                    continue
                last = max(last, pkt.pts + (pkt.duration or 0), pkt.dts + (pkt.duration or 0))
                if pkt.pts + offset >= end and pkt.is_keyframe:
                    break  # a clean cut: the next GOP would start past the end
                pkt.pts += offset
                pkt.dts += offset
                pkt.stream = vout
                dst.mux(pkt)
            offset += last


def video_seconds(path: Path) -> float:
    return _duration(path)


# ---------------------------------------------------------------------------------------------
# The model


def resolve_model(arg: str | None) -> tuple[Path, str]:
    """(model path, a line saying what it is). Without --model: the shipped default if present,
    else a random-weights default-architecture artifact in the bench cache (as tests/conftest.py's
    `random_model` makes it; inference speed does not depend on the weights)."""
    if arg:
        p = Path(arg).expanduser().resolve()
        return p.with_suffix(".keras"), f"model {p.with_suffix('.keras')} (given)"
    shipped = ROOT / "batchemo" / "models" / "fer2013-default.keras"
    if shipped.is_file() and shipped.with_suffix(".json").is_file():
        return shipped, f"model {shipped.relative_to(ROOT)} (shipped default)"
    path = cache_dir() / "random-default.keras"
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        # In a child process, so the caller does not carry TensorFlow's memory and threads.
        subprocess.run([sys.executable, __file__, "--make-model", str(path)], check=True,
                       cwd=ROOT)
    return path, (f"model {path} -- RANDOM WEIGHTS: the shipped "
                  f"{shipped.relative_to(ROOT)} does not exist yet (speed does not depend "
                  "on the weights; emotions in the output are meaningless)")


def make_random_model(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from batchemo._util.tf import import_keras
    from batchemo.model import build, save_artifact
    from batchemo.training.datasets import EMOTIONS

    import_keras().utils.set_random_seed(7)
    save_artifact(build("default", len(EMOTIONS)), path,
                  {"arch": "default", "classes": list(EMOTIONS), "tta": True})


# ---------------------------------------------------------------------------------------------
# Process-tree memory


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids.extend(int(k) for k in fh.read().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return kids


def _statm(pid: int) -> tuple[int, int, int] | None:
    # (size, resident, shared) in pages.
    try:
        with open(f"/proc/{pid}/statm") as fh:
            size, resident, shared = fh.read().split()[:3]
        return int(size), int(resident), int(shared)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None


def _pss(pid: int) -> int:
    # Proportional set size: shared pages split between the processes sharing them.
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return 0


def tree_rss(root: int) -> dict[int, int]:
    """{pid: RSS bytes} for `root` and its live descendants.

    A child whose statm equals its parent's is skipped: that is a child between fork/vfork and
    exec (multiprocessing's spawn starting a worker), still showing the parent's pages, which
    would count the parent twice for a moment."""
    out: dict[int, int] = {}
    todo: list[tuple[int, tuple | None]] = [(root, None)]
    while todo:
        pid, parent_statm = todo.pop()
        if pid in out:
            continue
        st = _statm(pid)
        if st is None:
            continue
        out[pid] = 0 if st == parent_statm else st[1] * _PAGE
        todo.extend((k, st) for k in _children(pid))
    return out


class TreeRSSPoller:
    """Samples the tree's summed RSS every `interval` s in a thread (peak, max processes,
    samples), and its summed PSS every `pss_every`-th sample (reading smaps_rollup costs more).

    Summed RSS counts pages shared between the processes (the same .so files) once per process:
    an upper bound. Summed PSS splits them, also with processes outside the tree that map the
    same files (another TensorFlow process), so it reads low on a busy machine."""

    def __init__(self, pid: int, interval: float = 0.05, pss_every: int = 10):
        self.pid, self.interval, self.pss_every = pid, interval, pss_every
        self.samples: list[tuple[float, int]] = []  # (seconds since start, bytes)
        self.peak = 0
        self.peak_parts: list[int] = []  # per-process RSS at the peak, biggest first
        self.pss_peak = 0
        self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeRSSPoller:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        i = 0
        while not self._stop.is_set():
            per_pid = tree_rss(self.pid)
            rss = sum(per_pid.values())
            if rss:
                self.samples.append((time.perf_counter() - self._t0, rss))
                if rss > self.peak:
                    self.peak = rss
                    self.peak_parts = sorted(per_pid.values(), reverse=True)
                self.max_procs = max(self.max_procs, len(per_pid))
            if i % self.pss_every == 0:
                self.pss_peak = max(self.pss_peak, sum(_pss(p) for p in per_pid))
            i += 1
            self._stop.wait(self.interval)

    def window_peak(self, start: float, end: float) -> int:
        """Highest sample between fractions `start` and `end` of the sampled time span."""
        if not self.samples:
            return 0
        t_end = self.samples[-1][0]
        xs = [b for t, b in self.samples if start * t_end <= t <= end * t_end]
        return max(xs, default=0)


def run_measured(cmd: list[str], cwd: Path = ROOT, interval: float = 0.05,
                 env: dict | None = None) -> dict:
    """Run `cmd`, polling its process tree's memory. Returns wall seconds, exit code, stderr,
    the polled tree peaks of summed RSS and summed PSS (bytes), the kernel's ru_maxrss of the
    child and its waited-for descendants (the biggest single process: a lower bound of the tree
    peak), and the poller."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    with TreeRSSPoller(proc.pid, interval) as poller:
        # Read stderr in a thread, so a chatty child never blocks on a full pipe.
        err: list[bytes] = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        reader.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    reader.join()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    return {"wall": wall, "rc": proc.returncode, "stderr": b"".join(err).decode(errors="replace"),
            "tree_peak": poller.peak, "peak_parts": poller.peak_parts,
            "tree_pss_peak": poller.pss_peak,
            "maxrss_single": usage.ru_maxrss * 1024, "procs": poller.max_procs, "poller": poller,
            # CPU seconds of the child and the descendants it waited for (workers are joined)
            "cpu": usage.ru_utime + usage.ru_stime}


def mib(b: float) -> float:
    return b / 2**20


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-model":
        make_random_model(Path(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
