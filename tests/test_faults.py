"""Fault injection: real `batchemo run` processes killed at several points, then resumed."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_image, write_video
from helpers import assert_same_outputs, read_output

from batchemo.output.tables import OutputPaths

pytestmark = pytest.mark.slow
N_FILES = 6


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Read-only input shared by the module's tests (each run writes its own output)."""
    root = tmp_path_factory.mktemp("faults") / "in"
    for i in range(4):
        write_image(root / f"img{i}.png", size=(160, 240),
                    faces=[(30, 30, 64), (140, 40, 64)][: i % 2 + 1])
    for name in ("clip_a.mp4", "clip_b.mp4"):
        write_video(root / name, seconds=3, fps=10, size=(160, 240),
                    faces_fn=lambda i, t: [(20 + 3 * i, 40, 64)])
    return root


def cmd(root, out, model, *extra):
    # int8: each run starts without TensorFlow, and takes the same path on every CPU
    return [sys.executable, "-m", "batchemo", "run", "-i", str(root), "-o", str(out), "--model",
            str(model), "--precision", "int8", "--workers", "1", "--quiet", *extra]


def committed(out) -> int:
    db = OutputPaths.from_out(out).state / "ledger.sqlite"
    try:
        return sqlite3.connect(db).execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.Error:
        return 0


def assert_same(out, ref):
    assert_same_outputs(out, ref, ("faces", "frames"))
    files = read_output(out, "files").sort_values(["root", "source"])
    assert files.status.tolist() == read_output(ref, "files").sort_values(["root", "source"])\
        .status.tolist()


def landed(kill_when: str, out, at_kill: int) -> bool:
    """Whether a SIGKILL found the run where the test meant to kill it."""
    if kill_when == "startup":
        return at_kill == 0
    if kill_when == "before_final_write":  # all committed, the last table not yet written
        return at_kill == N_FILES and not OutputPaths.from_out(out).table("summary").exists()
    return {"after_first_file": 1, "between_files": 3}[kill_when] <= at_kill < N_FILES


@pytest.fixture(scope="module")
def reference(archive, random_int8_model, tmp_path_factory):
    ref = tmp_path_factory.mktemp("reference") / "ref.parquet"
    subprocess.run(cmd(archive, ref, random_int8_model), check=True, timeout=300)
    return ref


@pytest.mark.parametrize("kill_when", ["startup", "after_first_file", "between_files",
                                       "before_final_write"])
def test_sigkill_then_rerun_gives_every_row_exactly_once(archive, random_int8_model, reference,
                                                         tmp_path, kill_when):
    out = tmp_path / "out.parquet"
    proc = subprocess.Popen(cmd(archive, out, random_int8_model))
    target = {"startup": None, "after_first_file": 1, "between_files": 3,
              "before_final_write": 6}[kill_when]
    deadline = time.time() + 300
    if target is None:
        time.sleep(0.5)
    else:
        while committed(out) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # still running: the kill, not the run, ended it
    at_kill = committed(out)
    assert landed(kill_when, out, at_kill), f"killed with {at_kill} files committed"
    if out.exists():  # whatever was there is complete (atomic rename), never half-written
        pq.read_table(out)
    rerun = subprocess.run(cmd(archive, out, random_int8_model), timeout=300)
    assert rerun.returncode == 0
    assert_same(out, reference)
    assert not list(out.parent.glob(".*.tmp"))


def test_sigterm_keeps_finished_files_and_exits_2(archive, random_int8_model, reference, tmp_path):
    out = tmp_path / "out.parquet"
    proc = subprocess.Popen(cmd(archive, out, random_int8_model))
    while committed(out) < 2 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 2
    done = pq.read_table(OutputPaths.from_out(out).table("files")).num_rows
    assert done >= 2
    assert subprocess.run(cmd(archive, out, random_int8_model), timeout=300).returncode == 0
    assert_same(out, reference)


def test_concurrent_runs_one_waits_and_finds_the_work_done(archive, random_int8_model, reference,
                                                           tmp_path):
    out = tmp_path / "out.parquet"
    # Started together: whichever locks first holds the lock for seconds (model load, 6 files),
    # the other tries within milliseconds and must exit 3 at once.
    a = subprocess.Popen(cmd(archive, out, random_int8_model), stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(cmd(archive, out, random_int8_model), stderr=subprocess.PIPE, text=True)
    while committed(out) < 1 and a.poll() is None and b.poll() is None:
        time.sleep(0.005)
    waited = subprocess.run(cmd(archive, out, random_int8_model, "--wait", "300"),
                            capture_output=True, text=True, timeout=320)
    codes = sorted([a.wait(timeout=300), b.wait(timeout=300)])
    errors = a.stderr.read() + b.stderr.read()
    assert codes == [0, 3] and "another batchemo run" in errors
    assert waited.returncode == 0 and "0 files processed (6 unchanged" in waited.stderr
    assert_same(out, reference)


def _workers_of(pid: int) -> list[int]:
    """The worker processes (spawned children, not the resource tracker) of process `pid`."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                found.append(int(child))
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_worker_fails_its_file_and_the_run_goes_on(tmp_path, random_int8_model):
    # Issue 28 item 5: `kill -9 <worker pid>` (what the OOM killer does) ended the run with
    # "RuntimeError: a worker process died unexpectedly", exit 1 and no tables.
    root = tmp_path / "in"
    for i in range(6):
        write_video(root / f"clip{i}.mp4", seconds=4, fps=10, size=(160, 240),
                    faces_fn=lambda i, t: [(20 + 3 * i, 40, 64)])
    out = tmp_path / "out.parquet"
    proc = subprocess.Popen(cmd(root, out, random_int8_model, "--fps", "10"), stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while committed(out) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    victims = _workers_of(proc.pid)
    assert proc.poll() is None and len(victims) == 1, "the run ended before the kill"
    os.kill(victims[0], signal.SIGKILL)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 1, err
    files = read_output(out, "files")
    assert len(files) == 6 and set(files.status) == {"ok", "error"}
    died = files[files.status == "error"]
    assert len(died) == 1 and "worker process analysing it died" in died.error.iloc[0]
    faces = read_output(out)
    assert set(faces.source) == set(files[files.status == "ok"].source)  # finished files kept
    # A failed file is retried when asked (a file that kills workers is not retried unasked)
    rerun = subprocess.run(cmd(root, out, random_int8_model, "--fps", "10", "--retry-errors"),
                           timeout=300)
    assert rerun.returncode == 0 and set(read_output(out, "files").status) == {"ok"}
