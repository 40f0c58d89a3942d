import math

import numpy as np
import pytest

from batchemo.augment import FaceAugment, affine_resample
from batchemo.model import build, float32_copy


def _resample(x, angle=0.0, scale=1.0, shift_x=0.0, shift_y=0.0, mirror=1.0):
    per_image = [np.full((len(x), 1, 1), v, np.float32) for v in (angle, scale, shift_x, shift_y,
                                                                   mirror)]
    return np.asarray(affine_resample(x.astype(np.float32), *per_image))


@pytest.fixture
def faces():
    return np.random.default_rng(0).integers(0, 256, (4, 9, 9, 1)).astype(np.float32)


def test_known_maps(faces):
    np.testing.assert_allclose(_resample(faces), faces, atol=1e-4)
    np.testing.assert_allclose(_resample(faces, mirror=-1), faces[:, :, ::-1], atol=1e-4)
    np.testing.assert_allclose(_resample(faces, angle=math.pi / 2),
                               np.rot90(faces, 1, axes=(1, 2)), atol=1e-3)
    # content moves right by 2; the left edge column repeats (nearest fill)
    shifted = np.concatenate([faces[:, :, :1]] * 2 + [faces[:, :, :-2]], axis=2)
    np.testing.assert_allclose(_resample(faces, shift_x=2), shifted, atol=1e-4)


def test_zoom_in_is_bilinear_about_the_centre():
    ramp = np.tile(np.arange(9, dtype=np.float32), (1, 9, 1))[..., None]  # value = column
    np.testing.assert_allclose(_resample(ramp, scale=0.5)[0, 0, :, 0], 4 + (np.arange(9) - 4) / 2,
                               atol=1e-4)


def test_layer_is_identity_at_inference_and_random_in_training(faces):
    np.testing.assert_array_equal(np.asarray(FaceAugment(seed=1)(faces, training=False)), faces)
    many = np.repeat(faces, 16, axis=0)
    flips_only = np.asarray(FaceAugment(rotation_deg=0, zoom=(0, 0), shift=0, seed=1)(
        many, training=True))
    mirrored = [np.allclose(a, f[:, ::-1], atol=1e-3) and not np.allclose(a, f, atol=1e-3)
                for a, f in zip(flips_only, many, strict=True)]
    kept = [np.allclose(a, f, atol=1e-3) for a, f in zip(flips_only, many, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and any(mirrored) and any(kept)
    out = np.asarray(FaceAugment(seed=1)(faces, training=True))
    assert not np.allclose(out, faces) and faces.min() <= out.min() and out.max() <= faces.max()


def test_gather_model_saves_as_the_layers_model():
    model = build("default", 7, "gather")
    assert any(isinstance(layer, FaceAugment) for layer in model.layers)
    copy = float32_copy(model, "default", 7)  # what save_artifact writes
    assert not any(isinstance(layer, FaceAugment) for layer in copy.layers)
    x = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(copy.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)
