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
