"""train(cfg): data → model → fit (resumable) → best checkpoint → evaluated artifact."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from batchemo._util.tf import import_keras
from batchemo.config import TrainConfig
from batchemo.errors import BatchemoError, ConfigError, DatasetError
from batchemo.model import (
    INPUT_SIZE,
    build,
    float32_copy,
    load_model,
    native_bfloat16,
    quantize,
    save_artifact,
)
from batchemo.options import validate
from batchemo.training.datasets import (
    Split,
    class_weights,
    load_fer_csv,
    load_folder,
    load_npz,
    load_votes,
    stratified_split,
)
from batchemo.training.distil import degrader, degrading, distiller, provenance
from batchemo.training.evaluate import predict_probs, score
from batchemo.training.soup import soup_weights
from batchemo.tta import MIRROR_BELOW, unsure

log = logging.getLogger(__name__)


def load_splits(cfg: TrainConfig, size: int) -> tuple[Split, Split, Split | None, str]:
    """(train, val, test or None, how validation was chosen) following the data protocol."""
    data = Path(cfg.data)
    classes = tuple(cfg.classes) or None
    if data.suffix.lower() in (".csv", ".npz"):
        is_csv = data.suffix.lower() == ".csv"
        s = load_fer_csv(data, size, classes) if is_csv else load_npz(data, size, classes)
        train = s["train"]
        if "val" in s:
            return train, s["val"], s.get("test"), ("the CSV's PublicTest rows" if is_csv else
                                                    f"the val split of {data.name}")
        train, val = stratified_split(train, cfg.val_split, cfg.seed)
        return train, val, s.get("test"), f"a stratified {cfg.val_split:.0%} of Training (seeded)"
    root = data / "train" if (data / "train").is_dir() else data
    train = load_folder(root, size, classes)
    val_dir = cfg.val or (data / "val" if (data / "val").is_dir() else None)
    test_dir = cfg.test or (data / "test" if (data / "test").is_dir() else None)
    test = load_folder(test_dir, size, train.classes, cfg.test_only) if test_dir else None
    if val_dir:
        val = load_folder(val_dir, size, train.classes, cfg.val_only)
        how = f"{val_dir}" + (f" ({cfg.val_only})" if cfg.val_only else "")
    else:
        train, val = stratified_split(train, cfg.val_split, cfg.seed)
        how = f"a stratified {cfg.val_split:.0%} of the training data (seed {cfg.seed})"
    return train, val, test, how


def _batches(keras, split: Split, batch: int, seed: int, shuffle: bool, targets=None):
    """The split as (faces, target) numpy batches, reshuffled each epoch from `seed`: a
    PyDataset, so training runs under any Keras backend (JAX on a GPU as well as TensorFlow).
    Targets are one-hot labels unless given (N, classes)."""

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.onehot = (np.eye(len(split.classes), dtype=np.float32)[split.y]
                           if targets is None else targets)
            self.order = self.rng.permutation(len(split)) if shuffle else np.arange(len(split))

        def __len__(self):
            return -(-len(split) // batch)

        def __getitem__(self, i):
            idx = self.order[i * batch:(i + 1) * batch]
            return split.x[idx], self.onehot[idx]

        def on_epoch_end(self):
            if shuffle:
                self.order = self.rng.permutation(len(split))

    return Batches()


def _best_so_far(history: Path, key: str) -> float | None:
    # ModelCheckpoint forgets its best value when a run resumes; recover it from the history CSV.
    if not history.is_file():
        return None
    with open(history) as fh:
        values = [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]
    return max(values) if values else None


def train(cfg: TrainConfig) -> dict:
    """Train, resume if interrupted, keep the best epoch on validation, write the artifact.

    Returns the artifact's metadata card (including validation and test metrics).
    """
    validate(cfg)
    if cfg.data is None:
        raise DatasetError("no training data given (--data)")
    if (cfg.keep_init or cfg.soup) and not cfg.init:
        raise ConfigError(f"{'--soup' if cfg.soup else '--keep-init'} needs the --init weights "
                          "the models started from: give --init")
    size = INPUT_SIZE[cfg.arch]
    train_s, val_s, test_s, val_how = load_splits(cfg, size)
    if len(train_s.classes) < 2:  # issue 28 item 10: trained a 1-class model, exit 0
        raise DatasetError(f"{cfg.data}: one class ({', '.join(train_s.classes)}); a classifier "
                           "needs at least two")
    log.info("train %d, val %d (%s), test %s", len(train_s), len(val_s), val_how,
             len(test_s) if test_s else "none")
    targets = label_targets(cfg, train_s)
    keras = import_keras()  # after the data's checks: a bad input is told without this wait

    if cfg.precision == "auto":
        cfg = dataclasses.replace(cfg, precision="mixed_bfloat16" if native_bfloat16()
                                  else "float32")
        log.info("training precision: %s", cfg.precision)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(cfg.precision)
    try:
        if cfg.soup:
            return _average(cfg, train_s, val_s, test_s, val_how)
        return _fit_and_save(cfg, keras, train_s, val_s, test_s, val_how, targets)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def label_targets(cfg: TrainConfig, split: Split) -> np.ndarray | None:
    """One-hot labels mixed with --soft-labels votes by --soft-weight (None: plain labels). Faces
    the votes do not cover keep their one-hot label."""
    if cfg.soft_labels is None:
        return None
    onehot = np.eye(len(split.classes), dtype=np.float32)[split.y]
    votes = load_votes(cfg.soft_labels, split)
    covered = ~np.isnan(votes[:, 0])
    log.info("soft labels: %d of %d faces have votes in %s", covered.sum(), len(split),
             cfg.soft_labels)
    if not covered.any():
        raise DatasetError(f"--soft-labels {cfg.soft_labels}: no row matches a training file")
    mixed = onehot.copy()
    mixed[covered] = (1 - cfg.soft_weight) * onehot[covered] + cfg.soft_weight * votes[covered]
    return mixed


def _fit_and_save(cfg, keras, train_s, val_s, test_s, val_how, targets) -> dict:
    work = cfg.resolved_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    history = work / "history.csv"
    best = work / "best.weights.h5"
    if not (work / "backup").exists():
        # Nothing to resume: a finished earlier run's history and best epoch must not leak in.
        history.unlink(missing_ok=True)
        best.unlink(missing_ok=True)
    # Keras backs up no random state, so a resumed run seeded as at epoch 0 would replay the first
    # epochs' shuffle order and augmentation draws: the seed moves on with the epochs done.
    done = _epochs_done(history) if history.is_file() else 0
    seed = (cfg.seed + done) % 2**32  # NumPy's seeds are 32-bit
    if done:
        log.info("resuming after %d epochs (seed %d)", done, seed)
    keras.utils.set_random_seed(seed)
    # A distilled student sees faces augmented outside it, so its teachers see the same ones.
    from batchemo.training.augment import augmentation  # Keras layers: imported with Keras

    model = build(cfg.arch, len(train_s.classes), augmentation("none" if cfg.teachers else cfg.augment))
    init_card = _start_from(model, cfg, train_s.classes) if cfg.init else None
    start_weights = model.get_weights() if cfg.init and cfg.keep_init else None
    fitted, teacher_cards = (distiller(keras, model, cfg, train_s.classes) if cfg.teachers
                             else (degrading(keras, model, cfg), None))
    steps = -(-len(train_s) // cfg.batch_size) * cfg.epochs
    lr = cfg.lr or 0.1
    if cfg.arch == "seed":
        optimizer = keras.optimizers.Adam(cfg.lr or 1e-3)
    else:
        warmup = min(steps // 10, 2 * steps // cfg.epochs)
        schedule = keras.optimizers.schedules.CosineDecay(
            lr / 10, steps - warmup, alpha=0.0, warmup_target=lr, warmup_steps=warmup)
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                         weight_decay=cfg.weight_decay)
    fitted.compile(optimizer,
                   keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                   loss_weights=[1 - cfg.distill] if cfg.teachers else None,
                   metrics=["accuracy"])

    checkpoint = keras.callbacks.ModelCheckpoint(
        str(best), monitor="val_accuracy", mode="max", save_best_only=True,
        save_weights_only=True, initial_value_threshold=_best_so_far(history, "val_accuracy"))
    # A tie keeps the later, longer-trained epoch (Keras keeps the first): on a small validation
    # split whose BatchNorm averages are still warming up, every epoch can tie at chance.
    checkpoint.monitor_op = keras.ops.greater_equal
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work / "backup")),
        checkpoint,
        keras.callbacks.CSVLogger(str(history), append=True),
        keras.callbacks.TerminateOnNaN(),  # and refuse_non_finite below says so
    ]
    started = time.time()
    fit = fitted.fit(
        _batches(keras, train_s, cfg.batch_size, seed, shuffle=True, targets=targets),
        validation_data=_batches(keras, val_s, 512, cfg.seed, shuffle=False),
        epochs=cfg.epochs,
        class_weight=class_weights(train_s.y, len(train_s.classes)) if cfg.class_weighting
        else None,
        callbacks=callbacks,
        shuffle=False,  # Batches reshuffles each epoch (seeded)
        verbose=1 if sys.stdout.isatty() else 2,
    )
    refuse_non_finite(None, fit.history.get("loss", []))
    if best.is_file():
        fitted.load_weights(str(best))  # the student shares its layers with `fitted`
    if start_weights is not None:
        mix_back(model, start_weights, cfg.keep_init)
    return finish(cfg, model, train_s, val_s, test_s, val_how, history,
                  {"initialised_from": init_card,
                   "degradation": degrader(cfg).settings if cfg.degrade else None,
                   "soft_labels": cfg.soft_labels and {"votes": str(cfg.soft_labels),
                                                       "weight": cfg.soft_weight},
                   "init_weights_kept": cfg.keep_init if start_weights is not None else None,
                   "distilled_from": teacher_cards and {"weight": cfg.distill,
                                                        "teachers": teacher_cards},
                   "train_seconds_this_call": round(time.time() - started, 1)})


def _average(cfg: TrainConfig, train_s: Split, val_s: Split, test_s: Split | None,
             val_how: str) -> dict:
    """--soup: the members' mean weights (soup.py), mixed back with --init by --keep-init, then
    finished as a trained model is."""
    model = build(cfg.arch, len(train_s.classes), [])
    init_card = _start_from(model, cfg, train_s.classes)
    start_weights = model.get_weights()
    members = [_compatible(path, cfg, train_s.classes, "--soup") for path in cfg.soup]
    model.set_weights(soup_weights(members, cfg.soup, init_card["model_id"]))
    mix_back(model, start_weights, cfg.keep_init)
    return finish(cfg, model, train_s, val_s, test_s, val_how, None,
                  {"initialised_from": init_card, "init_weights_kept": cfg.keep_init,
                   "soup_of": [provenance(m.meta, shallow=True) for m in members]})


def finish(cfg: TrainConfig, model, train_s: Split, val_s: Split, test_s: Split | None,
           val_how: str, history: Path | None, extra: dict) -> dict:
    """Trained weights → artifact: the float32 copy with its BatchNorm statistics recomputed on
    clean training faces, scored on validation (and test, if given), saved with its card."""
    # Score what ships: the float32 copy, not the (possibly bf16) training model.
    model = float32_copy(model, cfg.arch, len(train_s.classes))
    recalibrated = recalibrate_batchnorm(model, train_s.x, seed=cfg.seed)
    temperature = fit_temperature(model, val_s, cfg.tta) if cfg.calibrate else None
    meta = {
        "arch": cfg.arch,
        "classes": list(train_s.classes),
        "preprocessing": "grayscale face crop resized to input_size (INTER_AREA); /255 in-model",
        "tta": cfg.tta,
        "tta_mirror_below": MIRROR_BELOW,
        "seed": cfg.seed,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "training_data": {"source": str(cfg.data), "n_train": len(train_s),
                          "fingerprint": train_s.fingerprint(),
                          "class_counts": np.bincount(train_s.y).tolist()},
        "checkpoint_selection": f"best val_accuracy on {val_how}; never on the test split",
        "batchnorm_statistics": ("recomputed on the training faces without augmentation "
                                 f"({recalibrated} layers)" if recalibrated else None),
        "license": cfg.license,
        "limits": cfg.limits,
        "temperature": temperature and {
            "value": temperature, "fitted_on": f"{val_how} (minimum log-loss)",
            "applied": "folded into the output layer (logits / T), so run and evaluate use it"},
        "validation": score(model, val_s, tta=cfg.tta),
        "epochs_trained": _epochs_done(history) if history else None,
        **extra,
    }
    if test_s is not None:
        test = score(model, test_s, tta=cfg.tta)
        test["split"] = str(cfg.test or Path(cfg.data) / "test") + (
            f" ({cfg.test_only})" if cfg.test_only else "")
        meta["test"] = test
    refuse_non_finite(model, [])
    card = save_artifact(model, Path(cfg.out), meta)
    if cfg.int8:
        card["int8"] = quantize(card["path"], train_s.x, seed=cfg.seed)
    beside = Path(card["path"]).with_suffix(".history.csv")
    if history:
        shutil.copyfile(history, beside)
    else:  # averaged, not trained: an earlier model's history there would describe another
        beside.unlink(missing_ok=True)
    return card


def refuse_non_finite(model, losses: list[float]) -> None:
    """Write no model whose training loss or weights are not finite (issue 28 item 6: a NaN
    model, exit 0, then NaN probabilities for every face in `run`)."""
    bad_loss = next((float(v) for v in losses if not np.isfinite(v)), None)
    bad_weights = model is not None and not all(np.isfinite(w).all() for w in model.get_weights())
    if bad_loss is not None or bad_weights:
        what = f"the training loss became {bad_loss}" if bad_loss is not None else \
            "the trained weights are not finite"
        raise BatchemoError(f"training diverged ({what}); no model written. Check the data and "
                            "labels (or --soft-labels votes), or lower --lr")


def recalibrate_batchnorm(model, x: np.ndarray, batch_size: int = 256, seed: int = 0) -> int:
    """Recompute every BatchNormalization layer's moving mean and variance on the faces `x` as
    inference sees them: no augmentation, no dropout; every other batch mirrored. Returns the
    number of layers recalibrated. `model` is a chain of layers, as `build` makes.

    Augmentation resamples, and so smooths, nearly every training face, so the statistics kept
    during fit describe blurrier faces than inference gets (on FER2013 PublicTest recomputing
    them added 2.0 points of accuracy).
    """
    keras = import_keras()
    bn = keras.layers.BatchNormalization
    norms = [layer for layer in model.layers if isinstance(layer, bn)]
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    order = np.random.default_rng(seed).permutation(len(x))
    for k, start in enumerate(range(0, len(x), batch_size)):
        h = x[order[start:start + batch_size]].astype(np.float32)
        if k % 2:
            h = h[:, :, ::-1]
        for layer in norms:
            layer.momentum = k / (k + 1)  # the moving value becomes the mean over batches so far
        for layer in model.layers[1:]:
            h = layer(h, training=isinstance(layer, bn))
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    return len(norms)


def mix_back(model, start_weights: list, keep: float) -> None:
    """Set `model`'s weights to (1 - keep) x its own + keep x `start_weights` (same layers).
    Fine-tuned weights and their start lie in one basin, so the mix keeps much of both models'
    strengths (Wortsman et al., "Robust fine-tuning of zero-shot models", 2022)."""
    model.set_weights([(1 - keep) * np.asarray(w) + keep * np.asarray(w0)
                       for w, w0 in zip(model.get_weights(), start_weights, strict=True)])


def fit_temperature(model, val: Split, tta: bool) -> float:
    """The softmax temperature T minimising log-loss on `val` (TTA as `run` uses it: which faces
    are mirrored depends on T), folded into `model`'s output layer: softmax(z / T) is softmax of
    the layer with weights / T."""
    out = model.layers[-1]
    plain = np.log(np.maximum(predict_probs(model, val.x), 1e-12))
    mirror = np.log(np.maximum(predict_probs(model, val.x[:, :, ::-1]), 1e-12)) if tta else None

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def log_loss(t: float) -> float:
        p = softmax(plain / t)
        if tta:
            need = unsure(p)
            p[need] = (p[need] + softmax(mirror[need] / t)) / 2
        return float(-np.log(np.maximum(p[np.arange(len(val)), val.y], 1e-12)).mean())

    # 1.0 (no change) is on the grid: the fitted temperature never raises the loss it minimises
    grid = np.unique(np.r_[1.0, np.exp(np.linspace(np.log(0.5), np.log(3.0), 181))])
    t = float(grid[np.argmin([log_loss(g) for g in grid])])
    out.set_weights([w / t for w in out.get_weights()])
    return round(t, 4)


def _start_from(model, cfg: TrainConfig, classes: tuple[str, ...]) -> dict:
    """Copy --init's weights into `model`; returns its card (for provenance)."""
    source = _compatible(cfg.init, cfg, classes, "--init")
    model.set_weights(source.keras_model.get_weights())
    return provenance(source.meta)


def _compatible(path: Path, cfg: TrainConfig, classes: tuple[str, ...], flag: str):
    """The artifact at `path`, refused unless it has this training's architecture and classes."""
    source = load_model(path)
    arch = source.meta.get("arch")
    if arch != cfg.arch or source.classes != tuple(classes):
        raise ConfigError(f"{flag} {path}: it is a {arch!r} model of classes "
                          f"{', '.join(source.classes)}; this training is {cfg.arch!r} on "
                          f"{', '.join(classes)}")
    return source


def _epochs_done(history: Path) -> int:
    with open(history) as fh:
        return sum(1 for _ in csv.DictReader(fh))
