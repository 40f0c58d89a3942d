"""The derived tables (timeline, segments, summary) and plots, made from the committed rows.

The pipeline calls `write_derived` after the per-file commits (and after a killed run's
recovery); the Store only reads the staged parts and writes the tables.

Derived tables are extras on top of the stored rows (faces, frames, files, runs), so no
failure to derive them may fail a run, nor block the next ones: a video whose timeline or
segments cannot be made is logged (WARNING) and left out of both; a summary that cannot be
made is written empty, with a warning. `batchemo timeline` / `summary` recompute them from
the stored rows at any time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa

from batchemo.analysis.timeline import timeline_schema, timelines_and_segments
from batchemo.errors import OutputError
from batchemo.output.store import Store
from batchemo.output.tables import FRAMES_SCHEMA, SEGMENTS_SCHEMA, faces_schema, summary_schema
from batchemo.records import FileRow

log = logging.getLogger("batchemo")
BLOCK_ROWS = 50_000  # face and frame rows per timeline() call (memory stays bounded)


def write_derived(store: Store, classes: tuple[str, ...], rows: list[FileRow], files: pa.Table,
                  tag: str, cfg) -> None:
    """timeline and segments per video (streamed file by file), summary, optional plots."""
    from batchemo.analysis.segments import SEGMENT_COLUMNS
    from batchemo.analysis.summarize import summarize

    bin_sec = cfg.timeline_bin if cfg else 1.0
    switch_cost = cfg.segment_switch_cost if cfg else None
    tl_schema = timeline_schema(list(classes))
    seg_frames: list[pd.DataFrame] = []

    def block(faces: list[pd.DataFrame], frames: list[pd.DataFrame]):
        faces = [f for f in faces if len(f)]
        tl, seg = timelines_and_segments(
            pd.concat(faces, ignore_index=True) if faces else
            faces_schema(classes).empty_table().to_pandas(),
            pd.concat(frames, ignore_index=True), bin_sec=bin_sec, switch_cost=switch_cost)
        seg_frames.append(seg)
        return pa.Table.from_pandas(tl, schema=tl_schema, preserve_index=False).to_batches()

    def timelines():
        # Videos go through timeline() in blocks of about BLOCK_ROWS rows, not one by one: a
        # call costs ~20 ms however small the video, 4 s of every rerun of 200 videos. Rows
        # and their order are the same (timeline and segments work per video).
        faces, frames, n = [], [], 0
        for r in rows:
            if r.media_type != "video" or not r.part:
                continue
            fa, fr = store.read_part("faces", r), store.read_part("frames", r)
            if fr is None:
                continue
            faces += [] if fa is None else [fa]
            frames.append(fr)
            n += len(fr) + (0 if fa is None else len(fa))
            if n >= BLOCK_ROWS:
                yield block(faces, frames)
                faces, frames, n = [], [], 0
        if frames:
            yield block(faces, frames)

    store.write_stream("timeline", tl_schema, (b for batches in timelines() for b in batches), tag)
    seg = pd.concat(seg_frames, ignore_index=True) if seg_frames else \
        pd.DataFrame(columns=SEGMENT_COLUMNS)
    store.write_small("segments", pa.Table.from_pandas(seg, schema=SEGMENTS_SCHEMA,
                                                        preserve_index=False), tag)
    # Summary rolls up folders and the run, so it reads every part (only rows kept as state).
    faces_all = store.concat("faces", rows, faces_schema(classes))
    frames_all = store.concat("frames", rows, FRAMES_SCHEMA)
    try:
        summary = pa.Table.from_pandas(summarize(faces_all, files.to_pandas(), frames_all),
                                       schema=summary_schema(classes), preserve_index=False)
    except Exception as e:  # noqa: BLE001 - an extra table: the run's rows are kept
        log.warning("summary table written empty: %s: %s (`batchemo summary` recomputes it)",
                    type(e).__name__, e)
        summary = summary_schema(classes).empty_table()
    store.write_small("summary", summary, tag)
    if cfg is not None and cfg.plots:
        from batchemo.analysis.plots import write_plots

        try:
            write_plots(faces_all, frames_all, Path(cfg.plots), files=files, bin_sec=bin_sec)
        except OSError as e:
            raise OutputError(f"cannot write plots to {cfg.plots}: {e.strerror or e}") from None
        except Exception as e:  # charts are extras: the tables are written, the run is done
            log.warning("plots not written: %s: %s", type(e).__name__, e)
