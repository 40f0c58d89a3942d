"""Reading a run's output back: CSV typed as written, tables from elsewhere checked, an output with
no faces, a table folder given for its output, and `-o` never one of the output's own tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchemo import RunConfig, run
from batchemo.cli import main
from batchemo.output.read import load
from batchemo.output.tables import faces_table, files_table, read_table, write_table
from batchemo.records import Face, FaceBox, FileRow, MediaItem

CLASSES = ("angry", "happy")


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def drawn(n: int) -> list[tuple[int, int, int]]:
    return [(20 + i * 130, 40, 100) for i in range(n)]


def faces_parquet(path, t_sec=(0.0, 0.5, 1.0)):
    """A faces table as batchemo writes it: one video's three faces."""
    item = MediaItem("r", "v.mp4", path.parent / "v.mp4", "video")
    faces = [Face(i, t, 0, FaceBox(1, 2, 30, 30, 0.9), np.array([0.3, 0.7], np.float32))
             for i, t in enumerate(t_sec)]
    table = faces_table(item, faces, np.zeros(len(faces), np.int64), CLASSES, "m", "run")
    write_table(table, path)
    return table


# Issue 28 item 7: a CSV output's text came back as numbers ("01" → 1.0, "inF" → inf) and with
# the formula guard's apostrophe still on.
def test_item7_csv_reads_back_every_column_as_written(tmp_path):
    names = [("01", "=a.png"), ("inF", "-b.png"), ("NA", "'c.png"), ("x", "'=d.png"),
             ("nan", "+e.png"), ("1e3", "@f.png"), ("", "")]
    rows = [FileRow(root=r, source=s, media_type="image", status="ok", size=1, mtime=1.7e9,
                    fingerprint="00", width=1, height=1, seconds=1.0, model_id="m", run_id="r")
            for r, s in names]
    table = files_table(rows)
    write_table(table, tmp_path / "t.files.csv", "csv")
    back = read_table(tmp_path / "t.files.csv", "files")
    assert back.equals(table), back.to_pandas()[["root", "source", "error"]]


@pytest.mark.slow
def test_item7_csv_output_of_a_run_names_its_folders_and_files_as_written(tmp_path,
                                                                          make_image,
                                                                          random_model,
                                                                          monkeypatch):
    make_image("01/=x.png", size=(160, 160), faces=drawn(1))
    make_image("inF/-y.png", size=(160, 160), faces=drawn(1))
    monkeypatch.chdir(tmp_path)  # roots as the user typed them: `-i 01 -i inF`
    assert run(RunConfig(input=["01", "inF"], out=tmp_path / "r.csv", model=random_model, quiet=True,
                         workers=0)).exit_code == 0
    faces, files = load(tmp_path / "r.csv", "faces"), load(tmp_path / "r.csv", "files")
    assert sorted(files.root) == ["01", "inF"] and sorted(files.source) == ["-y.png", "=x.png"]
    assert len(faces) >= 1 and set(faces.root) <= {"01", "inF"}
    for root, source in zip(files.root, files.source, strict=True):
        assert (tmp_path / root / source).is_file()
    r = cli("summary", tmp_path / "r.csv")
    assert r.exit_code == 0 and "01" in r.output and "1.0" not in r.output, r.output


# Issue 28 item 9: a Parquet from elsewhere gave KeyError/TypeError/IndexError tracebacks (exit 1).
@pytest.mark.parametrize("spoil, word", [
    (lambda t: t.drop_columns(["source"]), "source"),
    (lambda t: t.drop_columns(["media_type"]), "media_type"),
    (lambda t: t.set_column(t.schema.get_field_index("t_sec"), "t_sec",
                            pa.array(["0", "1", "2"])), "t_sec"),
    (lambda t: t.set_column(t.schema.get_field_index("t_sec"), "t_sec",
                            pa.array([0.0, np.inf, 1.0])), "t_sec"),
    (lambda t: t.set_column(t.schema.get_field_index("t_sec"), "t_sec",
                            pa.array([0.0, -1e9, 1.0])), "t_sec"),
    (lambda t: t.drop_columns([c for c in t.column_names if c.startswith("p_")]), "p_"),
], ids=["no-source", "no-media_type", "text-t_sec", "inf-t_sec", "negative-t_sec", "no-probs"])
@pytest.mark.parametrize("command", ["summary", "timeline", "report"])
def test_item9_a_table_from_elsewhere_is_exit_2_naming_the_column(tmp_path, spoil, word,
                                                                  command):
    good = faces_parquet(tmp_path / "good.parquet")
    pq.write_table(spoil(good), tmp_path / "r.parquet")
    extra = ["-o", tmp_path / "page.html"] if command == "report" else []
    r = cli(command, tmp_path / "r.parquet", *extra)
    assert r.exit_code == 2 and word in r.output and "r.parquet" in r.output, \
        (r.exit_code, r.output, r.exception)


