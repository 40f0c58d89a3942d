"""Architectures, and the model artifact: `name.keras` + `name.json` metadata, saved and validated."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from batchemo._util.quiet import fd2_silenced
from batchemo._util.tf import import_keras
from batchemo.choices import ARCHS, PRECISIONS
from batchemo.config import cache_dir
from batchemo.errors import ModelError
from batchemo.output.atomic import atomic_write

DEFAULT_MODEL = Path(__file__).parent / "models" / "fer2013-default.keras"
INPUT_SIZE = {"default": 48, "seed": 128}


def build(arch: str, n_classes: int, augment: str | list = "layers"):
    """A Keras model taking (size, size, 1) uint8-range grayscale and returning class probabilities.

    Preprocessing (rescaling) and training-time augmentation are layers of the model, so inference
    needs nothing outside it; the augmentation layers are identity at inference and hold no
    weights. `augment` ('default' only): a name for `augmentation`, or the layers themselves
    (training.augment adds its own). Artifacts are saved with "layers", so they load without
    batchemo's custom layer.
    """
    keras = import_keras()
    layers = keras.layers
    size = INPUT_SIZE[arch]
    inputs = keras.Input((size, size, 1), name="face")
    x = layers.Rescaling(1 / 255.0)(inputs)
    if arch == "seed":
        # The seed document's reference model, kept as it was: no augmentation, no BN.
        x = layers.Conv2D(32, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Flatten()(x)
        x = layers.Dense(128, activation="relu")(x)
    elif arch == "default":
        for layer in augmentation(augment) if isinstance(augment, str) else augment:
            x = layer(x)
        # VGG-style: 4 stages of conv-BN-ReLU, widths doubling as the map halves (48→24→12→6→3).
        for width, convs in ((32, 2), (64, 2), (128, 3), (256, 3)):
            for _ in range(convs):
                x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
                x = layers.BatchNormalization()(x)
                x = layers.ReLU()(x)
            x = layers.MaxPooling2D()(x)
        x = layers.Flatten()(x)  # keeps where on the face a feature is (mouth vs eyes)
        x = layers.Dropout(0.5)(x)
        x = layers.Dense(256, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(0.4)(x)
    else:
        raise ModelError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"batchemo_{arch}")


def augmentation(augment: str) -> list:
    """Keras's training-time augmentation layers (flip, rotation, zoom, shift; identity at
    inference) for "layers", none for "none" (a model whose inputs are augmented outside it, as
    in distillation)."""
    layers = import_keras().layers
    if augment == "layers":
        return [layers.RandomFlip("horizontal"),
                layers.RandomRotation(0.04, fill_mode="nearest"),  # 0.04 turn = 14.4°
                layers.RandomZoom((-0.15, 0.1), fill_mode="nearest"),
                layers.RandomTranslation(0.1, 0.1, fill_mode="nearest")]
    if augment == "none":
        return []
    raise ModelError(f"unknown augmentation {augment!r}; choose layers, gather or none")


@dataclass
class LoadedModel:
    """A validated artifact: the Keras model plus what its JSON card says about it."""

    keras_model: object
    classes: tuple[str, ...]
    input_size: int
    model_id: str
    path: Path
    meta: dict = field(default_factory=dict)
    precision: str = "float32"
    int8: object = None  # precision int8: the LiteRT copy's predict (keras_model is then None)

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Class probabilities for a (N, size, size, 1) batch, one graph call (no per-call setup)."""
        if self.int8 is not None:
            return self.int8(faces)
        return np.asarray(self.keras_model.predict_on_batch(faces), dtype=np.float32)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def float32_copy(model, arch: str, n_classes: int):
    """The same weights in a fresh, uncompiled float32 model: what an artifact holds.

    A bf16 policy inside the file would slow CPUs without AMX, and the copy has no optimizer.
    """
    return rebuild(model, arch, n_classes, "float32")


