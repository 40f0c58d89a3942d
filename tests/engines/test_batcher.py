"""Selective test-time augmentation: the batcher mirrors exactly the faces predict_tta mirrors."""

import numpy as np
import pytest

from batchemo.engines.batcher import Batcher
from batchemo.model import load_model
from batchemo.tta import predict_tta


@pytest.fixture(scope="module")
def faces_and_model(random_model):
    model = load_model(random_model)
    x = np.random.default_rng(0).integers(0, 256, (37, 48, 48, 1)).astype(np.float32)
    return model, x, model.predict(x)


def batched(model, x, tta: bool) -> np.ndarray:
    b, got = Batcher(model, batch_size=8, tta=tta), {}
    for i, px in enumerate(x):
        got.update(b.add(i, px))
    got.update(b.flush())
    assert sorted(got) == list(range(len(x)))  # every face once, whatever order
    return np.stack([got[i] for i in range(len(x))])


def test_unsure_faces_are_averaged_with_their_mirror_and_sure_ones_are_not(faces_and_model):
    model, x, plain = faces_and_model
    # Midway between two faces' top probabilities, so no face sits on the threshold (batches of
    # another size may differ in the last bit).
    top = np.sort(plain.max(1))
    below = float(top[len(top) // 2 - 1] + top[len(top) // 2]) / 2
    model.meta["tta_mirror_below"] = below
    mirrored = plain.max(1) < below
    assert 0 < mirrored.sum() < len(x)
    want = plain.copy()
    want[mirrored] = (plain[mirrored] + model.predict(x[mirrored][:, :, ::-1])) / 2
    np.testing.assert_allclose(predict_tta(model.predict, x, True, below), want, atol=1e-5)
    np.testing.assert_allclose(batched(model, x, True), want, atol=1e-5)


def test_a_card_without_a_threshold_mirrors_every_face_and_no_tta_mirrors_none(faces_and_model):
    model, x, plain = faces_and_model
    model.meta.pop("tta_mirror_below", None)
    both = (plain + model.predict(x[:, :, ::-1])) / 2
    np.testing.assert_allclose(batched(model, x, True), both, atol=1e-5)
    np.testing.assert_allclose(batched(model, x, False), plain, atol=1e-5)

