"""Training-time face augmentation as one batched resampling, fast under any Keras backend.

Keras's RandomRotation, RandomZoom and RandomTranslation resample the image once each (three
blurs), and under JAX or PyTorch on a GPU they ran at CPU speed (200-360 images/s; the PyTorch
backend loops over the batch in Python). FaceAugment draws a random flip, rotation, zoom and shift
per face, composes them into one affine map and applies it to the whole batch with one bilinear
gather: a handful of array operations that run wherever the model runs.
"""

from __future__ import annotations

import math

import numpy as np

from batchemo._util.tf import import_keras
from batchemo.model import augmentation as model_augmentation
from batchemo.training.evaluate import PITCH_CAMERA, PITCH_SHIFT

keras = import_keras()
ops = keras.ops


def affine_resample(x, angle, scale, shift_x, shift_y, mirror):
    """Resample images `x` (B, H, W, C) through per-image maps, each argument shaped (B, 1, 1).

    Output pixel p takes the input at R(angle)·scale·(p − centre)·(mirror, 1) + centre − shift, so
    scale < 1 zooms in and a positive shift moves the content right/down; `mirror` is −1 (flip
    left-right) or 1. Bilinear; outside the image the nearest edge pixel is repeated.
    """
    h, w = x.shape[1], x.shape[2]
    rows, cols = ops.meshgrid(ops.arange(h, dtype="float32") - (h - 1) / 2,
                              ops.arange(w, dtype="float32") - (w - 1) / 2, indexing="ij")
    cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
    cols = cols * mirror
    src_x = cos * cols - sin * rows + (w - 1) / 2 - shift_x
    src_y = sin * cols + cos * rows + (h - 1) / 2 - shift_y
    return bilinear_sample(x, src_x, src_y)


def bilinear_sample(x, src_x, src_y):
    """Images `x` (B, H, W, C) sampled at source columns `src_x` and rows `src_y` (each (B, H, W)
    or broadcastable to it): bilinear; outside the image the nearest edge pixel is repeated."""
    b, h, w, c = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    src_x, src_y = src_x + ops.zeros((b, h, w)), src_y + ops.zeros((b, h, w))
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


def _resize_matrix(size: int, low: int) -> np.ndarray:
    """(size, size) matrix A with A·v = v downscaled to `low` pixels by area averaging and back up
    by linear interpolation (OpenCV's INTER_AREA then INTER_LINEAR, one axis; both separable)."""
    step = size / low
    down = np.zeros((low, size))
    for i in range(low):  # low pixel i averages the source interval [i·step, (i+1)·step)
        for j in range(size):
            down[i, j] = max(0.0, min(j + 1, (i + 1) * step) - max(j, i * step)) / step
    up = np.zeros((size, low))
    src = np.clip((np.arange(size) + 0.5) * low / size - 0.5, 0, low - 1)
    left = np.minimum(np.floor(src).astype(int), low - 1)
    right = np.minimum(left + 1, low - 1)
    up[np.arange(size), left] += 1 - (src - left)
    up[np.arange(size), right] += src - left
    return up @ down


def _dct_matrix(n: int = 8) -> np.ndarray:
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.cos((2 * i + 1) * k * np.pi / (2 * n)) * np.sqrt(2 / n)
    c[0] /= np.sqrt(2)
    return c  # orthonormal DCT-II: coefficients = C · block · Cᵀ


# JPEG's luminance quantisation table (ITU T.81 Annex K); FaceDegrade scales it by quality.
_JPEG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float32)


