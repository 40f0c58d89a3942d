"""Helpers shared by test modules (`from helpers import ...`; tests/ is on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from batchemo.config import RunConfig
from batchemo.output.tables import OutputPaths

BIG = 64  # faces drawn this big are found by every BlazeFace model (tests/facedraw.py)
ROW_KEYS = ("root", "source", "frame_index", "face_index")
UNTIMED = ("run_id", "seconds", "model_id", "mtime")  # differ between equal runs


def faces_at(n: int, t: float = 0.0, size: int = BIG, y: int = 40) -> list[tuple[int, int, int]]:
    """`n` faces of `size` px side by side, drifting right 10 px per second of `t` (a
    make_image/make_video `faces` list: (x, y, size) each)."""
    return [(20 + i * (size + 30) + int(10 * t), y, size) for i in range(n)]


def copy_model(src: Path, dest: Path) -> Path:
    """A copy of the artifact `src` (.keras and its .json card) at `dest`: for a test that changes
    a model a shared fixture made."""
    for suffix in (".keras", ".json"):
        shutil.copyfile(src.with_suffix(suffix), dest.with_suffix(suffix))
    return dest


def run_cfg(inputs, out, model, **kw) -> RunConfig:
    """A quiet run of the `inputs` folders into `out` with `model`, in this process unless
    `workers` says otherwise."""
    return RunConfig(input=[str(p) for p in inputs], out=out, model=model, quiet=True,
                     workers=kw.pop("workers", 0), **kw)


def read_output(out: Path, name: str = "faces") -> pd.DataFrame:
    """One table of a run's output (any form) as a DataFrame."""
    return pq.read_table(OutputPaths.from_out(out).table(name)).to_pandas()


def ledger_rows(out: Path) -> dict:
    """The ledger's file rows of an output, by (root, source)."""
    from batchemo.output.ledger import Ledger

    ledger = Ledger(OutputPaths.from_out(out).state)
    try:
        return ledger.files()
    finally:
        ledger.close()


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by (root, source, frame_index, face_index), run and timing columns left out."""
    keys = [k for k in ROW_KEYS if k in df]
    return (df.drop(columns=[c for c in UNTIMED if c in df]).sort_values(keys)
            .reset_index(drop=True))


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, obj: str = "rows",
                     tol: float = 1e-6) -> None:
    """The project's equality of two runs' rows (DESIGN.md): row for row, ordering aside, run and
    timing columns left out, probabilities (and confidence) within `tol`."""
    a, b = comparable(a), comparable(b)
    p = [c for c in a if c.startswith("p_") or c == "confidence"]
    pd.testing.assert_frame_equal(a.drop(columns=p), b.drop(columns=p), obj=obj)
    if p:
        assert np.abs(a[p].to_numpy(float) - b[p].to_numpy(float)).max(initial=0) <= tol, obj


def assert_same_outputs(a: Path, b: Path, tables=("faces", "frames", "files")) -> None:
    """assert_same_rows for these tables of two outputs."""
    for name in tables:
        assert_same_rows(read_output(a, name), read_output(b, name), obj=name)


def add_track_ids(faces: pd.DataFrame, **kwargs: float) -> pd.DataFrame:
    """A copy of a faces table with `track_id` filled by `assign_tracks`, video by video
    (root, source); image rows get null. `det_score` is used when present; `kwargs` go to
    `assign_tracks`. (The pipeline tracks each file as it commits; this is for tables made by
    hand in tests.)"""
    from batchemo.media.track import assign_tracks

    out = faces.copy()
    ids = np.full(len(out), -1, dtype=np.int64)
    video = (out["media_type"] == "video").to_numpy() & out["t_sec"].notna().to_numpy()
    for rows in out[video].groupby(["root", "source"], sort=False).indices.values():
        pos = np.flatnonzero(video)[rows]
        sub = out.iloc[pos]
        scores = sub["det_score"].to_numpy(float) if "det_score" in sub else None
        ids[pos] = assign_tracks(sub["frame_index"].to_numpy(), sub["t_sec"].to_numpy(float),
                                 sub[["x", "y", "w", "h"]].to_numpy(float), scores=scores,
                                 **kwargs)
    out["track_id"] = pd.arrays.IntegerArray(np.where(ids < 0, 0, ids), ids < 0)
    return out


def sniff(path: Path) -> str:
    """IMAGE, VIDEO or OTHER from a file's first bytes, as the scan decides."""
    from batchemo.media.scan import _HEAD_BYTES, _sniff_head

    with open(path, "rb") as f:
        return _sniff_head(f.read(_HEAD_BYTES))[0]


def timeline_columns(classes: list[str]) -> list[str]:
    """The columns of a timeline table, in order."""
    from batchemo.analysis.timeline import timeline_schema

    return timeline_schema(classes).names
