"""A run as a process: workers that outlive their parent, SIGTERM, --log-json, an unguarded script,
a no-op rerun that never loads the model (issue 14's adversarial run, items 3, 9, 13, 16, 18)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import needs_shared
from helpers import faces_at, ledger_rows, read_output, run_cfg

from batchemo import run
from batchemo.cli import main
from batchemo.output.tables import OutputPaths

# -- 3. workers exit when their parent is killed ----------------------------------------------


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


def _alive(pid: int) -> bool:
    try:  # a zombie has exited; only its parent (init here) has yet to reap it
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
# 0 s: killed while the worker is still starting up, before it could note who its parent was
# (a slow CI machine hit this); 3 s: killed while the worker is blocked on a full results queue
@pytest.mark.parametrize("kill_after", [0, 3])
def test_item3_workers_exit_soon_after_their_parent_is_killed(tmp_path, make_video,
                                                              random_model, kill_after):
    make_video("in/long.avi", seconds=20, fps=25, size=(240, 320), codec="MJPG",
               faces_fn=lambda i, t: faces_at(2))
    proc = subprocess.Popen([sys.executable, "-m", "batchemo", "run", "-i", str(tmp_path / "in"),
                             "-o", str(tmp_path / "r.parquet"), "--model", str(random_model),
                             "--workers", "1", "--fps", "0", "--quiet"])
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= 2:  # the resource tracker and the worker
            break
        time.sleep(0.1)
    assert len(workers) >= 2, "the run never started its worker"
    time.sleep(kill_after)
    proc.kill()
    proc.wait()
    gone_by = time.time() + 15  # seconds, not the minutes an orphan used to linger
    while time.time() < gone_by and any(_alive(p) for p in workers):
        time.sleep(0.2)
    left = [p for p in workers if _alive(p)]
    for p in left:  # don't leak them into the rest of the suite
        os.kill(p, signal.SIGKILL)
    assert not left, "worker processes outlived their killed parent"


# -- 9. SIGTERM: exit 2 at any time, and only committed files are counted ---------------------


def cmd(root, out, model, *extra):
    return [sys.executable, "-m", "batchemo", "run", "-i", str(root), "-o", str(out), "--model",
            str(model), "--workers", "1", "--quiet", *extra]


def _wait_for(proc, ready, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal could be sent"


def _maps(pid):
    try:
        return open(f"/proc/{pid}/maps").read()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
@pytest.mark.parametrize("when", ["imports", "model load"])
def test_item9_sigterm_during_startup_exits_2(tmp_path, make_image, random_model, when):
    make_image("in/a.png")
    out = tmp_path / "res.parquet"
    proc = subprocess.Popen(cmd(tmp_path / "in", out, random_model), stderr=subprocess.PIPE,
                            text=True)
    if when == "imports":  # OpenCV's libraries load with the pipeline, before anything else
        _wait_for(proc, lambda: "cv2" in _maps(proc.pid))
    else:  # the state folder exists: the output is locked and the model is loading
        _wait_for(proc, lambda: (OutputPaths.from_out(out).state / "ledger.sqlite").exists())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 2
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.slow
def test_item9_sigterm_mid_run_counts_only_committed_files(tmp_path, make_image, make_video,
                                                           random_model):
    for i in range(4):
        make_image(f"in/img{i}.png", size=(160, 240), faces=faces_at(1))
    for i in range(4):
        make_video(f"in/clip{i}.mp4", seconds=3, fps=10, size=(160, 240),
                   faces_fn=lambda i, t: faces_at(1))
    out = tmp_path / "res.parquet"
    proc = subprocess.Popen(cmd(tmp_path / "in", out, random_model, "--fps", "0"),
                            stderr=subprocess.PIPE, text=True)
    _wait_for(proc, lambda: len(ledger_rows(out)) >= 2 if
              (OutputPaths.from_out(out).state / "ledger.sqlite").exists() else False)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 2
    runs, files = read_output(out, "runs"), read_output(out, "files")
    committed = int((files.run_id == runs.run_id.iat[-1]).sum())
    assert 2 <= committed < 8
    assert runs.files_new.iat[-1] + runs.files_changed.iat[-1] == committed
    assert f"batchemo: {committed} files processed" in proc.stderr.read()


# -- 13. --log-json: only JSON on stderr, failed files as events, a complete closing record ----


@pytest.mark.slow
def test_item13_log_json_wraps_native_lines_and_logs_failures(tmp_path, make_video,
                                                             make_text_as_jpg,
                                                             make_truncated_jpeg, random_model):
    avi = make_video("in/cut.avi", 3.0, 10, size=(160, 200), codec="MJPG")
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])  # FFmpeg: "[mjpeg @ …] …"
    make_text_as_jpg("in/notes.jpg")
    (tmp_path / "in" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    # FFmpeg's own lines are hidden now (issue 29); libjpeg still writes to fd 2 in the worker
    make_truncated_jpeg("in/cut.jpg", keep=0.6)  # "Corrupt JPEG data: premature end of …"
    r = subprocess.run(cmd(tmp_path / "in", tmp_path / "r.parquet", random_model,
                           "--log-json"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert any(rec.get("logger") == "native" for rec in records)  # libjpeg's own line, wrapped
    assert any(rec["logger"] == "batchemo.media.decode" and "truncated" in rec["message"]
               for rec in records)  # the worker process logs JSON itself
    failed = {rec["source"] for rec in records if rec.get("event") == "file_failed"}
    assert failed == {"notes.jpg", "cut.png"}
    last = records[-1]
    assert last["event"] == "run_finished" and last["files_failed"] == 2
    assert last["level"] == "WARNING" and last["time"][:4].isdigit()


# -- 16. the README's Python example works as a script without a __main__ guard ----------------

SCRIPT = """
import batchemo
result = batchemo.run(batchemo.RunConfig(input=[{root!r}], out={out!r}, model={model!r},
                                         workers=1, quiet=True))
