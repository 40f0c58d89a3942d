"""Regressions of issue 14 (adversarial run, a new user's first hour): one test per item or more."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import needs_shared
from facedraw import draw_face
from helpers import faces_at, read_output, run_cfg

from batchemo import run
from batchemo.cli import main
from batchemo.errors import ConfigError, OutputError
from batchemo.output.ledger import Ledger
from batchemo.output.tables import OutputPaths
from batchemo.records import FileRow


def ledger_rows(out):
    ledger = Ledger(OutputPaths.from_out(out).state)
    try:
        return ledger.files()
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def three_class_model(tmp_path_factory):
    """A valid artifact with another class set than the 7-class random_model."""
    from batchemo._util.tf import import_keras
    from batchemo.model import build, save_artifact

    import_keras().utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("tiny3") / "tiny3.keras"
    save_artifact(build("default", 3), path, {"arch": "default",
                                               "classes": ["happy", "neutral", "sad"]})
    return path


# -- 1. a class-set change never breaks an output ---------------------------------------------


def test_item1_class_set_change_drops_rows_of_other_classes_and_output_recovers(
        tmp_path, make_image, random_model, three_class_model):
    for name in ("a", "b"):
        make_image(f"in1/{name}.png", size=(160, 200), faces=faces_at(1))
    make_image("in2/c.png", size=(160, 200), faces=faces_at(1))
    out = tmp_path / "res.parquet"
    roots = [tmp_path / "in1", tmp_path / "in2"]
    assert run(run_cfg(roots, out, random_model)).exit_code == 0
    (tmp_path / "in1/b.png").unlink()  # absent: its 7-class rows can never be redone
    # only in1 with the 3-class model: in2's c.png keeps 7-class rows, as after a kill -9
    forced = run(run_cfg(roots[:1], out, three_class_model, force=True))
    assert forced.exit_code == 0
    faces = read_output(out)
    assert [c for c in faces if c.startswith("p_")] == ["p_happy", "p_neutral", "p_sad"]
    assert sorted(faces.source) == ["a.png"]  # no row of another class set is mixed in
    files = read_output(out, "files").set_index("source")
    assert "another model" in files.loc["b.png", "error"]
    assert "another model" in files.loc["c.png", "error"]
    again = run(run_cfg(roots, out, three_class_model))  # recoverable by a plain run
    assert again.exit_code == 0 and again.files_changed == 1  # c.png redone with 3 classes
    assert sorted(read_output(out).source) == ["a.png", "c.png"]
    pruned = run(run_cfg(roots, out, three_class_model, prune_deleted=True))
    assert pruned.exit_code == 0 and sorted(read_output(out, "files").source) == ["a.png", "c.png"]


# -- 2. a missing or unreadable part sends its file back --------------------------------------


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_item2_missing_or_truncated_part_reprocesses_its_file(tmp_path, make_image, make_video,
                                                              random_model, caplog, damage):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    make_image("in/b.png", size=(160, 200), faces=faces_at(2))
    make_video("in/v.mp4", seconds=1, fps=10, size=(160, 200), faces_fn=lambda i, t: faces_at(1))
    out = tmp_path / "res.parquet"
    cfg = run_cfg([tmp_path / "in"], out, random_model)
    run(cfg)
    before = read_output(out).sort_values(["source", "frame_index", "face_index"])
    rows = ledger_rows(out)
    parts = OutputPaths.from_out(out).state / "parts"
    victims = [parts / "faces" / f"{rows[(str(tmp_path / 'in'), 'b.png')].part}.parquet",
               parts / "frames" / f"{rows[(str(tmp_path / 'in'), 'v.mp4')].part}.parquet"]
    for f in victims:
        if damage == "delete":
            f.unlink()
        else:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="batchemo"):
        again = run(cfg)
    assert again.exit_code == 0 and again.files_changed == 2 and again.files_unchanged == 1
    assert "processed again" in caplog.text
    after = read_output(out).sort_values(["source", "frame_index", "face_index"])
    assert after.groupby("source").size().to_dict() == before.groupby("source").size().to_dict()
    files = read_output(out, "files").set_index("source")
    assert files.loc["b.png", "status"] == "ok" and files.loc["b.png", "faces"] == 2
    assert len(read_output(out, "frames")) == 5
    assert run(cfg).files_unchanged == 3  # and nothing keeps being redone


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


# -- 6. job-level failures exit 2 with a message, never a traceback ---------------------------


def test_item6_ledger_disk_full_is_an_output_error(tmp_path):
    ledger = Ledger(tmp_path / "state")
    try:
        # SQLite's own limit raises the very error a full disk gives: "database or disk is full"
        ledger.db.execute("PRAGMA max_page_count = 4")
        with pytest.raises(OutputError, match="full"):
            for i in range(2000):
                ledger.commit_file(FileRow("r", f"{i:06d}-" + "x" * 200, "image", "ok"))
    finally:
        ledger.close()


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MiB tmpfs (root only; skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def cli_run(inputs, out, model, *extra):
    args = ["run", "-o", str(out), "--model", str(model), "--workers", "0", "--quiet", *extra]
    for p in inputs:
        args += ["-i", str(p)]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("trouble", ["read-only", "disk full"])
def test_item6_read_only_or_full_filesystem_exits_2(tmp_path, small_fs, make_image,
                                                    random_model, trouble):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    out = small_fs / "res.parquet"
    assert cli_run([tmp_path / "in"], out, random_model).exit_code == 0
    make_image("in/b.png", size=(160, 200), faces=faces_at(1))
    if trouble == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    else:
        with open(small_fs / "filler", "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
    r = cli_run([tmp_path / "in"], out, random_model)
    assert r.exit_code == 2 and "batchemo: error:" in r.output, (r.output, r.exception)
    assert pq.read_table(out).num_rows == 1  # the old output is intact


@pytest.mark.parametrize("line, key", [('batch_size = "64"', "batch_size"),
                                       ('input = "in"', "input"),
                                       ('fps = "fast"', "fps"), ("fps = nan", "fps"),
                                       ("wait = inf", "wait"), ("quiet = 1", "quiet")])
def test_item6_item7_job_file_values_of_the_wrong_type_exit_2_naming_the_key(tmp_path, line,
                                                                            key):
    (tmp_path / "in").mkdir()
    job = tmp_path / "job.toml"
    job.write_text(("" if key == "input" else 'input = ["in"]\n') + line + "\n"
                   + 'out = "res.parquet"\n')
    r = CliRunner().invoke(main, ["run", "--job", str(job)])
    assert r.exit_code == 2 and key in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "res.batchemo").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_item7_non_finite_fps_exits_2_and_leaves_nothing(tmp_path, make_image, value):
    make_image("in/a.png")
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o",
                                  str(tmp_path / "res.parquet"), "--fps", value])
    assert r.exit_code == 2 and "--fps" in r.output and "finite" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_item7_api_values_are_validated_too(tmp_path, make_image, random_model):
    make_image("in/a.png")
    with pytest.raises(ConfigError, match="--fps"):
        run(run_cfg([tmp_path / "in"], tmp_path / "r.parquet", random_model, fps="fast"))
    with pytest.raises(ConfigError, match="--batch-size"):
        run(run_cfg([tmp_path / "in"], tmp_path / "r.parquet", random_model, batch_size=1.5))


def test_item7_a_run_that_cannot_start_leaves_no_state_folder(tmp_path, make_image):
    make_image("in/a.png")
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o",
                                  str(tmp_path / "res.parquet"), "--model",
                                  str(tmp_path / "missing.keras")])
    assert r.exit_code == 2 and "not found" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_item6_summary_and_report_on_a_corrupt_table_exit_2(tmp_path, make_image, random_model):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    out = tmp_path / "res.parquet"
    assert cli_run([tmp_path / "in"], out, random_model).exit_code == 0
    out.write_bytes(out.read_bytes()[:100])
    for args in (["summary", str(out)], ["report", str(out), "-o", str(tmp_path / "r.html")],
                 ["timeline", str(out)]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "cannot read" in r.output, (args, r.output, r.exception)


# -- 8. a missing input root is a usage error -------------------------------------------------


def test_item8_missing_input_root_exits_2_naming_it_and_writes_nothing(tmp_path, make_image,
                                                                      random_model):
    make_image("media/a.png")
    r = cli_run([tmp_path / "media", tmp_path / "meida"], tmp_path / "res.parquet",
                random_model)
    assert r.exit_code == 2 and "meida" in r.output and "no such" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["media"]


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


# -- 12. a truncated file that is still used says so in `error` -------------------------------


def test_item12_truncated_jpeg_and_video_are_used_with_a_warning_in_error(
        tmp_path, make_truncated_jpeg, make_video, random_model):
    make_truncated_jpeg("in/cut.jpg", keep=0.6)
    avi = make_video("in/cut.avi", 3.0, 10, size=(160, 200), codec="MJPG",
                     faces_fn=lambda i, t: faces_at(1))
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    make_video("in/whole.avi", 1.0, 10, size=(160, 200), codec="MJPG")
    out = tmp_path / "res.parquet"
    assert run(run_cfg([tmp_path / "in"], out, random_model)).exit_code == 0
    files = read_output(out, "files").set_index("source")
    for name in ("cut.jpg", "cut.avi"):
        assert files.loc[name, "status"] in ("ok", "no_face")
        assert "truncated" in files.loc[name, "error"], name
    assert "of 3.0 s" in files.loc["cut.avi", "error"]
    assert pd.isna(files.loc["whole.avi", "error"])


@needs_shared
def test_item12_truncated_real_mp4_is_used_with_a_warning(tmp_path, copy_shared, random_model):
    p = copy_shared("videos/closeup_changing_expression.mp4", "in/cut.mp4")  # index up front
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    out = tmp_path / "res.parquet"
    run(run_cfg([tmp_path / "in"], out, random_model, fps=1))
    (row,) = read_output(out, "files").to_dict("records")
    assert row["status"] in ("ok", "no_face") and "truncated" in row["error"]


# -- 11. a run's own outputs inside an input root are not inputs ------------------------------


@pytest.mark.parametrize("out_name", ["res.parquet", "res.csv", "res/"])
def test_item11_outputs_state_and_plots_inside_the_root_are_not_scanned(
        tmp_path, make_image, make_video, random_model, out_name):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    make_video("in/v.mp4", seconds=1, fps=10, size=(160, 200), faces_fn=lambda i, t: faces_at(1))
    out = f"{tmp_path / 'in' / out_name}"
    cfg = run_cfg([tmp_path / "in"], out, random_model, plots=tmp_path / "in" / "plots")
    run(cfg)
    again = run(cfg)
    assert (again.files_unchanged, again.files_skipped, again.files_new) == (2, 0, 0)
    files = OutputPaths.from_out(out).table("files")
    if out_name.endswith(".csv"):
        sources = pd.read_csv(files).source
    else:
        sources = pq.read_table(files).to_pandas().source
    assert sorted(sources) == ["a.png", "v.mp4"]


# -- 15. CSV cells never start a spreadsheet formula ------------------------------------------


def test_item15_csv_neutralises_formula_prefixes_parquet_keeps_names(tmp_path, make_image,
                                                                      random_model):
    import csv

    evil = '=HYPERLINK("evil.example","click").png'
    make_image(f"in/{evil}", size=(160, 200), faces=faces_at(1))
    make_image("in/@home.png", size=(160, 200))
    make_image("in/plain.png", size=(160, 200))
    run(run_cfg([tmp_path / "in"], tmp_path / "r.csv", random_model))
    for table in ("r.csv", "r.files.csv", "r.summary.csv"):
        with open(tmp_path / table, newline="") as fh:
            cells = [c for row in csv.reader(fh) for c in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "@")], table
        assert any(c.startswith("'=HYPERLINK") for c in cells), table
    files = pd.read_csv(tmp_path / "r.files.csv")
    assert sorted(files.source) == sorted(["'" + evil, "'@home.png", "plain.png"])
    run(run_cfg([tmp_path / "in"], tmp_path / "r.parquet", random_model))
    assert evil in set(read_output(tmp_path / "r.parquet", "files").source)


# -- 4. text from the data is drawn literally ---------------------------------------------------


def test_item4_dollar_signs_in_names_draw_literally_in_plots_and_report(tmp_path, make_video,
                                                                        random_model):
    name = "price $5 or $x_{$ (bad math).mp4"
    make_video(f"in/{name}", seconds=2, fps=10, size=(160, 200),
               faces_fn=lambda i, t: faces_at(1))
    out = tmp_path / "res.parquet"
    r = cli_run([tmp_path / "in"], out, random_model, "--plots", str(tmp_path / "plots"))
    assert r.exit_code == 0, (r.output, r.exception)
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("timeline_*.png"))
    assert len(pngs) == 1 and "price" in pngs[0]
    assert len(read_output(out, "runs")) == 1
    r = CliRunner().invoke(main, ["report", str(out), "-o", str(tmp_path / "report.html")])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "price $5 or $x_{$ (bad math).mp4" in (tmp_path / "report.html").read_text()


def test_item4_literal_keeps_the_text_matplotlib_shows():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from batchemo.analysis.plots import literal

    fig = Figure()
    FigureCanvasAgg(fig)
    text = fig.suptitle(literal("a $x_{$ b"))
    fig.canvas.draw()  # raised ValueError (mathtext) before
    assert text._preprocess_math(text.get_text()) == ("a $x_{$ b", False)


# -- 5. names that are not UTF-8 stay distinct ------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes")
def test_item5_non_utf8_names_stay_distinct_and_are_not_reprocessed(tmp_path, make_image,
                                                                    random_model):
    raw = os.fsencode(tmp_path / "in")
    os.makedirs(raw)
    for byte, n in ((b"\xff", 1), (b"\xfe", 2)):
        p = make_image(f"{n}.png", size=(160, 240), faces=faces_at(n))
        os.rename(p, os.path.join(raw, byte + b".png"))
    out = tmp_path / "res.parquet"
    cfg = run_cfg([tmp_path / "in"], out, random_model)
    assert run(cfg).exit_code == 0
    faces = read_output(out)
    assert faces.groupby("source").size().to_dict() == {"\\xfe.png": 2, "\\xff.png": 1}
    again = run(cfg)
    assert again.files_unchanged == 2 and again.files_new + again.files_changed == 0
    assert len(read_output(out)) == 3


# -- 14. symlinks: each real file once --------------------------------------------------------


def test_item14_file_symlinks_are_followed_once_by_real_path(tmp_path, make_image, random_model):
    make_image("in/real/r.png", size=(160, 200), faces=faces_at(1))
    make_image("outside/o.png", size=(160, 200), faces=faces_at(2))
    root = tmp_path / "in"
    os.symlink(root / "real" / "r.png", root / "a_link.png")  # into the root
    os.symlink(tmp_path / "outside" / "o.png", root / "b_out.png")  # out of the root
    os.symlink(tmp_path / "outside" / "o.png", root / "c_out_again.png")  # same file again
    out = tmp_path / "res.parquet"
    assert run(run_cfg([root], out, random_model)).exit_code == 0
    assert read_output(out).groupby("source").size().to_dict() == {"b_out.png": 2, "real/r.png": 1}
    files = read_output(out, "files").set_index("source")
    assert files.loc["a_link.png", "status"] == "skipped"
    assert "real/r.png" in files.loc["a_link.png", "error"]
    assert files.loc["c_out_again.png", "status"] == "skipped"
    assert "b_out.png" in files.loc["c_out_again.png", "error"]


# -- 13. --log-json: only JSON on stderr, failed files as events, a complete closing record ----


@pytest.mark.slow
def test_item13_log_json_wraps_native_lines_and_logs_failures(tmp_path, make_video,
                                                             make_text_as_jpg, random_model):
    avi = make_video("in/cut.avi", 3.0, 10, size=(160, 200), codec="MJPG")
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])  # FFmpeg: "[mjpeg @ …] …"
    make_text_as_jpg("in/notes.jpg")
    (tmp_path / "in" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    r = subprocess.run(cmd(tmp_path / "in", tmp_path / "r.parquet", random_model,
                           "--log-json"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert any(rec.get("logger") == "native" for rec in records)  # FFmpeg's own line, wrapped
    assert any(rec["logger"] == "batchemo.media.decode" and "truncated" in rec["message"]
               for rec in records)  # the worker process logs JSON itself
    failed = {rec["source"] for rec in records if rec.get("event") == "file_failed"}
    assert failed == {"notes.jpg", "cut.png"}
    last = records[-1]
    assert last["event"] == "run_finished" and last["files_failed"] == 2
    assert last["level"] == "WARNING" and last["time"][:4].isdigit()


# -- 19. smaller: the frames bar has a total; CSV and Parquet outputs keep separate states -----


def test_item19_frames_total_is_estimated_from_the_headers(tmp_path, make_image, make_video):
    from batchemo.engines.local import frames_total as _frames_total
    from batchemo.media.scan import scan

    make_image("in/a.png")
    make_video("in/v.mp4", seconds=2, fps=10)
    make_video("in/w.avi", seconds=3, fps=25, codec="MJPG")
    todo = [(item, "") for item in scan([tmp_path / "in"])]
    assert _frames_total(todo, 5.0) == 1 + 10 + 15
    assert _frames_total(todo, 0.0) == 1 + 20 + 75
    assert _frames_total(todo, 5.0, limit=2) is None


def test_item19_csv_and_parquet_outputs_in_one_folder_keep_separate_states(
        tmp_path, make_image, random_model):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    pq_cfg = run_cfg([tmp_path / "in"], tmp_path / "results.parquet", random_model)
    csv_cfg = run_cfg([tmp_path / "in"], tmp_path / "results.csv", random_model)
    assert run(pq_cfg).files_new == 1
    assert run(csv_cfg).files_new == 1  # its own state: the CSV tables get written
    assert len(pd.read_csv(tmp_path / "results.csv")) == 1
    assert run(pq_cfg).files_unchanged == 1 and run(csv_cfg).files_unchanged == 1
    assert OutputPaths.from_out(tmp_path / "results.csv").state.name == "results.csv.batchemo"


def test_item19_a_csv_output_keeps_its_old_state_folder(tmp_path, make_image, random_model):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    cfg = run_cfg([tmp_path / "in"], tmp_path / "results.csv", random_model)
    run(cfg)
    (tmp_path / "results.csv.batchemo").rename(tmp_path / "results.batchemo")  # as before
    assert run(cfg).files_unchanged == 1
    assert not (tmp_path / "results.batchemo").exists()


# -- 10. more formats: probed by content, decoded -----------------------------------------------

VIDEO_FORMATS = {".flv": "FLV1", ".wmv": "WMV2", ".asf": "WMV1", ".3gp": "mp4v",
                 ".ts": "MPG2", ".m2ts": "mp4v", ".mts": "MPG2", ".ogv": "VP80"}


def _still(path, fmt):
    """A photo with a face written by Pillow (HEIF through pillow-heif)."""
    from PIL import Image

    if fmt == "HEIF":
        pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif writes HEIF")
        pillow_heif.register_heif_opener()
    bgr = np.full((200, 240, 3), 90, np.uint8)
    draw_face(bgr, 60, 40, 96)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(bgr[:, :, ::-1].copy()).save(path, format=fmt)
    return path


@pytest.fixture
def every_format(tmp_path, make_video):
    for ext, fourcc in VIDEO_FORMATS.items():
        make_video(f"in/clip{ext}", seconds=1, fps=10, size=(200, 240), codec=fourcc,
                   faces_fn=lambda i, t: [(60, 40, 96)])
    for ext, fmt in ((".gif", "GIF"), (".heic", "HEIF"), (".avif", "AVIF")):
        _still(tmp_path / f"in/photo{ext}", fmt)
    _still(tmp_path / "in/iphone_renamed.jpg", "HEIF")  # a HEIC that says .jpg
    flv = (tmp_path / "in/clip.flv").read_bytes()
    (tmp_path / "in/flash_video.dat").write_bytes(flv)  # an extension that names no media
    (tmp_path / "in/song.ogg").write_bytes(b"OggS\0\2" + bytes(22) + b"\x01vorbis" + bytes(400))
    (tmp_path / "in/notes.txt").write_text("Get free stuff\n" + "G" * 600)  # looks like no media
    return tmp_path / "in"


@pytest.mark.parametrize("name", [f"clip{e}" for e in VIDEO_FORMATS]
                         + ["photo.gif", "photo.heic", "photo.avif", "iphone_renamed.jpg",
                            "flash_video.dat"])
def test_item10_format_is_recognised_and_decoded(every_format, name):
    from batchemo.media.decode import iter_frames
    from batchemo.media.scan import scan
    from batchemo.records import MediaInfo

    (item,) = scan([every_format / name])
    video = name.startswith("clip") or name.endswith(".dat")
    assert item.media_type == ("video" if video else "image") and not item.error
    info = MediaInfo()
    frames = list(iter_frames(item, 0, info))
    assert len(frames) == (10 if video else 1)
    assert frames[0].image.shape == (200, 240, 3)
    face = frames[-1].image[40 + 48, 60 + 48].astype(int)  # the skin colour, BGR
    assert np.abs(face - [140, 170, 215]).max() < 40, face


def test_item10_every_format_gives_face_rows_and_non_media_is_skipped(every_format, tmp_path,
                                                                      random_model):
    out = tmp_path / "res.parquet"
    assert run(run_cfg([every_format], out, random_model, fps=5)).exit_code == 0
    files = read_output(out, "files").set_index("source")
    assert files.loc["song.ogg", "status"] == "skipped"
    assert files.loc["notes.txt", "status"] == "skipped"
    media = files.drop(index=["song.ogg", "notes.txt"])
    assert (media.status == "ok").all(), media[media.status != "ok"][["status", "error"]]
    assert (media.faces >= 1).all()


# -- 18. a rerun with nothing to do plans first and never loads the model ---------------------

NOOP = """
import json, sys, time
t = time.time()
import batchemo
r = batchemo.run(batchemo.RunConfig(input=[sys.argv[1]], out=sys.argv[2], model=sys.argv[3],
                                    quiet=True, fps=float(sys.argv[4])))
