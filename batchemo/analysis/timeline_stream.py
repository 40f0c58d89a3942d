"""The timeline streamed over a Parquet faces table (file or dataset): blocks of whole videos,
so memory stays bounded however big the archive; rows identical to `timeline.timeline`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batchemo.analysis.columns import class_names
from batchemo.analysis.timeline import (
    TimelineParams,
    frame_times,
    timeline_block,
    timeline_schema,
    video_face_rows,
)
from batchemo.output.tables import write_batches


def iter_timeline_parquet(
    faces_path: str | Path,
    frames_path: str | Path | None = None,
    *,
    bin_sec: float = 1.0,
    smoothing: str = "ema",
    window_sec: float = 3.0,
    batch_rows: int = 32_768,
) -> Iterator[pd.DataFrame]:
    """Stream `timeline` over a Parquet file or dataset: yields blocks of whole videos.

    Each video's face rows must be contiguous (as the pipeline writes them); a video met again
    after another one raises ValueError. Memory holds about `batch_rows` face rows (or one
    whole video, if longer) plus the sampled times of the frames table (8 bytes a frame).
    Videos found only in the frames table come last, as blocks of empty bins.
    """
    params = TimelineParams(bin_sec, smoothing, window_sec)
    names = _parquet_files(faces_path)[0].schema_arrow.names
    classes = class_names(pd.DataFrame(columns=names))
    cols = ["root", "source", "media_type", "frame_index", "t_sec", "track_id", "confidence"]
    cols = [c for c in cols if c in names] + [f"p_{c}" for c in classes]
    times = _frame_times_parquet(frames_path) if frames_path is not None else {}
    seen: set[tuple[str, str]] = set()
    pending: list[tuple[tuple[str, str], pd.DataFrame]] = []  # (video, rows) read, not done

    def block(parts: list[tuple[tuple[str, str], pd.DataFrame]]) -> pd.DataFrame:
        keys = list(dict.fromkeys(k for k, _ in parts))
        return timeline_block(pd.concat([p for _, p in parts], ignore_index=True), times, keys,
                              classes, params)

    for batch in _batches(faces_path, cols, batch_rows):
        df = video_face_rows(batch.to_pandas())
        if not len(df):
            continue
        # Key changes found column-wise; only the few run starts become Python tuples.
        root, source = df["root"], df["source"]
        starts = np.flatnonzero(((root != root.shift()) | (source != source.shift())).to_numpy())
        ends = np.r_[starts[1:], len(df)]
        keys = zip(root.iloc[starts], source.iloc[starts], strict=True)
        for a, b, key in zip(starts, ends, keys, strict=True):
            if key in seen and key != pending[-1][0]:
                raise ValueError(f"{faces_path}: rows of one video are not contiguous; "
                                 "sort by root, source or use timeline() in memory")
            seen.add(key)
            pending.append((key, df.iloc[a:b]))
        # The last video may go on in the next batch: it stays pending.
        done = [p for p in pending if p[0] != pending[-1][0]] if pending else []
        if sum(len(p) for _, p in done) >= batch_rows:
            yield block(done)
            pending = pending[len(done) :]
    if pending:
        yield block(pending)
    faceless = sorted(set(times) - seen)  # videos sampled but never showing a face
    for i in range(0, len(faceless), 1024):
        yield timeline_block(pd.DataFrame(columns=cols), times, faceless[i : i + 1024],
                             classes, params)


def timeline_from_parquet(
    faces_path: str | Path,
    frames_path: str | Path | None = None,
    *,
    out_path: str | Path | None = None,
    bin_sec: float = 1.0,
    smoothing: str = "ema",
    window_sec: float = 3.0,
    batch_rows: int = 32_768,
) -> pd.DataFrame | Path:
    """`iter_timeline_parquet`, concatenated into a DataFrame, or, with `out_path`, written
    block by block to that file (Parquet, or CSV for a `.csv` suffix; temp file + rename) and
    its Path returned."""
    blocks = iter_timeline_parquet(faces_path, frames_path, bin_sec=bin_sec, smoothing=smoothing,
                                   window_sec=window_sec, batch_rows=batch_rows)
    if out_path is None:
        parts = list(blocks)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    out_path = Path(out_path)
    schema = timeline_schema(_classes(faces_path))
    batches = (batch for block in blocks
               for batch in pa.Table.from_pandas(block, schema=schema,
                                                 preserve_index=False).to_batches())
    write_batches(schema, batches, out_path, "csv" if out_path.suffix.lower() == ".csv"
                  else "parquet")
    return out_path


def _classes(faces_path: str | Path) -> list[str]:
    """The model's classes, from the p_<class> columns of the faces table's schema."""
    names = _parquet_files(faces_path)[0].schema_arrow.names
    return class_names(pd.DataFrame(columns=names))


def _frame_times_parquet(path: str | Path) -> dict[tuple[str, str], np.ndarray]:
    parts: dict[tuple[str, str], list[np.ndarray]] = {}
    for batch in _batches(path, ["root", "source", "t_sec"], 65_536):
        for k, v in frame_times(batch.to_pandas()).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _parquet_files(path: str | Path) -> list[pq.ParquetFile]:
    """A Parquet file, or the part files of a dataset folder in name order."""
    path = Path(path)
    parts = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not parts:
        raise FileNotFoundError(f"no Parquet files under {path}")
    return [pq.ParquetFile(p, pre_buffer=False) for p in parts]


def _batches(path: str | Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    # Not pyarrow.dataset: its scan reads ahead about the whole of a 1 M row file. And
    # pre_buffer=False: with it, iter_batches keeps ~3 MB per batch read until the file closes.
    for pf in _parquet_files(path):
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
