"""The one atomic writer, the tables' file metadata, and the choice lists kept in one place."""

import numpy as np
import pandas as pd
import pytest

from batchemo import choices, model
from batchemo.output.atomic import atomic_write
from batchemo.output.tables import faces_table, read_table, write_table
from batchemo.records import Face, FaceBox, MediaItem


def test_atomic_write_replaces_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
    with atomic_write(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_track_id_reads_as_nullable_integers(tmp_path):
    item = MediaItem("r", "v.mp4", tmp_path / "v.mp4", "video")
    faces = [Face(i, i / 5, 0, FaceBox(1, 2, 30, 30, 0.9), np.array([0.2, 0.8], np.float32))
             for i in range(3)]
    table = faces_table(item, faces, np.array([0, -1, 1]), ("a", "b"), "m", "run")
    for suffix in ("parquet", "csv"):
        path = tmp_path / f"faces.{suffix}"
        write_table(table, path, suffix)
        if suffix == "parquet":  # no pandas metadata (issue 16): pandas' nullable types ask
            got = pd.read_parquet(path, dtype_backend="numpy_nullable")["track_id"]
            assert str(got.dtype) == "Int64" and got.isna().tolist() == [False, True, False]
        assert read_table(path).column("track_id").null_count == 1


def test_choice_lists_live_in_one_place():
    assert model.ARCHS is choices.ARCHS and model.PRECISIONS is choices.PRECISIONS
    from batchemo.config import RunConfig, TrainConfig

    assert RunConfig.__dataclass_fields__["detector"].metadata["choices"] is choices.DETECTORS
    assert TrainConfig.__dataclass_fields__["arch"].metadata["choices"] is choices.ARCHS
