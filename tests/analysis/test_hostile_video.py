"""Issue 28 item 1: videos whose timestamps jump (1e12 s, 1e6 s) or start late (1e9 s), made by
tests/hostile.py, through run, rerun, timeline, report and annotate; and a derived table that
fails for one video, which must not fail the run nor block the next ones."""

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import read_output
from hostile import ffmpeg_jump_mkv, jump_mkv, late_start_mkv

from batchemo import RunConfig, run
from batchemo.analysis.annotate import safe_name
from batchemo.cli import main

DERIVED = ("timeline", "segments", "summary")


def grab_times(path):
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    times = []
    while cap.grab():
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    cap.release()
    return np.array(times)


def test_hostile_files_carry_the_timestamps_asked_for(tmp_path):
    t = grab_times(jump_mkv(tmp_path, 1e12))
    assert len(t) == 72
    np.testing.assert_allclose(t[:50], np.arange(50) / 25, atol=1e-3)
    np.testing.assert_allclose(t[50:] - 1e12, np.arange(50, 72) / 25, atol=1e-3)
    late = late_start_mkv(tmp_path, 1e9)
    assert len(grab_times(late)) == 72
    cap = cv2.VideoCapture(str(late), cv2.CAP_FFMPEG)
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) > 1e10  # the container's length counts from 0


@pytest.mark.parametrize("jump", [1e12, 1e6])
def test_read_frames_finds_frames_after_a_jump_by_the_runs_numbering(tmp_path, jump):
    # Issue 28 item 1: report and annotate seek by time to a frame far ahead; after a jump the
    # seek lands nowhere near, and the frames after it were "not decodable".
    from batchemo.analysis.annotate import read_frames

    video = jump_mkv(tmp_path, jump)
    times = grab_times(video)
    want = [10, 49, 50, 60, 71]
    straight = dict(read_frames(video, "video", want))
    by_time = dict(read_frames(video, "video", want, {i: times[i] for i in want}))
    assert sorted(straight) == sorted(by_time) == want
    assert all(np.array_equal(straight[i], by_time[i]) for i in want)


def jump_file(kind, folder, jump):
    if kind == "ffmpeg":
        path = ffmpeg_jump_mkv(folder, jump)
        if path is None:
            pytest.skip("the ffmpeg CLI is not installed (apt-get install ffmpeg)")
        return path
    return jump_mkv(folder, jump)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mkv", "ffmpeg"])
