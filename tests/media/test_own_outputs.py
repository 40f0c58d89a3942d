"""Issue 28 item 8: a run's own outputs, state and plots are never scanned as inputs, also when
--out or --plots is an input root itself."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import run_cfg

from batchemo import RunConfig, run
from batchemo.media.scan import scan
from batchemo.output.tables import OutputPaths
from batchemo.plan import own_paths


def sources(out) -> list[str]:
    files = OutputPaths.from_out(out).table("files")
    table = pd.read_csv(files) if str(out).endswith(".csv") else pq.read_table(files).to_pandas()
    return sorted(table.source)


@pytest.mark.parametrize("out_name", ["in", "in/res.csv"])
def test_item8_output_in_the_input_root_is_not_scanned(tmp_path, make_image, make_video,
                                                       random_model, out_name):
    # Issue 28 item 8: `run -i insm -o insm` twice made the ledger, its -wal/-shm, the lock and
    # every faces/part-… `skipped` rows, and the files table grew by stale rows every run.
    make_image("in/a.png", size=(160, 200), faces=[(40, 40, 64)])
    make_video("in/v.mp4", 1, 10, size=(120, 160))
    cfg = run_cfg([tmp_path / "in"], tmp_path / out_name, random_model)
    first = run(cfg)
    assert (first.files_new, first.files_skipped) == (2, 0)
    for _ in range(2):
        again = run(cfg)
        assert (again.files_unchanged, again.files_skipped, again.files_new) == (2, 0, 0)
        assert sources(tmp_path / out_name) == ["a.png", "v.mp4"]


@pytest.mark.slow  # runs with plots
def test_item8_plots_in_the_input_root_are_not_analysed(tmp_path, make_image, make_video,
                                                        random_model):
    # Issue 28 item 8: `-i inP --plots inP` analysed run_shares.png and timeline_*.png as photos.
    make_image("in/a.png", size=(160, 200), faces=[(40, 40, 64)])
    make_video("in/v.mp4", 1, 10, size=(120, 160))
    out = tmp_path / "r.parquet"
    cfg = run_cfg([tmp_path / "in"], out, random_model, plots=str(tmp_path / "in"))
    run(cfg)
    written = sorted(p.name for p in (tmp_path / "in").glob("*.png"))
    assert "run_shares.png" in written and any(n.startswith("timeline_") for n in written)
    again = run(cfg)
    assert (again.files_unchanged, again.files_new, again.files_changed) == (2, 0, 0)
    assert sources(out) == ["a.png", "v.mp4"]


def test_own_paths_name_what_batchemo_writes_not_the_out_folder(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "run_shares.png").write_bytes(b"x")
    (tmp_path / "in" / "timeline_v.mp4-0badcafe.png").write_bytes(b"x")
    cfg = RunConfig(input=[str(tmp_path / "in")], out=str(tmp_path / "in"),
                    plots=str(tmp_path / "in"))
    own = {os.path.relpath(p, tmp_path) for p in own_paths(cfg, OutputPaths.from_out(cfg.out))}
    assert {"in/faces", "in/frames", "in/files", "in/_batchemo", "in/run_shares.png",
            "in/timeline_v.mp4-0badcafe.png"} <= own
    assert "in/a.png" not in own


def test_scan_skips_own_paths_also_through_a_linked_root(tmp_path, make_image):
    make_image("real/a.jpg", size=(40, 40))
    make_image("real/out/faces/part-1.jpg", size=(40, 40))
    (tmp_path / "real" / "out" / "_batchemo").mkdir()
    (tmp_path / "real" / "out" / "_batchemo" / "ledger.sqlite-wal").write_bytes(b"x")
    (tmp_path / "real" / "res.parquet").write_bytes(b"PAR1")  # a single-file table
    (tmp_path / "link").symlink_to(tmp_path / "real")
    skip = [tmp_path / "real" / "out" / "faces", tmp_path / "real" / "out" / "_batchemo",
            tmp_path / "real" / "res.parquet"]
    assert [i.source for i in scan([tmp_path / "link"], skip=skip)] == ["a.jpg"]
