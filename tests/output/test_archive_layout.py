"""Issue 16 part 2: Parquet laid out for archives of 100k files (row groups by rows, compacted
part files, no 0-row parts, UTC timestamps, no pandas metadata, the docs read d/faces/)."""

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import assert_same_rows, faces_at, read_output, run_cfg

from batchemo import run
from batchemo.cli import main
from batchemo.output import tables as T
from batchemo.output.store import Store
from batchemo.output.tables import OutputPaths, write_batches

BIG = 120  # big faces: found however the photos are scaled


def test_row_groups_are_sized_by_rows_not_by_batches(tmp_path, monkeypatch):
    schema = pa.schema([("a", pa.int64())])
    batches = [pa.record_batch([pa.array([i] * 3, pa.int64())], schema=schema) for i in range(50)]
    write_batches(schema, iter(batches), tmp_path / "one.parquet")
    assert pq.ParquetFile(tmp_path / "one.parquet").metadata.num_row_groups == 1  # was 50
    monkeypatch.setattr(T, "ROW_GROUP_ROWS", 40)
    write_batches(schema, iter(batches), tmp_path / "many.parquet")
    md = pq.ParquetFile(tmp_path / "many.parquet").metadata
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    assert sum(sizes) == 150 and all(n >= 40 for n in sizes[:-1]) and len(sizes) < 5


def test_single_file_output_has_one_row_group_utc_times_and_no_pandas_metadata(
        tmp_path, make_image, random_model):
    for i in range(3):
        make_image(f"in/{i}.png", size=(200, 320), faces=faces_at(1 + i % 2))
    make_image("in/blank.png", size=(200, 320))
    os.utime(tmp_path / "in/0.png", (1_600_000_000.25, 1_600_000_000.25))
    out = tmp_path / "r.parquet"
    run(run_cfg([tmp_path / "in"], out, random_model))
    assert pq.ParquetFile(out).metadata.num_row_groups == 1
    paths = OutputPaths.from_out(out)
    for name in T.TABLES:
        meta = pq.read_schema(paths.table(name)).metadata
        assert b"pandas" not in meta and meta[b"batchemo.schema_version"] == b"1", name
    files = pq.read_table(paths.table("files"))
    assert files.schema.field("mtime").type == pa.timestamp("us", tz="UTC")
    mtime = files.to_pandas().set_index("source").mtime
    assert mtime["0.png"] == pd.Timestamp(1_600_000_000.25, unit="s", tz="UTC")
    runs = pq.read_table(paths.table("runs"))
    for col in ("started", "finished"):
        assert runs.schema.field(col).type == pa.timestamp("us", tz="UTC")
    r = runs.to_pandas().iloc[0]
    assert r.started <= r.finished and r.started.tzinfo is not None
    csv = tmp_path / "r.csv"  # CSV says the same times as ISO text
    run(run_cfg([tmp_path / "in"], csv, random_model))
    assert pd.read_csv(tmp_path / "r.files.csv").mtime.str.startswith("20").all()


