"""Metrics, confusion matrix and report for a model on a labelled dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import EvaluateConfig, validate
from .datasets import Split, load_fer_csv, load_folder
from .errors import DatasetError
from .model import LoadedModel, load_model


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
    """Probabilities for uint8 faces (N, s, s, 1); `tta` averages with the mirrored face."""
    keras_model = model.keras_model if isinstance(model, LoadedModel) else model
    out = []
    for i in range(0, len(x), batch_size):
        b = x[i:i + batch_size].astype(np.float32)
        p = np.asarray(keras_model.predict_on_batch(b), np.float32)
        if tta:
            p = (p + np.asarray(keras_model.predict_on_batch(b[:, :, ::-1]), np.float32)) / 2
        out.append(p)
    return np.concatenate(out) if out else np.zeros((0, keras_model.output_shape[-1]), np.float32)


def score(model, split: Split, batch_size: int = 256, tta: bool = False) -> dict:
    """metrics() of `model` on `split`, mapping the split's classes onto the model's by name."""
    model_classes = tuple(model.classes) if isinstance(model, LoadedModel) else split.classes
    missing = [c for c in split.classes if c not in model_classes]
    if missing:
        raise DatasetError(f"the data has class(es) {', '.join(missing)} the model does not know "
                           f"(model classes: {', '.join(model_classes)})")
    y_true = np.array([model_classes.index(split.classes[y]) for y in split.y], np.int64)
    probs = predict_probs(model, split.x, batch_size, tta)
    return metrics(y_true, probs.argmax(1), model_classes)


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


def evaluate(cfg: EvaluateConfig) -> dict:
    """Score a model artifact on labelled data; write the report files when `cfg.out` is set."""
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
    report = score(model, split, cfg.batch_size, cfg.tta)
    report.update(model=str(model.path), model_id=model.model_id, data=str(data), only=cfg.only,
                  tta=cfg.tta, precision=model.precision)
    if cfg.out:
        write_report(report, Path(cfg.out))
    return report