print("exit", result.exit_code, "faces", result.faces)
"""


@pytest.mark.slow
def test_item16_unguarded_script_with_worker_processes_runs_once(tmp_path, make_image,
                                                                 random_model):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    script = tmp_path / "analyse.py"
    script.write_text(SCRIPT.format(root=str(tmp_path / "in"), out=str(tmp_path / "r.parquet"),
                                    model=str(random_model)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["exit 0 faces 1"]  # printed once: no run in the worker


# -- 18. a rerun with nothing to do plans first and never loads the model ---------------------

NOOP = """
import json, sys
import batchemo
r = batchemo.run(batchemo.RunConfig(input=[sys.argv[1]], out=sys.argv[2], model=sys.argv[3],
                                    quiet=True, fps=float(sys.argv[4])))
print(json.dumps({"tf": "tensorflow" in sys.modules,
                  "unchanged": r.files_unchanged, "code": r.exit_code}))
"""


def _noop_rerun(root, out, model, fps=5.0):
    r = subprocess.run([sys.executable, "-c", NOOP, str(root), str(out), str(model or ""),
                        str(fps)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.slow  # runs batchemo twice as processes
def test_item18_noop_rerun_does_not_load_the_model(tmp_path, make_image, make_video,
                                                   random_model):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    make_video("in/v.mp4", seconds=1, fps=10, size=(160, 200), faces_fn=lambda i, t: faces_at(1))
    (tmp_path / "in/notes.srt").write_text("1\n")
    out = tmp_path / "res.parquet"
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o", str(out), "--model",
                                  str(random_model), "--workers", "0"])
    assert r.exit_code == 0 and "loading the model" in r.output  # said while the terminal waits
    before = {name: OutputPaths.from_out(out).table(name).stat().st_mtime_ns
              for name in ("faces", "files", "summary", "timeline")}
    noop = _noop_rerun(tmp_path / "in", out, random_model)
    assert noop == {**noop, "tf": False, "unchanged": 2, "code": 0}
    assert len(read_output(out, "runs")) == 2  # the run is recorded
    after = {name: OutputPaths.from_out(out).table(name).stat().st_mtime_ns for name in before}
    assert after == before  # nothing else to rewrite
    os.utime(tmp_path / "in/a.png", (1e9, 1e9))  # same content, new mtime: still no model
    assert _noop_rerun(tmp_path / "in", out, random_model)["tf"] is False
    assert run(run_cfg([tmp_path / "in"], out, random_model, fps=2)).files_changed == 2


@needs_shared
@pytest.mark.slow
def test_item18_noop_rerun_of_the_shared_media_loads_no_model(tmp_path, shared_media):
    # Its speed (issue 14's bar) is bench/bench_archive.py's no-op rerun, not a timed test.
    out = tmp_path / "res.parquet"
    first = _noop_rerun(shared_media, out, None, fps=1.0)
    # The shipped model runs on TensorFlow, or (auto without native bf16) on its int8 copy
    # without importing it: either way the first run classifies every face.
    assert first["code"] == 0 and first["unchanged"] == 0
    again = _noop_rerun(shared_media, out, None, fps=1.0)
    assert again["tf"] is False and again["unchanged"] >= 10 and again["code"] == 0
