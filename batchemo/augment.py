"""Training-time face augmentation as one batched resampling, fast under any Keras backend.

Keras's RandomRotation, RandomZoom and RandomTranslation resample the image once each (three
blurs), and under JAX or PyTorch on a GPU they ran at CPU speed (200-360 images/s; the PyTorch
backend loops over the batch in Python). FaceAugment draws a random flip, rotation, zoom and shift
per face, composes them into one affine map and applies it to the whole batch with one bilinear
gather: a handful of array operations that run wherever the model runs.
"""

from __future__ import annotations

import math

from ._tf import import_keras

keras = import_keras()
ops = keras.ops


def affine_resample(x, angle, scale, shift_x, shift_y, mirror):
    """Resample images `x` (B, H, W, C) through per-image maps, each argument shaped (B, 1, 1).

    Output pixel p takes the input at R(angle)·scale·(p − centre)·(mirror, 1) + centre − shift, so
    scale < 1 zooms in and a positive shift moves the content right/down; `mirror` is −1 (flip
    left-right) or 1. Bilinear; outside the image the nearest edge pixel is repeated.
    """
    b, h, w, c = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    rows, cols = ops.meshgrid(ops.arange(h, dtype="float32") - (h - 1) / 2,
                              ops.arange(w, dtype="float32") - (w - 1) / 2, indexing="ij")
    cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
    cols = cols * mirror
    src_x = cos * cols - sin * rows + (w - 1) / 2 - shift_x
    src_y = sin * cols + cos * rows + (h - 1) / 2 - shift_y
    x0, y0 = ops.floor(src_x), ops.floor(src_y)
    fx, fy = (src_x - x0)[..., None], (src_y - y0)[..., None]
    flat = ops.reshape(x, (b, h * w, c))

    def tap(yi, xi):
        index = ops.clip(yi, 0, h - 1) * w + ops.clip(xi, 0, w - 1)
        index = ops.cast(ops.reshape(index, (b, h * w, 1)), "int32")
        return ops.reshape(ops.take_along_axis(flat, index, axis=1), (b, h, w, c))

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


@keras.saving.register_keras_serializable(package="batchemo")
class FaceAugment(keras.layers.Layer):
    """Random horizontal flip, rotation (± `rotation_deg`), zoom (scale 1 + `zoom`, a (low, high)
    range; negative zooms in) and shift (± `shift` of the size) per face; identity at inference."""

    def __init__(self, rotation_deg=14.4, zoom=(-0.15, 0.1), shift=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation_deg, self.zoom, self.shift, self.seed = rotation_deg, tuple(zoom), shift, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        if not training:
            return x
        b, h, w = ops.shape(x)[0], x.shape[1], x.shape[2]

        def uniform(low, high):
            return keras.random.uniform((b, 1, 1), low, high, seed=self.seed_generator)

        turn = math.radians(self.rotation_deg)
        out = affine_resample(
            ops.cast(x, "float32"), uniform(-turn, turn), 1 + uniform(*self.zoom),
            uniform(-self.shift, self.shift) * w, uniform(-self.shift, self.shift) * h,
            ops.where(uniform(0, 1) < 0.5, -1.0, 1.0))
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation_deg": self.rotation_deg, "zoom": self.zoom,
                "shift": self.shift, "seed": self.seed}