@pytest.mark.slow  # many runs
def test_directory_form_has_no_empty_parts_and_compacts(tmp_path, make_image, random_model,
                                                        monkeypatch):
    for i in range(5):
        make_image(f"in/{i}.png", size=(200, 320), faces=faces_at(1, size=BIG))
    for i in range(3):
        make_image(f"in/blank{i}.png", size=(200, 320))
    out = tmp_path / "ds"
    run(run_cfg([tmp_path / "in"], f"{out}/", random_model))
    parts = sorted((out / "faces").glob("*.parquet"))
    assert len(parts) == 5 and all(pq.ParquetFile(p).metadata.num_rows for p in parts)
    for name in T.TABLES:  # summary and segments were made from pandas: no key either
        for p in (out / name).glob("*.parquet"):
            assert b"pandas" not in pq.read_schema(p).metadata, name
    before = read_output(out)

    monkeypatch.setattr(Store, "COMPACT_AT", 3)  # a run compacts past the threshold
    make_image("in/5.png", size=(200, 320), faces=faces_at(2, size=BIG))
    r = run(run_cfg([tmp_path / "in"], f"{out}/", random_model))
    assert r.files_new == 1
    parts = sorted((out / "faces").glob("*.parquet"))
    assert len(parts) == 1 and "-c" in parts[0].name
    faces = ds.dataset(out / "faces").to_table().to_pandas()
    assert faces.groupby("source").size().to_dict() == {f"{i}.png": 1 + (i == 5) for i in range(6)}
    assert_same_rows(faces[faces.source != "5.png"], before)

    # a file in a compacted part changes: its old rows leave the part, no duplicates
    make_image("in/2.png", size=(200, 320), faces=faces_at(2, size=BIG))
    os.utime(tmp_path / "in/2.png", (1e9, 1e9))
    assert run(run_cfg([tmp_path / "in"], f"{out}/", random_model)).files_changed == 1
    faces = ds.dataset(out / "faces").to_table().to_pandas()
    assert faces.groupby("source").size().to_dict() == \
        {f"{i}.png": 1 + (i in (2, 5)) for i in range(6)}
    assert run(run_cfg([tmp_path / "in"], f"{out}/", random_model)).files_unchanged == 9

    # the command merges what is left (the compacted part and 2.png's new part)
    monkeypatch.setattr(Store, "COMPACT_AT", 256)
    res = CliRunner().invoke(main, ["compact", str(out)])
    assert res.exit_code == 0 and "merged 2 part files" in res.output, res.output
    assert len(list((out / "faces").glob("*.parquet"))) == 1
    assert_same_rows(ds.dataset(out / "faces").to_table().to_pandas(), faces)
    assert run(run_cfg([tmp_path / "in"], f"{out}/", random_model)).files_unchanged == 9
    assert CliRunner().invoke(main, ["compact", str(tmp_path / "in")]).exit_code == 2


@pytest.mark.slow  # many runs
def test_single_file_form_compacts_its_staged_parts(tmp_path, make_image, random_model,
                                                    monkeypatch):
    monkeypatch.setattr(Store, "COMPACT_AT", 2)
    for i in range(4):
        make_image(f"in/{i}.png", size=(200, 320), faces=faces_at(1, size=BIG))
    out = tmp_path / "r.parquet"
    run(run_cfg([tmp_path / "in"], out, random_model))
    staged = OutputPaths.from_out(out).state / "parts" / "faces"
    assert [p.name for p in staged.glob("*.parquet") if "-c" in p.name]
    make_image("in/1.png", size=(200, 320), faces=faces_at(2, size=BIG))
    os.utime(tmp_path / "in/1.png", (1e9, 1e9))
    run(run_cfg([tmp_path / "in"], out, random_model))
    assert read_output(out).groupby("source").size().to_dict() == \
        {"0.png": 1, "1.png": 2, "2.png": 1, "3.png": 1}


def test_docs_say_to_read_one_tables_folder():
    for doc in ("README.md", "docs/output.md"):
        text = (Path(__file__).resolve().parents[2] / doc).read_text()
        assert "results/faces/" in text and "never the root" in text, doc


@pytest.mark.slow  # several runs
def test_timelines_made_in_blocks_equal_one_video_at_a_time(tmp_path, make_video, random_model,
                                                            monkeypatch):
    from batchemo.analysis import derive

    for i in range(3):
        make_video(f"in/v{i}.mp4", seconds=2, fps=10, size=(160, 200),
                   faces_fn=(lambda j, t, i=i: faces_at(1 + (j > 8))) if i != 1 else None)
    run(run_cfg([tmp_path / "in"], tmp_path / "blocks.parquet", random_model))
    monkeypatch.setattr(derive, "BLOCK_ROWS", 1)  # one video per block, as before
    run(run_cfg([tmp_path / "in"], tmp_path / "single.parquet", random_model))
    for name in ("timeline", "segments"):
        a, b = (read_output(tmp_path / f"{n}.parquet", name) for n in ("blocks", "single"))
        assert len(a) and a["source"].nunique() >= 2
        pd.testing.assert_frame_equal(a, b, obj=name)
