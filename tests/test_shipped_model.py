"""The model inside the package: its card, its size, and the accuracy docs/model.md states."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED, needs_shared

from batchemo import EvaluateConfig, evaluate, load_model
from batchemo.model import DEFAULT_MODEL

MODEL_DOC = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text()


def stated_accuracy() -> float:
    return float(re.search(r"PrivateTest accuracy \*\*(\d+\.\d+) %\*\*", MODEL_DOC).group(1))


def test_shipped_artifact_is_valid_and_self_describing():
    m = load_model()
    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert m.classes == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert m.input_size == 48 and DEFAULT_MODEL.stat().st_size <= 16 * 2**20
    assert all(layer.dtype_policy.name == "float32" for layer in m.keras_model.layers)
    assert "PublicTest" in card["checkpoint_selection"]
    assert "PrivateTest" in card["test"]["split"] and card["test"]["n"] == 3589
    assert round(card["test"]["accuracy"] * 100, 2) == stated_accuracy()
    assert set(card["test"]["per_class"]) == set(m.classes)
    assert "research" in card["license"].lower() and card["limits"]


@needs_shared
@pytest.mark.slow
def test_shipped_model_scores_the_stated_accuracy_on_private_test():
    # the stated figure is the artifact's own (float32); `auto` may pick the int8 copy (below)
    r = evaluate(EvaluateConfig(data=SHARED / "data" / "fer2013" / "test",
                                only="PrivateTest_*", precision="float32"))
    assert r["n"] == 3589
    assert round(r["accuracy"] * 100, 2) == stated_accuracy()


def test_shipped_int8_copy_loads_without_tensorflow():
    code = ("import sys; from batchemo.model import load_model; m = load_model(precision='int8'); "
            "print(m.precision, 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["int8", "False"] and not r.stderr  # nor LiteRT's delegate line
    int8 = DEFAULT_MODEL.with_name(json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
                                   ["int8"]["file"])
    assert DEFAULT_MODEL.stat().st_size + int8.stat().st_size <= 16 * 2**20


@needs_shared
@pytest.mark.slow
def test_shipped_int8_copy_scores_the_stated_accuracy_on_private_test():
    stated = float(re.search(r"int8 \(`--precision int8`[^|]*\| (\d+\.\d+) %", MODEL_DOC).group(1))
    r = evaluate(EvaluateConfig(data=SHARED / "data" / "fer2013" / "test",
                                only="PrivateTest_*", precision="int8"))
    assert r["n"] == 3589 and round(r["accuracy"] * 100, 2) == stated