print(json.dumps({"seconds": time.time() - t, "tf": "tensorflow" in sys.modules,
                  "unchanged": r.files_unchanged, "code": r.exit_code}))
"""


def _noop_rerun(root, out, model, fps=5.0):
    r = subprocess.run([sys.executable, "-c", NOOP, str(root), str(out), str(model or ""),
                        str(fps)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


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
def test_item18_noop_rerun_of_the_shared_media_takes_under_3_seconds(tmp_path, shared_media):
    out = tmp_path / "res.parquet"
    first = _noop_rerun(shared_media, out, None, fps=1.0)
    # The shipped model runs on TensorFlow, or (auto without native bf16) on its int8 copy
    # without importing it: either way the first run classifies every face.
    assert first["code"] == 0 and first["unchanged"] == 0
    again = _noop_rerun(shared_media, out, None, fps=1.0)
    assert again["tf"] is False and again["unchanged"] >= 10 and again["code"] == 0
    assert again["seconds"] <= 3.0


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


# -- issue 28, minor: report -o into a missing folder fails at once --------------------------


def test_issue28_report_into_a_missing_folder_exits_2_before_any_work(tmp_path, monkeypatch):
    # `report -o missing_dir/x.html` worked 27 s, then exited 2: the path is checked first.
    from batchemo.analysis import commands

    called = []
    monkeypatch.setattr(commands, "make_report", lambda cfg: called.append(cfg))
    results = tmp_path / "res.parquet"
    results.write_bytes(b"")
    r = CliRunner().invoke(main, ["report", str(results), "-o", str(tmp_path / "missing" /
                                                                    "x.html")])
    assert r.exit_code == 2 and "no such folder" in r.output and not called
    r = CliRunner().invoke(main, ["report", str(results), "-o", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.output and not called
