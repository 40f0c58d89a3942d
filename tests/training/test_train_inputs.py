"""Training inputs that used to make a broken model with exit 0 (issue 28 items 6 and 10), and the
probe that keeps such a model out of `run`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from batchemo.cli import main
from batchemo.config import TrainConfig
from batchemo.errors import BatchemoError, ModelError


def write_tree(root, counts):
    """`root/<class>/img_<i>.png`: random 48x48 faces, `counts[class]` of each (seeded)."""
    import cv2

    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / name / f"img_{i}.png"), rng.integers(0, 256, (48, 48), np.uint8))


def train_args(tmp_path, *extra):
    return ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.keras"),
            "--epochs", "1", "--batch-size", "8", "--work-dir", str(tmp_path / "work"),
            "--no-calibrate", *extra]


# Issue 28 item 10: one class trained a 1-class model with exit 0.
def test_one_class_is_refused_exit_2(tmp_path):
    write_tree(tmp_path / "data", {"happy": 6})
    r = CliRunner().invoke(main, train_args(tmp_path))
    assert r.exit_code == 2 and "one class" in r.output, (r.output, r.exception)
    assert not (tmp_path / "m.keras").exists()


# Issue 28 item 6: a votes CSV with `inf` in one column trained with `loss: nan`, exit 0.
def test_inf_votes_exit_2_naming_the_row_and_column(tmp_path):
    write_tree(tmp_path / "data", {"happy": 6, "sad": 6})
    (tmp_path / "v.csv").write_text("file,happy,sad\nhappy/img_0.png,3,0\nsad/img_0.png,0,inf\n")
    r = CliRunner().invoke(main, train_args(tmp_path, "--soft-labels", str(tmp_path / "v.csv")))
    assert r.exit_code == 2 and "v.csv:3: column sad holds 'inf'" in r.output, r.output
    assert not (tmp_path / "m.keras").exists()


# Issue 28 item 6: whatever makes the loss NaN, `train` writes no model (it wrote one, exit 0).
@pytest.mark.slow
def test_a_nan_loss_writes_no_model(tmp_path, monkeypatch):
    from batchemo.training import train as train_mod

    write_tree(tmp_path / "data", {"happy": 8, "sad": 8})

    def nan_targets(cfg, split):  # what unchecked `inf` votes made of the targets
        return np.full((len(split), len(split.classes)), np.nan, np.float32)

    monkeypatch.setattr(train_mod, "label_targets", nan_targets)
    cfg = TrainConfig(data=tmp_path / "data", out=tmp_path / "m.keras", epochs=2, batch_size=8,
                      work_dir=tmp_path / "work", calibrate=False, tta=False)
    with pytest.raises(BatchemoError, match="training diverged .*loss became nan"):
        train_mod.train(cfg)
    assert not (tmp_path / "m.keras").exists() and not (tmp_path / "m.json").exists()


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory, random_model):
    """The random model with one NaN weight in its output layer, saved as a valid artifact."""
    from batchemo.model import load_model, save_artifact

    good = load_model(random_model)
    km = good.keras_model
    weights = km.layers[-1].get_weights()
    weights[0][0, 0] = np.nan
    km.layers[-1].set_weights(weights)
    path = tmp_path_factory.mktemp("nan") / "nan.keras"
    save_artifact(km, path, {k: good.meta[k] for k in ("arch", "classes", "tta")})
    return path


# Issue 28 item 6: `run --model` with a NaN model wrote NaN probabilities, emotion "angry", exit 0.
def test_load_model_refuses_non_finite_outputs(nan_model, random_model):
    from batchemo.model import load_model

    assert load_model(random_model).classes  # the probe passes a sound model
    with pytest.raises(ModelError, match="non-finite probabilities"):
        load_model(nan_model)
    assert json.loads(nan_model.with_suffix(".json").read_text())["sha256"]  # a valid card


@pytest.mark.slow
def test_run_with_a_nan_model_exits_2_and_writes_no_rows(tmp_path, make_image, nan_model):
    make_image("in/a.png", size=(160, 160), faces=[(20, 30, 100)])
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o",
                                  str(tmp_path / "r.parquet"), "--model", str(nan_model),
                                  "--precision", "float32", "--quiet", "--workers", "0"])
    assert r.exit_code == 2 and "non-finite" in r.output, (r.output, r.exception)
    assert not (tmp_path / "r.parquet").exists()


# Issue 28 item 6, int8: quantising NaN weights gives finite (uniform, meaningless) int8 outputs
# that no probe can tell from a model's, so the float model is probed before it is quantised.
def test_quantize_refuses_a_non_finite_model(nan_model):
    from batchemo.model import quantize

    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1), np.uint8)
    with pytest.raises(ModelError, match="non-finite probabilities"):
        quantize(nan_model, faces, n=8)
    assert not nan_model.with_name("nan.int8.tflite").exists()