def rebuild(model, arch: str, n_classes: int, policy: str, augment: str | list = "layers"):
    """`build(arch, augment=augment)` under the dtype `policy`, holding `model`'s weights
    (ValueError if the layers differ)."""
    keras = import_keras()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        copy = build(arch, n_classes, augment)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def save_artifact(model, path: Path, meta: dict) -> dict:
    """Write `path` (.keras, float32, no optimizer state) and its JSON card, each atomically.

    Returns the card (with `model_id`) plus `path`.
    """
    keras = import_keras()
    path = Path(path).with_suffix(".keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = float32_copy(model, meta["arch"], len(meta["classes"]))
    with atomic_write(path, ".tmp.keras") as tmp:  # Keras insists on the extension
        clean.save(tmp)
    card = dict(meta)
    card.update(
        format="batchemo-model/1",
        sha256=file_digest(path),
        input_size=int(clean.input_shape[1]),
        input_color="grayscale",
        input_range="uint8 values 0-255 (float dtype accepted); rescaling is inside the model",
        n_params=int(clean.count_params()),
        versions={"keras": keras.__version__, "python": platform.python_version(),
                  **({"tensorflow": _tf_version()} if _tf_version() else {})},
    )
    card["model_id"] = f"{path.stem}-{card['sha256'][:12]}"
    with atomic_write(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    return {**card, "path": str(path)}


def quantize(path: Path | str, faces: np.ndarray, n: int = 500, seed: int = 0) -> dict:
    """Write the artifact's int8 copy beside it (`name.int8.tflite`: weights and activations
    int8, float32 in and out, for `--precision int8`) with activation ranges from `n` of `faces`
    (training faces, drawn with `seed`), and record it in the card. Returns the card entry."""
    import tensorflow as tf  # noqa: PLC0415

    model = load_model(path)
    pick = np.random.default_rng(seed).choice(len(faces), min(n, len(faces)), replace=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model.keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([faces[i][None].astype(np.float32)] for i in pick)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.float32
    with fd2_silenced(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # the converter's chatter, and its warning that a float32 input has no int8 statistics
        warnings.filterwarnings("ignore", "Statistics for quantized inputs")
        flat = converter.convert()
    out = model.path.with_name(f"{model.path.stem}.int8.tflite")
    with atomic_write(out) as tmp:
        tmp.write_bytes(flat)
    entry = {"file": out.name, "sha256": file_digest(out),
             "calibration": f"{len(pick)} faces drawn with seed {seed}",
             "converter": f"tensorflow {tf.__version__}"}
    card_path = model.path.with_suffix(".json")
    with atomic_write(card_path) as tmp:
        tmp.write_text(json.dumps({**model.meta, "int8": entry}, indent=2) + "\n")
    return entry


def int8_file(path: Path, meta: dict) -> Path | None:
    """The int8 copy that the card of the artifact at `path` names, if it names one."""
    return path.with_name(meta["int8"]["file"]) if meta.get("int8") else None


def _int8_predict(path: Path, meta: dict):
    """predict(faces) through the card's int8 copy of the artifact at `path` (LiteRT)."""
    entry, file = meta.get("int8"), int8_file(path, meta)
    if file is None or not file.is_file():
        raise ModelError(f"{path}: no int8 copy (make one with batchemo.model.quantize or "
                         "`batchemo train --int8`); use --precision float32 or auto")
    if entry.get("sha256") != file_digest(file):
        raise ModelError(f"{file}: checksum does not match its card (replaced or corrupted)")
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    with fd2_silenced():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
        interp = Interpreter(model_path=str(file), num_threads=os.cpu_count() or 1)
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    size, n_classes = int(meta["input_size"]), len(meta["classes"])
    if tuple(inp["shape"][1:]) != (size, size, 1) or out["shape"][-1] != n_classes:
        raise ModelError(f"{file}: takes {tuple(inp['shape'][1:])} and gives {out['shape'][-1]} "
                         f"classes; the card says {size}x{size}x1 and {n_classes}")
    shape = [tuple(inp["shape"])]

    def predict(faces: np.ndarray) -> np.ndarray:
        if shape[0] != faces.shape:  # batches keep one size in run; resize when it changes
            interp.resize_tensor_input(inp["index"], faces.shape)
            interp.allocate_tensors()
            shape[0] = faces.shape
        interp.set_tensor(inp["index"], np.ascontiguousarray(faces, np.float32))
        interp.invoke()
        probs = interp.get_tensor(out["index"])  # steps of 1/256: their sum is off by up to 1 %
        return probs / probs.sum(axis=1, keepdims=True)
    return predict


def _tf_version() -> str | None:
    try:
        import tensorflow as tf  # noqa: PLC0415
    except ImportError:
        return None
    return tf.__version__


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), per Linux's flags.
    BATCHEMO_NO_BF16=1 says no, to reproduce a CPU without it."""
    if os.environ.get("BATCHEMO_NO_BF16", "") not in ("", "0"):
        return False
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set[str]:
    m = re.search(r"^flags\s*:(.*)$", _read_cpuinfo(), re.M)
    return set(m.group(1).split()) if m else set()


BF16_MIN_SPEEDUP = 1.25  # auto keeps float32 unless bf16 is clearly faster (timings are noisy)


def _bfloat16_pays_off(f32, bf16, size: int, arch: str) -> bool:
    """auto's choice for this CPU: one timing of both models at batch 64, cached per machine.

    CPUs with the bf16 flag differ (bf16 inference was 1.65x faster on this project's, bf16
    training slower than float32 on another); the cache keeps the choice, and so the settings
    id, stable from run to run. Delete the file to measure again.
    """
    keras = import_keras()
    cpu = re.search(r"^model name\s*:(.*)$", _read_cpuinfo(), re.M)
    key = (f"{cpu.group(1).strip() if cpu else '?'}|{os.cpu_count()} cpus|keras "
           f"{keras.__version__}|tf {_tf_version()}|{arch}")
    cache = cache_dir() / "precision.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        x = np.zeros((64, size, size, 1), np.float32)
        known[key] = _median_seconds(f32, x) / _median_seconds(bf16, x)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1) + "\n")
            os.replace(tmp, cache)
        except OSError:
            pass  # measured again next time
    return known[key] >= BF16_MIN_SPEEDUP


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _median_seconds(km, x: np.ndarray, calls: int = 5) -> float:
    km.predict_on_batch(x)  # traces the graph
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        km.predict_on_batch(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _bfloat16_copy(km, arch: str, n_classes: int):
    """Same weights in a mixed_bfloat16 model (bf16 compute, float32 variables and softmax), or
    None where the artifact's layers differ from today's `build` (an older artifact)."""
    try:
        return rebuild(km, arch, n_classes, "mixed_bfloat16")
    except ValueError:
        return None


def load_model(path: Path | str | None = None, precision: str = "float32") -> LoadedModel:
    """Load and validate an artifact (default: the shipped FER2013 model).

    `precision` is the inference precision: float32 (the artifact as saved), bfloat16, int8 (the
    card's int8 copy, through LiteRT), or auto: bfloat16 where the CPU has it natively and it
    measured at least BF16_MIN_SPEEDUP faster here (`_bfloat16_pays_off`); on a CPU without
    native bf16, int8 if the artifact has an int8 copy (whole runs took a third less time than
    float32 there, with the same accuracy within noise); else float32. bf16 applies to
    batchemo's own architectures only.

    Refuses, with a ModelError saying why, an artifact without its JSON card, whose file does not
    match the card's checksum, or whose output size/input shape disagree with the card.
    """
    path = Path(path) if path else DEFAULT_MODEL
    if path.suffix != ".keras":
        path = path.with_suffix(".keras")
    card_path = path.with_suffix(".json")
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if not card_path.is_file():
        raise ModelError(f"{card_path}: metadata card missing; a batchemo model is a .keras file "
                         "plus its .json card (written by `batchemo train`)")
    try:
        meta = json.loads(card_path.read_text())
        classes = tuple(meta["classes"])
        size = int(meta["input_size"])
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{card_path}: unreadable metadata ({e})") from None
    if meta.get("sha256") and meta["sha256"] != file_digest(path):
        raise ModelError(f"{path}: checksum does not match its card {card_path.name} "
                         "(the .keras file was replaced or corrupted)")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    model_id = meta.get("model_id") or f"{path.stem}-{file_digest(path)[:12]}"
    if precision == "auto" and meta.get("int8") and not native_bfloat16():
        precision = "int8"
    if precision == "int8":  # LiteRT alone: TensorFlow is not imported
        return _probed(LoadedModel(None, classes, size, model_id, path, meta, "int8",
                                   _int8_predict(path, meta)))
    keras = import_keras()
    try:
        km = keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad zip/config
        raise ModelError(f"{path}: cannot load model ({type(e).__name__}: {e})") from None
    if tuple(km.input_shape[1:]) != (size, size, 1):
        raise ModelError(f"{path}: input shape {km.input_shape[1:]} but card says {size}x{size}x1")
    if km.output_shape[-1] != len(classes):
        raise ModelError(f"{path}: {km.output_shape[-1]} outputs but card lists {len(classes)} "
                         f"classes ({', '.join(classes)})")
    arch = meta.get("arch")
    fast = None
    if arch in ARCHS and (precision == "bfloat16" or (precision == "auto" and native_bfloat16())):
        fast = _bfloat16_copy(km, arch, len(classes))
        if fast is not None and precision == "auto" and not _bfloat16_pays_off(km, fast, size,
                                                                                arch):
            fast = None
    # bf16 is only a speed-up: never a reason to refuse a model
    precision = "bfloat16" if fast is not None else "float32"
    return _probed(LoadedModel(km if fast is None else fast, classes, size, model_id, path, meta,
                               precision))


def _probed(model: LoadedModel) -> LoadedModel:
    """`model`, once its probabilities for a fixed probe face are finite (issue 28 item 6: a
    model with NaN weights passed every check and labelled every face "angry"). One batch."""
    yy, xx = np.mgrid[:model.input_size, :model.input_size] / model.input_size
    face = 128 + 60 * np.cos(6 * xx) * np.sin(5 * yy)  # smooth shading, fixed
    x = face[None, ..., None].astype(np.float32)
    # Keras: one eager call (0.3 s here), not predict_on_batch, which traces a graph for it
    probs = model.int8(x) if model.int8 is not None else \
        np.asarray(model.keras_model(x, training=False))
    if not np.isfinite(probs).all():
        raise ModelError(f"{model.path}: gives non-finite probabilities ({model.precision}); the "
                         "model is broken (retrain it, or use another)")
    return model
