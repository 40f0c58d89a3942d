"""The plan: settings resolved once, plan() called once per run, recovery rebuilds as the run
derives (issue 27)."""

import dataclasses

import pandas as pd
import pytest
from helpers import run_cfg

from batchemo import pipeline as pipeline_mod
from batchemo import run
from batchemo.config import RunConfig as Cfg
from batchemo.output.ledger import Ledger
from batchemo.output.tables import OutputPaths
from batchemo.plan import extract_settings, settings_id


def test_plan_runs_once_per_run_first_run_and_rerun(tmp_path, make_image, make_video,
                                                     random_model, monkeypatch):
    make_image("in/a.png", size=(160, 200), faces=[(20, 40, 64)])
    make_video("in/v.mp4", seconds=1, fps=10, size=(160, 200), faces_fn=lambda i, t: [(20, 40, 64)])
    calls = []
    real = pipeline_mod.plan

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(pipeline_mod, "plan", counting)
    first = run(run_cfg([tmp_path / "in"], tmp_path / "out.parquet", random_model, fps=5))
    assert first.exit_code == 0 and first.files_new == 2 and len(calls) == 1
    second = run(run_cfg([tmp_path / "in"], tmp_path / "out.parquet", random_model, fps=5))
    assert second.files_unchanged == 2 and second.files_new == 0 and len(calls) == 2


def test_settings_id_covers_every_extract_setting():
    base = extract_settings(Cfg())
    ids = {settings_id(base, "m", True, "float32")}
    for f in dataclasses.fields(base):
        value = getattr(base, f.name)
        changed = dataclasses.replace(base, **{f.name: value + 1 if not isinstance(value, str)
                                               else value + "x"})
        ids.add(settings_id(changed, "m", True, "float32"))
    assert len(ids) == 1 + len(dataclasses.fields(base))


def test_settings_id_is_the_one_outputs_already_record():
    # Outputs made before the ExtractSettings seam must not be reprocessed: same hash input.
    s = extract_settings(Cfg())
    assert settings_id(s, "fer2013-default", 0.8, "int8") == settings_id(
        dataclasses.replace(s), "fer2013-default", 0.8, "int8")
    import hashlib
    import json
    old = {"fps": s.fps, "detector": s.detector, "min_face": s.min_face,
           "score_threshold": s.score_threshold, "margin": s.margin, "tta": 0.8,
           "model": "fer2013-default", "precision": "int8"}
    assert settings_id(s, "fer2013-default", 0.8, "int8") == \
        hashlib.sha1(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]


@pytest.mark.slow
def test_recovery_rebuilds_with_the_runs_bin_and_plots(tmp_path, make_video, random_model):
    """A run killed while rebuilding its outputs (files committed, tables not yet rebuilt) is
    completed by the next run as that run derives: its --timeline-bin and --plots, not a 1 s bin
    without plots (the bug: recovery rebuilt with no settings and left the marker as it was)."""
    make_video("in/v.mp4", seconds=3, fps=10, size=(160, 200), faces_fn=lambda i, t: [(20, 40, 64)])
    plots = tmp_path / "plots"
    cfg = run_cfg([tmp_path / "in"], tmp_path / "out.parquet", random_model, fps=5,
                  timeline_bin=2.0, plots=plots)
    assert run(cfg).exit_code == 0
    paths = OutputPaths.from_out(cfg.out)
    tl = pd.read_parquet(paths.table("timeline"))
    assert ((tl.bin_end - tl.bin_start) == 2.0).all()
    # What a kill during the final rebuild leaves: committed rows, outputs not rebuilt.
    ledger = Ledger(paths.state)
    ledger.mark_dirty()
    ledger.close()
    for p in plots.iterdir():
        p.unlink()
    paths.table("timeline").unlink()
    again = run(cfg)
    assert again.exit_code == 0 and again.files_unchanged == 1
    tl = pd.read_parquet(paths.table("timeline"))
    assert len(tl) and ((tl.bin_end - tl.bin_start) == 2.0).all()
    assert any(plots.glob("*.png"))


def test_unique_roots_keeps_each_real_path_once_as_first_given(tmp_path, monkeypatch):
    # Issue 28, minor: `-i in -i in -i /abs/in` analysed the same files three times.
    from batchemo.plan import unique_roots

    (tmp_path / "in").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    roots = unique_roots(["in", "./in", tmp_path / "in", "link", "other", "in/"])
    assert roots == ["in", "other"]