@keras.saving.register_keras_serializable(package="batchemo")
class FaceDegrade(keras.layers.Layer):
    """Video-grade degradations drawn per face, as array operations that run under any backend:
    gamma and contrast, sensor noise, Gaussian blur, downscaling to `sizes` px and back (area then
    linear, as small faces are cropped and resized), and JPEG quantisation of 8x8 DCT blocks at
    `quality`. Each happens to a face with its probability `p_*`; identity at inference.

    Blur and resizing are linear maps of rows and columns, so they are one (B, S, S) matrix per
    face applied as A·X·Aᵀ; JPEG is exact for greyscale apart from libjpeg's integer DCT."""

    def __init__(self, p_resize=0.5, sizes=(12, 48), p_jpeg=0.4, quality=(20, 90), p_blur=0.15,
                 blur_sigma=(0.4, 1.2), p_noise=0.2, noise_std=(2.0, 8.0), p_tone=0.3, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(p_resize=p_resize, sizes=tuple(sizes), p_jpeg=p_jpeg,
                             quality=tuple(quality), p_blur=p_blur, blur_sigma=tuple(blur_sigma),
                             p_noise=p_noise, noise_std=tuple(noise_std), p_tone=p_tone, seed=seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._tables = {}

    def _resize_table(self, size):
        if size not in self._tables:
            low = range(self.settings["sizes"][0], self.settings["sizes"][1] + 1)
            self._tables[size] = np.stack([_resize_matrix(size, s) for s in low]).astype(np.float32)
        return self._tables[size]

    def call(self, x, training=False):
        if not training:
            return x
        s = self.settings
        b, size = ops.shape(x)[0], x.shape[1]

        def draw(shape=(), low=0.0, high=1.0):
            return keras.random.uniform((b, *shape), low, high, seed=self.seed_generator)

        def happens(p, shape=()):
            return ops.cast(draw(shape) < p, "float32")

        x = ops.cast(x, "float32")[..., 0]  # (B, S, S), 0..255
        # Tone: gamma exp(±0.4), contrast x0.7-1.3 about the face's mean.
        tone = happens(s["p_tone"], (1, 1))
        gamma = ops.exp(draw((1, 1), -0.4, 0.4) * tone)
        x = 255 * ops.power(x / 255, gamma)
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        x = ops.clip(mean + (x - mean) * (1 + draw((1, 1), -0.3, 0.3) * tone), 0, 255)
        x = x + keras.random.normal(ops.shape(x), seed=self.seed_generator) * (
            happens(s["p_noise"], (1, 1)) * draw((1, 1), *s["noise_std"]))
        # Blur then downscale-and-back, as one row/column matrix per face.
        table = ops.convert_to_tensor(self._resize_table(size))
        low = ops.cast(draw((), s["sizes"][0], s["sizes"][1] + 1), "int32")
        low = ops.where(draw(()) < s["p_resize"], low, s["sizes"][1])  # sizes[1] = no change
        resize = ops.take(table, low - s["sizes"][0], axis=0)
        sigma = ops.where(draw(()) < s["p_blur"], draw((), *s["blur_sigma"]), 1e-3)[:, None, None]
        grid = ops.arange(size, dtype="float32")
        blur = ops.exp(-ops.square(grid[:, None] - grid[None, :]) / (2 * ops.square(sigma)))
        blur = blur / ops.sum(blur, axis=2, keepdims=True)
        m = ops.matmul(resize, blur)
        x = ops.matmul(ops.matmul(m, ops.clip(x, 0, 255)), ops.transpose(m, (0, 2, 1)))
        x = ops.round(ops.clip(x, 0, 255))
        if size % 8 == 0:
            x = ops.where(happens(s["p_jpeg"], (1, 1)) > 0, self._jpeg(x, draw((), *s["quality"])),
                          x)
        return ops.cast(x[..., None], self.compute_dtype)

    def _jpeg(self, x, quality):
        """Greyscale JPEG at per-face `quality`: 8x8 DCT, quantise, dequantise, inverse DCT."""
        b, size = ops.shape(x)[0], x.shape[1]
        n = size // 8
        # libjpeg's quality scaling of the table
        scale = ops.where(quality < 50, 5000 / ops.maximum(quality, 1.0), 200 - 2 * quality)
        luma = ops.convert_to_tensor(_JPEG_LUMA.reshape(8, 8))
        table = ops.clip(ops.floor((luma[None] * scale[:, None, None] + 50) / 100), 1, 255)
        table = table[:, None, None]  # (B, 1, 1, 8, 8) against blocks (B, n, n, 8, 8)
        c = ops.convert_to_tensor(_dct_matrix().astype(np.float32))
        blocks = ops.transpose(ops.reshape(x - 128, (b, n, 8, n, 8)), (0, 1, 3, 2, 4))
        coef = ops.matmul(ops.matmul(c, blocks), ops.transpose(c))
        coef = ops.round(coef / table) * table
        blocks = ops.matmul(ops.matmul(ops.transpose(c), coef), c)
        out = ops.reshape(ops.transpose(blocks, (0, 1, 3, 2, 4)), (b, size, size))
        return ops.round(ops.clip(out + 128, 0, 255))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.settings}


def _box_matrix(size: int, length: int) -> np.ndarray:
    """(size, size) matrix B with B·v = v averaged over `length` (odd) neighbours, borders
    reflected as OpenCV's default (BORDER_REFLECT_101): cv2.filter2D with a length x 1 box."""
    out = np.zeros((size, size))
    for i in range(size):
        for k in range(-(length // 2), length // 2 + 1):
            j = abs(i + k)  # reflect 101 at both ends
            out[i, j if j < size else 2 * (size - 1) - j] += 1 / length
    return out


def _gauss_matrix(size: int, sigma: float) -> np.ndarray:
    grid = np.arange(size)
    g = np.exp(-np.square(grid[:, None] - grid[None, :]) / (2 * sigma ** 2))
    return g / g.sum(1, keepdims=True)


@keras.saving.register_keras_serializable(package="batchemo")
class FaceVideo(keras.layers.Layer):
    """What faces in talking-head and crowd video add to FaceDegrade's, drawn per face; identity
    at inference (issue 31 item 3, so brows and eyes carry weight when the mouth moves):

    - head pitch (chance `p_pitch`): the face turned `pitch_deg` degrees (a (low, high) range;
      positive = down) as evaluate.pitch_homography defines it (`evaluate --degrade pitch` is
      20 degrees);
    - lower-face occlusion (chance `p_mouth`): a box from row `mouth_top` x size to the bottom,
      columns `mouth_left` to `mouth_right` x size (ranges), filled with the face's mean grey
      (chance `p_fill`, as `evaluate --degrade mouth`) or else blurred away (Gaussian, 4 px);
    - motion blur (chance `p_motion`): a box blur over `motion_px` (odd lengths in the range)
      rows (vertical, chance `p_vertical`) or columns, OpenCV's reflected border
      (`evaluate --degrade motion` is 9 px vertical).
    """

    def __init__(self, p_pitch=0.0, pitch_deg=(-5.0, 25.0), p_mouth=0.0, mouth_top=(0.58, 0.75),
                 mouth_left=(0.12, 0.3), mouth_right=(0.7, 0.88), p_fill=0.5, p_motion=0.0,
                 motion_px=(3, 13), p_vertical=0.75, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(p_pitch=p_pitch, pitch_deg=tuple(pitch_deg), p_mouth=p_mouth,
                             mouth_top=tuple(mouth_top), mouth_left=tuple(mouth_left),
                             mouth_right=tuple(mouth_right), p_fill=p_fill, p_motion=p_motion,
                             motion_px=tuple(motion_px), p_vertical=p_vertical, seed=seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._tables = {}

    def _box_table(self, size):
        if size not in self._tables:  # identity, then each odd length in motion_px
            low, high = self.settings["motion_px"]
            self._tables[size] = np.stack([np.eye(size)] + [
                _box_matrix(size, n) for n in range(low | 1, high + 1, 2)]).astype(np.float32)
        return self._tables[size]

    def call(self, x, training=False):
        if not training:
            return x
        s = self.settings
        b, size = ops.shape(x)[0], x.shape[1]

        def draw(low=0.0, high=1.0):
            return keras.random.uniform((b, 1, 1), low, high, seed=self.seed_generator)

        x = ops.cast(x, "float32")
        if s["p_pitch"]:
            turn = ops.where(draw() < s["p_pitch"], draw(*s["pitch_deg"]), 0.0) * (math.pi / 180)
            centre, camera = (size - 1) / 2, PITCH_CAMERA * size
            grid = ops.arange(size, dtype="float32") - centre
            cols, rows = grid[None, None, :], grid[None, :, None]
            rows = rows - PITCH_SHIFT * size * ops.sin(turn) / math.sin(math.radians(20.0))
            w = ops.cos(turn) - ops.sin(turn) * rows / camera
            x = bilinear_sample(x, centre + ops.cos(turn) * cols / w, centre + rows / w)
        faces = x[..., 0]  # (B, S, S)
        if s["p_mouth"]:
            grid = ops.arange(size, dtype="float32")

            def edge(span):
                return ops.round(draw(*span) * size)

            box = ((grid[None, :, None] >= edge(s["mouth_top"]))
                   & (grid[None, None, :] >= edge(s["mouth_left"]))
                   & (grid[None, None, :] < edge(s["mouth_right"])) & (draw() < s["p_mouth"]))
            g = ops.convert_to_tensor(_gauss_matrix(size, 4.0).astype(np.float32))
            blurred = ops.matmul(ops.matmul(g, faces), ops.transpose(g))
            mean = ops.mean(faces, axis=(1, 2), keepdims=True)
            fill = ops.where(draw() < s["p_fill"], mean + ops.zeros_like(faces), blurred)
            faces = ops.where(box, fill, faces)
        if s["p_motion"]:
            table = ops.convert_to_tensor(self._box_table(size))
            n = table.shape[0] - 1
            pick = ops.cast(ops.floor(draw()[:, 0, 0] * n), "int32") + 1
            pick = ops.where(draw()[:, 0, 0] < s["p_motion"], ops.minimum(pick, n), 0)
            vertical = draw()[:, 0, 0] < s["p_vertical"]
            blur = ops.take(table, pick, axis=0)
            eye = ops.take(table, ops.zeros_like(pick), axis=0)
            along_rows = ops.where(vertical[:, None, None], blur, eye)
            along_cols = ops.where(vertical[:, None, None], eye, blur)
            faces = ops.matmul(ops.matmul(along_rows, faces), ops.transpose(along_cols, (0, 2, 1)))
        return ops.cast(faces[..., None], self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.settings}


def augmentation(augment: str) -> list:
    """The training-time augmentation layers for `TrainConfig.augment`: "gather" (FaceAugment: the
    same as one resampling) or model.augmentation's "layers" (Keras's) and "none"."""
    if augment == "gather":
        return [FaceAugment(rotation_deg=14.4, zoom=(-0.15, 0.1), shift=0.1)]
    return model_augmentation(augment)
