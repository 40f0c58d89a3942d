import math

import numpy as np
import pytest

from batchemo.model import build, float32_copy
from batchemo.training.augment import (
    FaceAugment,
    FaceDegrade,
    FaceVideo,
    _resize_matrix,
    affine_resample,
    augmentation,
)


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
    model = build("default", 7, augmentation("gather"))
    assert any(isinstance(layer, FaceAugment) for layer in model.layers)
    copy = float32_copy(model, "default", 7)  # what save_artifact writes
    assert not any(isinstance(layer, FaceAugment) for layer in copy.layers)
    x = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(copy.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)


@pytest.fixture(scope="module")
def face_batch():
    """Smooth face-like images (blurred noise): resizing and JPEG change them measurably."""
    import cv2

    rng = np.random.default_rng(5)
    return np.stack([cv2.GaussianBlur(rng.integers(0, 256, (48, 48), dtype=np.uint8), (0, 0), 2)
                     for _ in range(8)]).astype(np.float32)


@pytest.mark.parametrize("low", [12, 16, 24, 33, 47])
def test_resize_matrix_is_opencvs_area_down_linear_up(face_batch, low):
    import cv2

    a = _resize_matrix(48, low)
    mine = np.clip(np.round(a @ face_batch @ a.T), 0, 255)
    ref = np.stack([cv2.resize(cv2.resize(f.astype(np.uint8), (low, low),
                                          interpolation=cv2.INTER_AREA),
                               (48, 48), interpolation=cv2.INTER_LINEAR) for f in face_batch])
    assert np.abs(mine - ref).max() <= 1  # OpenCV rounds in fixed point
    np.testing.assert_allclose(_resize_matrix(48, 48), np.eye(48), atol=1e-9)


def test_degrade_jpeg_is_opencvs_jpeg(face_batch):
    import cv2

    only_jpeg = FaceDegrade(p_resize=0, p_jpeg=1, p_blur=0, p_noise=0, p_tone=0,
                            quality=(30, 30.001), seed=1)
    mine = np.asarray(only_jpeg(face_batch[..., None], training=True))[..., 0]
    ref = np.stack([cv2.imdecode(cv2.imencode(".jpg", f.astype(np.uint8),
                                              [cv2.IMWRITE_JPEG_QUALITY, 30])[1], 0)
                    for f in face_batch]).astype(np.float32)
    change = np.abs(ref - face_batch).mean()
    assert change > 1 and np.abs(mine - ref).mean() < 0.2 * change


def test_degrade_is_identity_at_inference_and_varies_per_face(face_batch):
    x = np.repeat(face_batch[:1], 64, axis=0)[..., None]
    layer = FaceDegrade(seed=3)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert np.array_equal(out, np.round(out))  # whole grey levels, as decoded frames are
    changed = np.abs(out - x).mean(axis=(1, 2, 3))
    assert (changed == 0).any() and (changed > 0).mean() > 0.5  # some faces untouched
    assert len(np.unique(changed.round(3))) > 20  # drawn per face, not per batch


# Issue 31 item 3: the video augmentations do what they say, and at their fixed settings what
# `evaluate --degrade` scores.
def _video(face_batch, **settings):
    off = dict(p_pitch=0.0, p_mouth=0.0, p_motion=0.0)
    layer = FaceVideo(**{**off, **settings}, seed=2)
    return np.asarray(layer(face_batch[..., None], training=True))[..., 0]


def test_video_layer_is_identity_at_inference_and_when_off(face_batch):
    x = face_batch[..., None]
    np.testing.assert_array_equal(np.asarray(FaceVideo(p_pitch=1, p_mouth=1, p_motion=1)(
        x, training=False)), x)
    np.testing.assert_allclose(_video(face_batch), face_batch, atol=1e-3)


def test_video_pitch_at_20_degrees_is_evaluates_pitch(face_batch):
    from batchemo.training.evaluate import degrade

    mine = _video(face_batch, p_pitch=1, pitch_deg=(20, 20))
    ref = degrade(face_batch[..., None].astype(np.uint8), "pitch")[..., 0].astype(np.float32)
    change = np.abs(ref - face_batch).mean()
    assert change > 5 and np.abs(mine - ref).max() <= 1.5  # OpenCV interpolates in fixed point


