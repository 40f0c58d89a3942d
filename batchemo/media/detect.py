"""Face detectors behind one interface: BlazeFace (MediaPipe, short and full range) and Haar."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from batchemo._util.quiet import fd2_silenced
from batchemo.choices import DETECTORS
from batchemo.errors import ConfigError
from batchemo.records import FaceBox

DEFAULT_DETECTOR = "blazeface-full"
MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "detectors"

# Haar runs on, and BlazeFace tiles are cut from, a copy with at most this long side (boxes are
# mapped back): more pixels only cost time for faces of the sizes the model handles.
_MAX_SIDE = 1280
# Small faces: the full-range model needs a face ~20 px wide in its 192 px input, i.e. ~10% of
# the frame. So frames whose long side exceeds _TILE_FROM tiles (after the _MAX_SIDE cap) are
# also detected in overlapping tiles of this many pixels (faces from ~40 px). 640x360 video
# stays one model call; a 1000 px photo takes 13 (1 + 12 tiles), a 1080p frame 16.
_TILE = {"blazeface-full": 384}
_TILE_FROM = 2.0
_NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold
# MediaPipe clips raw logits at 100; 80 keeps exp() inside float32.
_LOGIT_LIMIT = 80.0

# name -> (model file, input size, ((anchor stride, anchors per cell), ...)). Anchors follow
# MediaPipe's ssd_anchors_calculator: layers sharing a stride share one grid, and each layer adds
# 2 anchors (short range, interpolated_scale_aspect_ratio=1) or 1 (full range, ratio 0). All
# anchors have size 1, so only their centres matter.
_BLAZEFACE = {
    "blazeface": ("face_detection_short_range.tflite", 128, ((8, 2), (16, 6))),
    "blazeface-full": ("face_detection_full_range.tflite", 192, ((4, 1),)),
}


class Detector(Protocol):
    name: str
    # The last image detect() saw, shrunk whole to the model's input (None where it made none):
    # shot-cut signatures start from it instead of resizing the full frame again.
    thumbnail: np.ndarray | None

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]: ...


def get_detector(
    name: str = DEFAULT_DETECTOR, min_face: int = 20, score_threshold: float = 0.5
) -> Detector:
    """Build a detector by name (one of DETECTORS).

    `detect(image)` takes an upright H×W×3 uint8 BGR image (gray H×W is accepted too) and returns
    FaceBoxes in its pixels, sorted left to right, narrower than `min_face` pixels and weaker than
    `score_threshold` dropped. A detector holds an interpreter: use one per thread or process.
    """
    if name in _BLAZEFACE:
        return BlazeFace(name, min_face, score_threshold)
    if name == "haar":
        return Haar(min_face)
    raise ConfigError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}")


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def _downscaled(image: np.ndarray) -> tuple[np.ndarray, float]:
    # (image with long side <= _MAX_SIDE, factor mapping its pixels back to the input's)
    h, w = image.shape[:2]
    if max(h, w) <= _MAX_SIDE:
        return image, 1.0
    s = _MAX_SIDE / max(h, w)
    # max(1, …): a long thin strip (16×50000) would scale to a side of 0, which cv2 refuses.
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    return small, max(h, w) / max(small.shape[:2])


def _to_faceboxes(
    xyxy: np.ndarray, scores: np.ndarray, landmarks: np.ndarray | None,
    width: int, height: int, min_face: int,
) -> list[FaceBox]:
    # Sorted by x, then y, then score, so that face_index is deterministic.
    x0 = np.clip(np.round(xyxy[:, 0]), 0, width).astype(int)
    y0 = np.clip(np.round(xyxy[:, 1]), 0, height).astype(int)
    x1 = np.clip(np.round(xyxy[:, 2]), 0, width).astype(int)
    y1 = np.clip(np.round(xyxy[:, 3]), 0, height).astype(int)
    # min_face applies to the detected width, before clipping cuts a border face down.
    keep = np.flatnonzero(((xyxy[:, 2] - xyxy[:, 0]) >= min_face) & (x1 > x0) & (y1 > y0))
    keep = keep[np.lexsort((-scores[keep], y0[keep], x0[keep]))]
    return [
        FaceBox(int(x0[i]), int(y0[i]), int(x1[i] - x0[i]), int(y1[i] - y0[i]),
                float(scores[i]), None if landmarks is None else landmarks[i].copy())
        for i in keep
    ]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(
    xyxy: np.ndarray, scores: np.ndarray, points: np.ndarray, iou: float = _NMS_IOU
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # MediaPipe's weighted NMS: each cluster (IoU > iou with its best box) becomes the
    # score-weighted mean of its boxes and points, with the best score; steadier boxes than
    # plain NMS across video frames.
    order = np.argsort(-scores, kind="stable")
    xyxy, scores, points = xyxy[order], scores[order], points[order]
    out_b, out_s, out_p = [], [], []
    while len(scores):
        members = _iou(xyxy[0], xyxy) > iou
        members[0] = True
        wts = scores[members, None]
        out_b.append((xyxy[members] * wts).sum(0) / wts.sum())
        out_p.append((points[members] * wts[:, :, None]).sum(0) / wts.sum())
        out_s.append(scores[0])
        xyxy, scores, points = xyxy[~members], scores[~members], points[~members]
    if not out_s:
        return xyxy, scores, points
    return np.array(out_b), np.array(out_s), np.array(out_p)


def _open_tflite(path: Path):
    # Returns run(NHWC float32 batch of 1) -> (regressors (N, 16), logits (N,)). LiteRT
    # (ai-edge-litert, if installed) runs these models ~1.8x faster than OpenCV's TFLite
    # importer (which needs no extra dependency); both agree within 2e-4.
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None
    if Interpreter is not None:
        # One thread per interpreter: the pipeline parallelises across worker processes.
        # LiteRT's C++ prints "INFO: Created TensorFlow Lite XNNPACK delegate" to fd 2 once
        # per process, and cron mails any stderr output.
        with fd2_silenced():
            interp = Interpreter(model_path=str(path), num_threads=1)
            interp.allocate_tensors()
        inp = interp.get_input_details()[0]["index"]
        outs = sorted(interp.get_output_details(), key=lambda d: -d["shape"][-1])
        reg_i, cls_i = outs[0]["index"], outs[1]["index"]

        def run_litert(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            interp.set_tensor(inp, x)
            interp.invoke()
            return interp.get_tensor(reg_i)[0], interp.get_tensor(cls_i)[0, :, 0]

        return run_litert
    net = cv2.dnn.readNetFromTFLite(str(path))
    names = net.getUnconnectedOutLayersNames()

    def run_cv2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # OpenCV's importer wants NCHW even though the .tflite graph is NHWC.
        net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        reg, cls = sorted(net.forward(names), key=lambda o: -o.shape[-1])
        return reg[0], cls[0, :, 0]

    return run_cv2


class BlazeFace:
    """MediaPipe BlazeFace; landmarks (6, 2): the person's right eye, left eye, nose tip, mouth
    centre, right ear tragion, left ear tragion (in a frontal face the right eye has smaller x)."""

    def __init__(self, name: str, min_face: int = 20, score_threshold: float = 0.5):
        file, size, grids = _BLAZEFACE[name]
        self.name, self.min_face, self.size = name, min_face, size
        # Threshold on logits, so sigmoid runs only on the few candidates.
        p = min(max(score_threshold, 1e-6), 1 - 1e-6)
        self._min_logit = float(np.log(p / (1 - p)))
        self._run = _open_tflite(MODEL_DIR / file)
        centres = []
        for stride, per_cell in grids:
            c = (np.arange(size // stride, dtype=np.float32) + 0.5) * stride
            xx, yy = np.meshgrid(c, c)  # y outer, x inner: the model's anchor order
            centres.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), per_cell, axis=0))
        self._anchors = np.concatenate(centres)  # (N, 2) in model input pixels
        self._canvas = np.zeros((size, size, 3), np.uint8)
        self._rgb = np.empty_like(self._canvas)
        self._input = np.empty((1, size, size, 3), np.float32)
        self.thumbnail = None
        self.tile = _TILE.get(name, 0)

    def _model_input(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, float, int, int]:
        # Letterbox into the model's square input: (NHWC float32 in [-1, 1], x scale, y scale,
        # x pad, y pad).
        h, w = image_bgr.shape[:2]
        s = self.size / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        self._canvas[:] = 0  # black bars, as MediaPipe pads
        self.thumbnail = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
        self._canvas[py:py + nh, px:px + nw] = self.thumbnail
        return self._tensor(), nw / w, nh / h, px, py

    def _tensor(self) -> np.ndarray:
        # RGB in [-1, 1], into buffers reused across frames: the same float32 values as
        # canvas[..., ::-1].astype(float32) * (1 / 127.5) - 1, in a sixteenth of the time.
        cv2.cvtColor(self._canvas, cv2.COLOR_BGR2RGB, dst=self._rgb)
        np.multiply(self._rgb, np.float32(1 / 127.5), out=self._input[0], dtype=np.float32)
        return np.subtract(self._input, np.float32(1), out=self._input)

    def _infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # One model call: (xyxy, scores, points) in model input pixels after NMS.
        reg, logits = self._run(x)
        idx = np.flatnonzero(logits >= self._min_logit)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[idx], -_LOGIT_LIMIT, _LOGIT_LIMIT)))
        r, a = reg[idx].astype(np.float64), self._anchors[idx]
        centre, half = r[:, 0:2] + a, r[:, 2:4] / 2
        xyxy = np.concatenate([centre - half, centre + half], axis=1)
        points = r[:, 4:].reshape(len(idx), (r.shape[1] - 4) // 2, 2) + a[:, None, :]
        return _weighted_nms(xyxy, scores, points)

    def _whole(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, sx, sy, px, py = self._model_input(image)
        xyxy, scores, points = self._infer(x)
        return (xyxy - (px, py, px, py)) / (sx, sy, sx, sy), scores, (points - (px, py)) / (sx, sy)

    def _tiles(self, image: np.ndarray):
        # Detections from model-sized tiles of the image scaled by size/tile (capped at
        # _MAX_SIDE before that), so that small faces reach the model big enough.
        h, w = image.shape[:2]
        s = self.size / self.tile * min(1.0, _MAX_SIDE / max(h, w))
        scaled = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),  # as _downscaled
                            interpolation=cv2.INTER_AREA)
        sh, sw = scaled.shape[:2]
        sx, sy, t = sw / w, sh / h, self.size
        for x0, y0 in _tile_origins(sw, sh, t):
            tile = scaled[y0:y0 + t, x0:x0 + t]
            th, tw = tile.shape[:2]
            self._canvas[:] = 0
            self._canvas[:th, :tw] = tile
            xyxy, sc, pts = self._infer(self._tensor())
            # A box touching an inner tile edge is a cut face: its whole is in a neighbour.
            cut = (((xyxy[:, 0] < 1) & (x0 > 0)) | ((xyxy[:, 1] < 1) & (y0 > 0))
                   | ((xyxy[:, 2] > tw - 1) & (x0 + tw < sw))
                   | ((xyxy[:, 3] > th - 1) & (y0 + th < sh)))
            yield ((xyxy[~cut] + (x0, y0, x0, y0)) / (sx, sy, sx, sy), sc[~cut],
                   (pts[~cut] + (x0, y0)) / (sx, sy))

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        image = _as_bgr(image_bgr)
        h, w = image.shape[:2]
        # The letterbox already shrinks any frame to the model input: no _downscaled() here.
        found = [self._whole(image)]
        if self.tile and min(max(h, w), _MAX_SIDE) > _TILE_FROM * self.tile:
            found.extend(self._tiles(image))
            xyxy, scores, points = (np.concatenate(a) for a in zip(*found, strict=True))
            found = [_weighted_nms(xyxy, scores, points)]
        return _to_faceboxes(*found[0], w, h, self.min_face)


def _tile_origins(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    # Top-left corners of square tiles covering the image, overlapping by at least tile/3.
    def starts(n: int) -> np.ndarray:
        if n <= tile:
            return np.zeros(1, int)
        k = int(np.ceil((n - tile) / (tile - tile // 3))) + 1
        return np.round(np.linspace(0, n - tile, k)).astype(int)
    return [(int(x), int(y)) for y in starts(height) for x in starts(width)]


class Haar:
    """OpenCV's frontal-face Haar cascade (score 1.0, no landmarks)."""

    name = "haar"
    thumbnail = None

    def __init__(self, min_face: int = 20):
        data = getattr(cv2, "data", None)
        if not hasattr(cv2, "CascadeClassifier") or data is None:
            raise ConfigError(
                f"detector 'haar' needs OpenCV 4.x (CascadeClassifier and its cascades); "
                f"OpenCV {cv2.__version__} lacks them: use 'blazeface-full' or 'blazeface'")
        self.min_face = min_face
        self._cascade = cv2.CascadeClassifier(
            str(Path(data.haarcascades) / "haarcascade_frontalface_default.xml"))
        if self._cascade.empty():
            raise ConfigError("OpenCV's haarcascade_frontalface_default.xml could not be loaded")

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        h, w = image_bgr.shape[:2]
        small, back = _downscaled(image_bgr)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 and small.shape[2] == 3 \
            else small.reshape(small.shape[:2])
        side = max(1, round(self.min_face / back))
        rects = self._cascade.detectMultiScale(gray, 1.1, 5, minSize=(side, side))
        if not len(rects):
            return []
        xyxy = np.asarray(rects, np.float64) * back
        xyxy[:, 2:] += xyxy[:, :2]
        return _to_faceboxes(xyxy, np.ones(len(xyxy)), None, w, h, self.min_face)
