"""Outputs that recover from what happens to them: a class-set change, a lost or damaged part, CSV
and Parquet outputs side by side, CSV cells that never start a formula (issue 14's adversarial
run, items 1, 2, 15, 19)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from helpers import faces_at, ledger_rows, read_output, run_cfg

from batchemo import run
from batchemo.output.tables import OutputPaths


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


@pytest.mark.slow  # several runs
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


@pytest.mark.slow  # several runs
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
