"""Job-level failures exit 2 with a message, never a traceback: full or read-only disks, bad job
files and values, a missing input root, a report into a missing folder (issue 14 items 6-8;
issue 28); text from the data drawn literally in plots and the report (issue 14 item 4)."""

from __future__ import annotations

import contextlib
import subprocess

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import faces_at, read_output, run_cfg

from batchemo import run
from batchemo.cli import main
from batchemo.errors import ConfigError, OutputError
from batchemo.output.ledger import Ledger
from batchemo.records import FileRow

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