@pytest.mark.parametrize("jump", [1e12, 1e6])
def test_a_timestamp_jump_costs_what_the_faces_cost(tmp_path, kind, jump):
    # Issue 28 item 1: the 1e12 jump was a 7.28 TiB allocation (traceback, and every later
    # run failed too); the 1e6 jump wrote 1,000,006 timeline rows; report showed the crops
    # after the jump as "frame not decodable" and annotate --every 1 only frames before it.
    video = jump_file(kind, tmp_path / "in", jump)
    out = tmp_path / "out.parquet"
    cfg = RunConfig(input=[str(tmp_path / "in")], out=out, quiet=True,
                    workers=0, fps=5)
    assert run(cfg).exit_code == 0
    faces = read_output(out)
    assert len(faces) >= 12 and (faces["t_sec"] > jump).sum() >= 4
    for table in DERIVED:
        assert len(read_output(out, table)) <= 2 * (len(faces) + 1), table
    tl = read_output(out, "timeline")
    assert tl["n_faces"].sum() == len(faces) and tl["bin_end"].max() > jump
    again = run(cfg)  # the next run works (a no-op here)
    assert again.exit_code == 0 and again.files_unchanged == 1

    cli = CliRunner()
    r = cli.invoke(main, ["timeline", str(out), "-o", str(tmp_path / "tl.csv")])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "tl.csv")) == len(tl)
    r = cli.invoke(main, ["report", str(out), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    crops = re.findall(r'<img alt="face" src="data:image/jpeg', page)
    assert len(crops) >= 6 and "not decodable" not in page
    r = cli.invoke(main, ["annotate", str(out), "-o", str(tmp_path / "ann"), "--every", "1"])
    assert r.exit_code == 0, r.output
    shots = sorted((tmp_path / "ann" / safe_name(video.name, str(tmp_path / "in"))).glob("*.jpg"))
    index = [int(p.name[1:7]) for p in shots]
    # One frame per second of the run's time: 0, 1 s before the jump; 2 s is the jump itself.
    want = read_output(out, "frames").sort_values("t_sec")
    want = want.groupby(np.floor(want["t_sec"] + 1e-9))["frame_index"].first().tolist()
    assert index == sorted(want) and max(index) >= 50


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_the_1e12_jump_runs_in_bounded_memory(tmp_path):
    # Issue 28 item 1: peak RSS under 600 MB for the whole run, derived tables included (the
    # shipped model's int8 copy, which runs without TensorFlow, whose import alone is ~700 MB:
    # named, because `auto` picks TensorFlow's bfloat16 on a CPU that has it natively).
    jump_mkv(tmp_path / "in", 1e12)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a big
    # pytest process (TensorFlow imported by other tests) would report the parent's size
    code = ("import atexit, re, sys; atexit.register(lambda: print('maxrss_kb', re.search("
            "r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), 'heavy', "
            "sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'ray'}), "
            "file=sys.stderr)); from batchemo.cli import main; main()")
    args = [sys.executable, "-c", code, "run", "-i", str(tmp_path / "in"), "-o",
            str(tmp_path / "o.parquet"), "--quiet", "--workers", "0", "--precision", "int8",
            "--plots", str(tmp_path / "plots")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rss_mb = int(re.search(r"maxrss_kb (\d+)", done.stderr).group(1)) / 1024
    assert rss_mb < 600, (rss_mb, re.search(r"heavy .*", done.stderr).group(0))
    assert len(list((tmp_path / "plots").glob("timeline_*.png"))) == 1


@pytest.mark.slow
def test_a_late_start_has_one_gap_row(tmp_path):
    late_start_mkv(tmp_path / "in", 1e9, frames=30)
    out = tmp_path / "out.parquet"
    assert run(RunConfig(input=[str(tmp_path / "in")], out=out,
                         quiet=True, workers=0, fps=5)).exit_code == 0
    faces, tl = read_output(out), read_output(out, "timeline")
    assert len(faces) >= 4 and len(tl) <= 2 * (len(faces) + 1)
    # Whatever the decoder reports as the start, the rows cover it with at most one gap.
    assert (tl["n_faces"] == 0).sum() <= 1


def failing_segments(monkeypatch, bad_source):
    """segments() raising for one video, as a bug or a limit would (the other helper's code)."""
    import batchemo.analysis.segments as seg_module

    real = seg_module.segments

    def segments(tl, *args, **kwargs):
        if (tl["source"] == bad_source).any():
            raise RuntimeError("segments broke on this video")
        return real(tl, *args, **kwargs)

    monkeypatch.setattr(seg_module, "segments", segments)


@pytest.mark.slow
@pytest.mark.parametrize("out_name", ["out.parquet", "outdir/"])
def test_a_video_whose_derived_rows_fail_is_left_out_not_the_run(tmp_path, make_video,
                                                                 monkeypatch, caplog, out_name):
    # Issue 28 item 1: a derived-table failure raised out of the run (traceback, exit 1) and,
    # as recovery rebuilds derived tables first, blocked every later run, even with --force.
    for name in ("bad.mp4", "good.mp4"):
        make_video(f"in/{name}", seconds=1, fps=10, size=(160, 200),
                   faces_fn=lambda i, t: [(20, 40, 64)])
    failing_segments(monkeypatch, "bad.mp4")
    out = tmp_path / out_name
    cfg = RunConfig(input=[str(tmp_path / "in")], out=out, quiet=True,
                    workers=0, fps=5)
    with caplog.at_level(logging.WARNING, logger="batchemo"):
        assert run(cfg).exit_code == 0
    assert "bad.mp4: left out of the timeline and segments: RuntimeError" in caplog.text
    assert set(read_output(out)["source"]) == {"bad.mp4", "good.mp4"}  # rows all kept
    for table in ("timeline", "segments"):
        assert set(read_output(out, table)["source"]) == {"good.mp4"}, table
    assert run(cfg).exit_code == 0
    assert run(dataclasses.replace(cfg, force=True)).exit_code == 0


def test_a_summary_that_fails_is_written_empty_with_a_warning(tmp_path, make_video,
                                                              monkeypatch, caplog):
    import batchemo.analysis.summarize as summarize_module

    def broken(*args, **kwargs):
        raise ValueError("summary broke")

    make_video("in/v.mp4", seconds=1, fps=10, size=(160, 200), faces_fn=lambda i, t: [(20, 40, 64)])
    monkeypatch.setattr(summarize_module, "summarize", broken)
    out = tmp_path / "out.parquet"
    with caplog.at_level(logging.WARNING, logger="batchemo"):
        assert run(RunConfig(input=[str(tmp_path / "in")], out=out,
                             quiet=True, workers=0)).exit_code == 0
    assert "summary table written empty: ValueError: summary broke" in caplog.text
    assert len(read_output(out, "summary")) == 0 and len(read_output(out, "timeline")) > 0


@pytest.mark.slow
def test_report_names_the_run_that_wrote_the_rows(tmp_path, make_video):
    # Issue 29: the report's "last run" was the no-op rerun, not the run that wrote the rows.
    make_video("in/v.mp4", seconds=1, fps=10, size=(160, 200), faces_fn=lambda i, t: [(20, 40, 64)])
    out = tmp_path / "out.parquet"
    cfg = RunConfig(input=[str(tmp_path / "in")], out=out, quiet=True,
                    workers=0, fps=5)
    first, second = run(cfg), run(cfg)
    assert first.files_new == 1 and second.files_unchanged == 1
    runs = read_output(out, "runs").sort_values("started")
    wrote, noop = runs["run_id"].tolist()
    r = CliRunner().invoke(main, ["report", str(out), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    head = re.search(r'<table class="facts">(.*?)</table>', page, re.S).group(1)
    facts = dict(re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", head))
    assert facts["rows written by"].startswith(f"{wrote}, ") and "(2 runs in all)" in \
        facts["rows written by"]
    assert facts["last run"].startswith(f"{noop}, ") and facts["last run"].endswith(
        ": 0 files processed")
    settings = json.loads(runs["settings"].iat[0])
    assert f"fps {settings['fps']}" in facts["settings"]


def test_annotate_video_prints_no_opencv_tag_warning(tmp_path, capfd):
    # Issue 29: `annotate --video` printed "OpenCV: FFMPEG: tag 0x30385056/'VP80' is not
    # supported with codec id 139" for every video, to the terminal (fd 2).
    from batchemo.analysis.annotate import _open_writer

    writer, tmp, final = _open_writer(Path(tmp_path / "clip"), 10.0, (64, 48))
    for _ in range(5):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert final.suffix == ".webm" and tmp.stat().st_size > 0
    assert len(grab_times(tmp)) == 5
    err = capfd.readouterr().err
    assert "not supported with codec" not in err and "VP80" not in err
