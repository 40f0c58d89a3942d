"""Metrics, confusion matrix and report for a model on a labelled dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from batchemo.config import EvaluateConfig
from batchemo.errors import DatasetError
from batchemo.model import LoadedModel, load_model
from batchemo.options import validate
from batchemo.training.datasets import Split, load_fer_csv, load_folder, majority_labels
from batchemo.tta import MIRROR_BELOW, mirror_below, predict_tta


def metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    confusion[i][j] counts faces of true class i predicted as j. A class never predicted has
    precision 0 (and F1 0), as in scikit-learn's zero_division=0.
    """
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(support[i])}
                      for i, c in enumerate(classes)},
        "classes": list(classes),
        "confusion": cm.tolist(),
    }


def predict_probs(model, x: np.ndarray, batch_size: int = 256, tta: bool = False) -> np.ndarray:
    """Probabilities for uint8 faces (N, s, s, 1); `tta` as `run` applies it (predict_tta): the
    artifact's threshold for a LoadedModel, today's for a Keras model being trained."""
    loaded = isinstance(model, LoadedModel)
    below = mirror_below(model.meta) if loaded else MIRROR_BELOW
    predict = model.predict if loaded else (
        lambda v: np.asarray(model.predict_on_batch(v), np.float32))
    out = []
    for i in range(0, len(x), batch_size):
        out.append(predict_tta(predict, x[i:i + batch_size].astype(np.float32), tta, below))
    n_classes = len(model.classes) if loaded else model.output_shape[-1]
    return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no infinity: None = every face mirrored


def score(model, split: Split, batch_size: int = 256, tta: bool = False) -> dict:
    """metrics() of `model` on `split`, mapping the split's classes onto the model's by name."""
    model_classes = tuple(model.classes) if isinstance(model, LoadedModel) else split.classes
    missing = [c for c in split.classes if c not in model_classes]
    if missing:
        raise DatasetError(f"the data has class(es) {', '.join(missing)} the model does not know "
                           f"(model classes: {', '.join(model_classes)})")
    y_true = np.array([model_classes.index(split.classes[y]) for y in split.y], np.int64)
    probs = predict_probs(model, split.x, batch_size, tta)
    return {**metrics(y_true, probs.argmax(1), model_classes),
            "ece": calibration_error(probs, y_true),
            "predicted_share": dict(zip(model_classes, np.round(np.bincount(
                probs.argmax(1), minlength=len(model_classes)) / max(len(probs), 1), 4).tolist(),
                strict=True))}


def calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: |accuracy − mean confidence| over `bins` equal-width bins of
    top-class confidence, weighted by the faces in each bin."""
    confidence, correct = probs.max(1), probs.argmax(1) == y_true
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).sum()
              for b in range(bins) if (which == b).any())
    return float(gap / max(len(probs), 1))


def _plot_confusion(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(report["confusion"], float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    classes = report["classes"]
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {report['accuracy']:.1%}, macro-F1 {report['macro_f1']:.3f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict, out: Path) -> None:
    """report.json, confusion.csv (rows = true), per_class.csv and confusion.png in `out`."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    classes = report["classes"]
    pd.DataFrame(report["confusion"], index=pd.Index(classes, name="true"),
                 columns=classes).to_csv(out / "confusion.csv")
    pd.DataFrame(report["per_class"]).T.rename_axis("class").to_csv(out / "per_class.csv")
    _plot_confusion(report, out / "confusion.png")


# The video conditions of issue 31, defined on the 48x48 face (scaled to other sizes).
MOUTH_ROWS, MOUTH_COLS = (32, 48), (10, 38)  # rows 32-47, columns 10-37: mouth and chin
MOTION_PX = 9  # vertical box blur: cv2.filter2D with a 9x1 kernel of 1/9
PITCH_DEG = 20.0  # a face turned this far down (pitch_homography)
PITCH_CAMERA = 2.5  # camera distance in face heights (perspective of the turned face)
PITCH_SHIFT = 0.1  # content moves down by this share of the face per 20 degrees


def pitch_homography(size: int, degrees: float = PITCH_DEG) -> np.ndarray:
    """3x3 map from output pixel (col, row, 1) to the source pixel it samples, for a face turned
    `degrees` down (positive; negative = up), seen by a camera in front of it.

    The face is a plane turned about its horizontal mid-line, its chin end away from a camera
    PITCH_CAMERA face heights away: the face shortens vertically by about cos(degrees), its chin
    end a little narrower than its brow end (perspective). Its content then moves down by
    PITCH_SHIFT x size x sin(degrees) / sin(20 deg) (4.8 px at 48 px and 20 deg), as a face box
    holds more forehead and less chin on a lowered head. Output pixel (u, v) about the centre c,
    x = u - c, y = v - c - shift, samples the source at c + (cos·x, y) / (cos - sin·y / f).
    """
    t = np.radians(degrees)
    c, f = (size - 1) / 2, PITCH_CAMERA * size
    shift = PITCH_SHIFT * size * np.sin(t) / np.sin(np.radians(20.0))
    to_centre = np.array([[1, 0, -c], [0, 1, -c - shift], [0, 0, 1]])
    turn = np.array([[np.cos(t), 0, 0], [0, 1, 0], [0, -np.sin(t) / f, np.cos(t)]])
    back = np.array([[1, 0, c], [0, 1, c], [0, 0, 1]])
    return back @ turn @ to_centre