def test_item9_a_table_from_elsewhere_with_the_right_columns_reads(tmp_path):
    faces_parquet(tmp_path / "r.parquet")
    r = cli("summary", tmp_path / "r.parquet")
    assert r.exit_code == 0 and "3" in r.output, r.output


# Issue 28 item 9: a directory output of photos with no faces said "…/faces: not found" (exit 2).
@pytest.mark.slow
def test_item9_a_directory_output_without_faces_reads_as_no_faces(tmp_path, make_image,
                                                                  random_model):
    make_image("in/a.png", size=(120, 160))
    make_image("in/b.png", size=(120, 160))
    assert run(RunConfig(input=[str(tmp_path / "in")], out=tmp_path / "out", model=random_model,
                         quiet=True, workers=0)).exit_code == 0
    assert load(tmp_path / "out", "faces").empty
    r = cli("summary", tmp_path / "out")
    assert r.exit_code == 0 and "not found" not in r.output, r.output
    r = cli("report", tmp_path / "out", "-o", tmp_path / "page.html")
    assert r.exit_code == 0 and (tmp_path / "page.html").is_file(), r.output
    r = cli("timeline", tmp_path / "out", "-o", tmp_path / "tl.parquet")
    assert r.exit_code == 0 and (tmp_path / "tl.parquet").is_file(), r.output


# Issue 29 friction: `summary out/faces/` (one table of a directory output) said
# "out/faces/faces: not found"; a companion file `r.files.parquet` likewise.
def test_issue29_a_table_of_an_output_asks_for_the_output(tmp_path):
    (tmp_path / "out" / "_batchemo").mkdir(parents=True)
    faces_parquet(tmp_path / "out" / "faces" / "part-1.parquet")
    r = cli("summary", f"{tmp_path / 'out' / 'faces'}/")
    assert r.exit_code == 2 and "pass the output" in r.output and "faces/faces" not in r.output
    faces_parquet(tmp_path / "r.parquet")
    write_table(files_table([]), tmp_path / "r.files.parquet")
    r = cli("summary", tmp_path / "r.files.parquet")
    assert r.exit_code == 2 and "pass the output" in r.output and "r.parquet" in r.output


# Issue 28, minor: `summary r.parquet -o r.parquet` replaced the faces table, exit 0.
@pytest.mark.parametrize("command, target", [
    ("summary", "r.parquet"), ("summary", "r.files.parquet"), ("timeline", "r.parquet"),
    ("report", "r.frames.parquet"), ("summary", "r.batchemo/x.parquet")])
def test_minor_o_is_never_one_of_the_outputs_tables(tmp_path, command, target):
    faces_parquet(tmp_path / "r.parquet")
    before = (tmp_path / "r.parquet").read_bytes()
    r = cli(command, tmp_path / "r.parquet", "-o", tmp_path / target)
    assert r.exit_code == 2 and "-o" in r.output and "write elsewhere" in r.output, r.output
    assert (tmp_path / "r.parquet").read_bytes() == before


def test_minor_o_inside_a_directory_outputs_table_folder_is_refused(tmp_path):
    (tmp_path / "out" / "_batchemo").mkdir(parents=True)
    faces_parquet(tmp_path / "out" / "faces" / "part-1.parquet")
    r = cli("summary", tmp_path / "out", "-o", tmp_path / "out" / "faces" / "s.parquet")
    assert r.exit_code == 2 and "faces table" in r.output
    assert [p.name for p in (tmp_path / "out" / "faces").iterdir()] == ["part-1.parquet"]
    r = cli("timeline", tmp_path / "out",
            "-o", tmp_path / "tl.parquet")
    assert r.exit_code == 0, r.output
