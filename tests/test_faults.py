"""Fault injection: real `batchemo run` processes killed at several points, then resumed."""

import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from batchemo.write import OutputPaths

pytestmark = pytest.mark.slow


@pytest.fixture
def archive(tmp_path, make_image, make_video):
    for i in range(4):
        make_image(f"in/img{i}.png", size=(160, 240), faces=[(30, 30, 64), (140, 40, 64)][: i % 2 + 1])
    for name in ("clip_a.mp4", "clip_b.mp4"):
        make_video(f"in/{name}", seconds=3, fps=10, size=(160, 240),
                   faces_fn=lambda i, t: [(20 + 3 * i, 40, 64)])
    return tmp_path / "in"


def cmd(root, out, model, *extra):
    return [sys.executable, "-m", "batchemo", "run", "-i", str(root), "-o", str(out), "--model",
            str(model), "--workers", "1", "--quiet", *extra]


def committed(out) -> int:
    db = OutputPaths.from_out(out).state / "ledger.sqlite"
    try:
        return sqlite3.connect(db).execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.Error:
        return 0


def table(out, name):
    df = pq.read_table(OutputPaths.from_out(out).table(name)).to_pandas()
    keys = [k for k in ("root", "source", "frame_index", "face_index") if k in df]
    drop = [c for c in ("run_id", "seconds", "model_id", "mtime") if c in df]
    return df.drop(columns=drop).sort_values(keys).reset_index(drop=True)


def assert_same(out, ref):
    for name in ("faces", "frames"):
        a, b = table(out, name), table(ref, name)
        p = [c for c in a if c.startswith("p_")]
        pd.testing.assert_frame_equal(a.drop(columns=p), b.drop(columns=p))
        if p:
            assert np.abs(a[p].to_numpy() - b[p].to_numpy()).max() <= 1e-6
    files = table(out, "files")
    assert files.status.tolist() == table(ref, "files").status.tolist()


@pytest.fixture
def reference(archive, random_model, tmp_path):
    ref = tmp_path / "ref.parquet"
    subprocess.run(cmd(archive, ref, random_model), check=True, timeout=300)
    return ref


@pytest.mark.parametrize("kill_when", ["startup", "after_first_file", "between_files",
                                       "before_final_write"])
def test_sigkill_then_rerun_gives_every_row_exactly_once(archive, random_model, reference,
                                                         tmp_path, kill_when):
    out = tmp_path / "out.parquet"
    proc = subprocess.Popen(cmd(archive, out, random_model))
    target = {"startup": None, "after_first_file": 1, "between_files": 3,
              "before_final_write": 6}[kill_when]
    deadline = time.time() + 300
    if target is None:
        time.sleep(0.5)
    else:
        while committed(out) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():  # whatever was there is complete (atomic rename), never half-written
        pq.read_table(out)
    rerun = subprocess.run(cmd(archive, out, random_model), timeout=300)
    assert rerun.returncode == 0
    assert_same(out, reference)
    assert not list(out.parent.glob(".*.tmp"))


def test_sigterm_keeps_finished_files_and_exits_2(archive, random_model, reference, tmp_path):
    out = tmp_path / "out.parquet"
    proc = subprocess.Popen(cmd(archive, out, random_model))
    while committed(out) < 2 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, 2)  # 0 if it had just finished anyway
    done = pq.read_table(OutputPaths.from_out(out).table("files")).num_rows
    assert done >= 2
    assert subprocess.run(cmd(archive, out, random_model), timeout=300).returncode == 0
    assert_same(out, reference)


def test_concurrent_runs_one_waits_and_finds_the_work_done(archive, random_model, reference,
                                                           tmp_path):
    out = tmp_path / "out.parquet"
    # Started together: whichever locks first holds the lock for seconds (model load, 6 files),
    # the other tries within milliseconds and must exit 3 at once.
    a = subprocess.Popen(cmd(archive, out, random_model), stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(cmd(archive, out, random_model), stderr=subprocess.PIPE, text=True)
    while committed(out) < 1 and a.poll() is None and b.poll() is None:
        time.sleep(0.005)
    waited = subprocess.run(cmd(archive, out, random_model, "--wait", "300"),
                            capture_output=True, text=True, timeout=320)
    codes = sorted([a.wait(timeout=300), b.wait(timeout=300)])
    errors = a.stderr.read() + b.stderr.read()
    assert codes == [0, 3] and "another batchemo run" in errors
    assert waited.returncode == 0 and "0 files processed (6 unchanged" in waited.stderr
    assert_same(out, reference)