def _degrade_face(face: np.ndarray, step: str) -> np.ndarray:
    import cv2

    size = face.shape[0]
    if step.endswith("px"):
        low = cv2.resize(face, (int(step[:-2]),) * 2, interpolation=cv2.INTER_AREA)
        return cv2.resize(low, (size, size), interpolation=cv2.INTER_LINEAR)
    if step.startswith("jpeg"):
        _, data = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, int(step[4:])])
        return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if step == "mouth":  # the mouth and chin covered with the face's mean grey
        (r0, r1), (c0, c1) = ([round(v * size / 48) for v in span]
                              for span in (MOUTH_ROWS, MOUTH_COLS))
        out = face.copy()
        out[r0:r1, c0:c1] = np.round(face.mean())
        return out
    if step == "motion":  # vertical motion blur (a 9-row box; OpenCV's reflected border)
        return cv2.filter2D(face, -1, np.full((MOTION_PX, 1), 1 / MOTION_PX, np.float32))
    if step == "pitch":
        return cv2.warpPerspective(face, pitch_homography(size), (size, size),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REPLICATE)
    raise DatasetError(f"unknown degradation {step!r} (expected e.g. 16px, jpeg30, mouth, motion "
                       "or pitch)")


def degrade(x: np.ndarray, condition: str) -> np.ndarray:
    """Faces (N, S, S, 1) uint8 degraded as `condition` says, steps joined by '+': 'Npx'
    downscales each to NxN (INTER_AREA) and back (INTER_LINEAR); 'jpegQ' encodes and decodes it
    as JPEG at quality Q (OpenCV); 'mouth' fills rows 32-47, columns 10-37 (of 48) with the
    face's mean grey; 'motion' blurs it vertically over 9 px (cv2.filter2D, a 9x1 kernel of 1/9);
    'pitch' turns it 20 degrees down (pitch_homography)."""
    out = x[..., 0].copy()
    for step in condition.split("+"):
        for i, face in enumerate(out):
            out[i] = _degrade_face(face, step)
    return out[..., None]


def _votes_for(cfg: EvaluateConfig) -> Path:
    if cfg.votes:
        return Path(cfg.votes)
    for folder in (Path(cfg.data), *Path(cfg.data).resolve().parents[:2]):
        if (folder / "ferplus_votes.csv").is_file():
            return folder / "ferplus_votes.csv"
    raise DatasetError(f"--labels ferplus: no ferplus_votes.csv in {cfg.data} or above it; "
                       "give one with --votes")


def evaluate(cfg: EvaluateConfig) -> dict:
    """Score a model artifact on labelled data (clean, then under each --degrade condition);
    write the report files when `cfg.out` is set."""
    validate(cfg)
    if cfg.data is None:
        raise DatasetError("no data given (--data)")
    model = load_model(cfg.model, cfg.precision)
    data = Path(cfg.data)
    if data.suffix.lower() == ".csv":
        splits = load_fer_csv(data, model.input_size)
        split = splits.get("test") or splits["train"]
    else:
        split = load_folder(data, model.input_size, only=cfg.only)
    left_out = 0
    if cfg.labels == "ferplus":
        y = majority_labels(_votes_for(cfg), split)
        left_out = int((y < 0).sum())
        split = Split(split.x[y >= 0], y[y >= 0], split.classes,
                      [n for n, k in zip(split.names, y >= 0, strict=True) if k])
    report = score(model, split, cfg.batch_size, cfg.tta)
    report["degraded"] = {}
    for condition in cfg.degrade:
        r = score(model, Split(degrade(split.x, condition), split.y, split.classes, split.names),
                  cfg.batch_size, cfg.tta)
        growth = {c: r["predicted_share"][c] / report["predicted_share"][c]
                  for c in r["predicted_share"] if report["predicted_share"][c] > 0}
        top = max(growth, key=growth.get)
        report["degraded"][condition] = {
            "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "ece": r["ece"],
            "kept": r["accuracy"] / report["accuracy"] if report["accuracy"] else 0.0,
            "predicted_share": r["predicted_share"],
            "largest_share_growth": {"class": top, "ratio": round(growth[top], 3)}}
    report.update(model=str(model.path), model_id=model.model_id, data=str(data), only=cfg.only,
                  tta=cfg.tta, tta_mirror_below=_finite(mirror_below(model.meta)) if cfg.tta
                  else None, precision=model.precision, labels=cfg.labels,
                  left_out=left_out)
    if cfg.out:
        write_report(report, Path(cfg.out))
    return report
