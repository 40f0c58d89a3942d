import json

import numpy as np
import pytest

from batchemo.training.evaluate import calibration_error, metrics, write_report


def test_metrics_match_a_hand_computation():
    # true:  a a a b b c     pred: a b a b c c
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 2, 2])
    m = metrics(y_true, y_pred, ("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    pa, pb, pc = m["per_class"]["a"], m["per_class"]["b"], m["per_class"]["c"]
    assert (pa["precision"], pa["recall"]) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert (pb["precision"], pb["recall"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert (pc["precision"], pc["recall"]) == (pytest.approx(0.5), pytest.approx(1.0))
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))


def test_never_predicted_class_has_zero_precision_and_absent_class_is_left_out_of_macro_f1():
    m = metrics(np.array([0, 0, 1]), np.array([0, 0, 0]), ("a", "b", "c"))
    assert m["per_class"]["b"]["precision"] == 0.0 and m["per_class"]["b"]["recall"] == 0.0
    assert m["per_class"]["c"]["support"] == 0
    f1_a = 2 * (2 / 3) * 1 / (2 / 3 + 1)
    assert m["macro_f1"] == pytest.approx((f1_a + 0.0) / 2)


def test_report_files(tmp_path):
    m = metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), ("happy", "sad"))
    write_report(m, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["accuracy"] == pytest.approx(2 / 3)
    assert (tmp_path / "confusion.csv").read_text().splitlines()[1:] == ["happy,1,0", "sad,1,1"]
    assert (tmp_path / "confusion.png").stat().st_size > 5000
    assert "recall" in (tmp_path / "per_class.csv").read_text().splitlines()[0]


def test_calibration_error_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.55 (right): bins [0.867, 0.933) and [0.533, 0.6)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.45, 0.55]])
    y = np.array([0, 1, 1])
    expected = (2 * abs(0.5 - 0.9) + 1 * abs(1.0 - 0.55)) / 3
    assert calibration_error(probs, y) == pytest.approx(expected)
    assert calibration_error(np.eye(3), np.arange(3)) == pytest.approx(0.0)


# Issue 31 item 3: the video conditions `evaluate --degrade mouth|motion|pitch`, exactly as defined.
@pytest.fixture
def smooth_faces():
    import cv2

    rng = np.random.default_rng(11)
    return np.stack([cv2.GaussianBlur(rng.integers(0, 256, (48, 48), dtype=np.uint8), (0, 0), 2)
                     for _ in range(3)])[..., None]


def test_mouth_fills_rows_32_to_47_columns_10_to_37_with_the_faces_mean_grey(smooth_faces):
    from batchemo.training.evaluate import degrade

    out = degrade(smooth_faces, "mouth")
    for face, new in zip(smooth_faces[..., 0], out[..., 0], strict=True):
        assert (new[32:48, 10:38] == round(face.mean())).all()
        untouched = np.ones((48, 48), bool)
        untouched[32:48, 10:38] = False
        np.testing.assert_array_equal(new[untouched], face[untouched])
    assert out.dtype == np.uint8 and out.shape == smooth_faces.shape


def test_motion_is_a_vertical_nine_pixel_box_blur():
    from batchemo.training.evaluate import degrade

    stripes = np.zeros((1, 48, 48, 1), np.uint8)
    stripes[0, :, ::2] = 180  # vertical stripes: a vertical blur leaves them alone
    np.testing.assert_array_equal(degrade(stripes, "motion"), stripes)
    dot = np.zeros((1, 48, 48, 1), np.uint8)
    dot[0, 20, 30] = 225
    blurred = degrade(dot, "motion")[0, ..., 0]
    assert (blurred[16:25, 30] == 25).all()  # 225 / 9 on the 9 rows around it, nowhere else
    assert blurred.sum() == 9 * 25


def test_pitch_turns_the_face_down_foreshortened_and_shifted():
    from batchemo.training.evaluate import degrade, pitch_homography

    # a bright horizontal line at row 10 (brows) and one at row 36 (mouth)
    face = np.full((1, 48, 48, 1), 60, np.uint8)
    face[0, 10], face[0, 36] = 200, 200
    out = degrade(face, "pitch")[0, ..., 0].astype(float)
    rows = [int(np.argmax(out[r0:r1, 24])) + r0 for r0, r1 in ((0, 24), (24, 48))]
    # both move down (the 4.8 px shift), the lower one less (the face shortens by about cos 20)
    assert 13 <= rows[0] <= 16 and rows[0] - 10 > rows[1] - 36 >= 0
    assert 0.9 < (rows[1] - rows[0]) / 26 < 0.98
    # perspective: the brow end is wider than the chin end
    h = pitch_homography(48)
    width = [np.diff([(h @ [u, v, 1])[0] / (h @ [u, v, 1])[2] for u in (0, 47)])[0]
             for v in (0, 47)]
    assert width[0] < 47 < width[1]  # the top samples less of the source (it is nearer)
    np.testing.assert_allclose(pitch_homography(48, 0.0), np.eye(3), atol=1e-12)


def test_unknown_degradation_is_refused(smooth_faces):
    from batchemo.errors import DatasetError
    from batchemo.training.evaluate import degrade

    with pytest.raises(DatasetError, match="unknown degradation 'blur'"):
        degrade(smooth_faces, "mouth+blur")


@pytest.mark.slow  # converts a model to int8 (about 10 s)
def test_evaluate_resolves_auto_precision_as_run_does_and_auto_is_the_default(
        random_model, tmp_path, monkeypatch):
    # Issue 29: evaluate defaulted to float32 where `run`'s auto used the int8 copy, so the two
    # reported different numbers on a CPU without native bf16. Both now go through load_model.
    import cv2
    from helpers import copy_model

    import batchemo.model as model_module
    from batchemo.config import EvaluateConfig
    from batchemo.model import load_model, quantize
    from batchemo.training.evaluate import evaluate

    model = copy_model(random_model, tmp_path / "m.keras")
    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (40, 48, 48, 1)).astype(np.uint8)
    quantize(model, faces, n=20)
    for i, face in enumerate(faces[:12]):
        folder = tmp_path / "data" / ("happy", "sad")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), face[..., 0])
    cfg = EvaluateConfig(data=tmp_path / "data", model=model)
    assert cfg.precision == "auto"

    monkeypatch.setattr(model_module, "native_bfloat16", lambda: False)  # an AVX2-only CPU
    assert evaluate(cfg)["precision"] == load_model(model, "auto").precision == "int8"
    monkeypatch.setattr(model_module, "native_bfloat16", lambda: True)  # bf16, found not faster
    monkeypatch.setattr(model_module, "_bfloat16_pays_off", lambda *a: False)
    assert evaluate(cfg)["precision"] == load_model(model, "auto").precision == "float32"
    forced = EvaluateConfig(data=tmp_path / "data", model=model, precision="float32")
    monkeypatch.setattr(model_module, "native_bfloat16", lambda: False)
    assert evaluate(forced)["precision"] == "float32"