def test_video_mouth_fill_is_evaluates_mouth_and_blur_keeps_the_upper_face(face_batch):
    from batchemo.training.evaluate import degrade

    fixed = dict(p_mouth=1, mouth_top=(32 / 48, 32 / 48), mouth_left=(10 / 48, 10 / 48),
                 mouth_right=(38 / 48, 38 / 48))
    filled = _video(face_batch, p_fill=1, **fixed)
    ref = degrade(face_batch[..., None].astype(np.uint8), "mouth")[..., 0]
    assert np.abs(filled - ref).max() <= 0.5  # evaluate rounds the mean grey
    blurred = _video(face_batch, p_fill=0, **fixed)
    np.testing.assert_allclose(blurred[:, :32], face_batch[:, :32], atol=1e-3)
    np.testing.assert_allclose(blurred[:, :, :10], face_batch[:, :, :10], atol=1e-3)
    box = (slice(None), slice(32, 48), slice(10, 38))
    assert (blurred[box].std(axis=(1, 2)) < 0.5 * face_batch[box].std(axis=(1, 2))).all()
    # drawn per face: with the default ranges the boxes differ, and every one covers rows 36-47,
    # columns 15-32 (the mouth and chin)
    many = np.repeat(face_batch[:1], 32, axis=0)
    out = _video(many, p_mouth=1, p_fill=1)
    assert len({int((np.abs(out[i] - many[i]) > 1e-3).sum()) for i in range(32)}) > 10
    np.testing.assert_allclose(out[:, 36:, 15:33], many[0].mean(), atol=1e-2)


def test_video_motion_of_9_vertical_is_evaluates_motion_and_horizontal_blurs_rows(face_batch):
    from batchemo.training.evaluate import degrade

    mine = _video(face_batch, p_motion=1, motion_px=(9, 9), p_vertical=1)
    ref = degrade(face_batch[..., None].astype(np.uint8), "motion")[..., 0]
    assert np.abs(ref - face_batch).mean() > 3 and np.abs(mine - ref).max() <= 0.5
    sideways = _video(face_batch, p_motion=1, motion_px=(9, 9), p_vertical=0)
    np.testing.assert_allclose(sideways, np.transpose(_video(
        np.transpose(face_batch, (0, 2, 1)), p_motion=1, motion_px=(9, 9), p_vertical=1),
        (0, 2, 1)), atol=1e-3)


def test_video_augmentations_are_drawn_per_face(face_batch):
    many = np.repeat(face_batch[:1], 64, axis=0)
    out = _video(many, p_pitch=0.5, p_mouth=0.5, p_motion=0.5)
    changed = np.abs(out - many).mean(axis=(1, 2))
    assert (changed < 1e-3).any() and (changed > 0.5).mean() > 0.5
    assert len(np.unique(changed.round(3))) > 20
    assert out.min() >= 0 and out.max() <= 255


def test_training_options_put_the_video_layer_in_front_of_the_student_only():
    from batchemo._util.tf import import_keras
    from batchemo.config import TrainConfig
    from batchemo.training.distil import degrading

    keras = import_keras()
    student = build("default", 7, augmentation("none"))
    assert degrading(keras, student, TrainConfig()) is student
    wrapped = degrading(keras, student, TrainConfig(occlude=0.3, motion_blur=0.2, pitch=0.1,
                                                    degrade=0.35))
    video = [layer for layer in wrapped.layers if isinstance(layer, FaceVideo)]
    kinds = [type(layer).__name__ for layer in wrapped.layers]
    assert len(video) == 1 and kinds.index("FaceVideo") < kinds.index("FaceDegrade")
    assert (video[0].settings["p_mouth"], video[0].settings["p_motion"],
            video[0].settings["p_pitch"]) == (0.3, 0.2, 0.1)
    only_video = degrading(keras, student, TrainConfig(occlude=0.5))
    assert "FaceDegrade" not in [type(layer).__name__ for layer in only_video.layers]
