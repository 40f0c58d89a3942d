"""Configs: each option's default, bound and help text live here, once; the CLI is generated from them.

Precedence: command-line flag, then job file (TOML), then the default below.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


def opt(default: Any, help: str, *, short: str | None = None, choices: tuple | None = None,
        min: float | None = None, max: float | None = None, multiple: bool = False) -> Any:
    """A config field with its CLI help, bounds and choices attached as metadata."""
    meta = {"help": help, "short": short, "choices": choices, "min": min, "max": max,
            "multiple": multiple}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "batchemo"


@dataclass
class TrainConfig:
    data: Path = opt(None, "Training data: a folder-per-class tree (root/<class>/*, or root/train/"
                     "<class> with optional val/ and test/), the FER2013 CSV, or an .npz written "
                     "by batchemo.datasets.save_npz.", short="-d")
    out: Path = opt(Path("model.keras"), "Where to write the model artifact (.keras + .json card).",
                    short="-o")
    arch: str = opt("default", "Architecture: 'default' (48x48 VGG-BN) or 'seed' (the seed "
                    "document's 128x128 two-conv net, a reference baseline).",
                    choices=("default", "seed"))
    classes: list[str] = opt([], "Train on these classes only, in this order (comma-separated, "
                             "e.g. angry,disgust,fear,happy,sad,surprise). Default: all found.")
    val: Path | None = opt(None, "Validation folder tree for checkpoint choice and early stopping "
                           "(default: data's val/ if present, else a stratified part of train).")
    val_only: str | None = opt(None, "Use only validation files whose name matches this glob, "
                               "e.g. 'PublicTest_*'.")
    val_split: float = opt(0.1, "Fraction of each training class held out for validation when "
                           "no validation folder is given.", min=0.01, max=0.5)
    test: Path | None = opt(None, "Test folder tree, scored once at the end and recorded in the "
                            "card; it never chooses anything (default: data's test/ if present).")
    test_only: str | None = opt(None, "Score only test files whose name matches this glob, e.g. "
                                "'PrivateTest_*'.")
    init: Path | None = opt(None, "Start from the weights of this artifact (same architecture and "
                            "classes) to continue or fine-tune it; its card is recorded in the "
                            "new one.")
    teachers: list[Path] = opt([], "Distil from these artifacts (same classes and input size; "
                               "repeat for several): the student learns from their mean "
                               "prediction on the same augmented face, mixed with the labels "
                               "by --distill. They run frozen, beside the student.",
                               multiple=True)
    distill: float = opt(0.75, "With --teachers: the teachers' share of the training target "
                         "(the rest is the smoothed label).", min=0.0, max=1.0)
    epochs: int = opt(45, "Training epochs (the cosine learning-rate schedule spans them all).",
                      min=1, max=10000)
    batch_size: int = opt(128, "Training batch size.", min=1, max=4096)
    lr: float | None = opt(None, "Peak learning rate (default: 0.1 for 'default', SGD with "
                           "Nesterov momentum and a cosine schedule; 0.001 for 'seed', Adam).",
                           min=1e-6, max=10.0)
    weight_decay: float = opt(5e-3, "Decoupled weight decay (SGD).", min=0.0, max=1.0)
    label_smoothing: float = opt(0.1, "Label smoothing.", min=0.0, max=0.5)
    class_weighting: bool = opt(True, "Weight classes by inverse square-root frequency "
                                "(lifts FER2013's rare 'disgust').")
    precision: str = opt("mixed_bfloat16", "Training precision. mixed_bfloat16 measured 2x faster "
                         "than float32 on this project's CPUs; the artifact is always float32.",
                         choices=("float32", "mixed_bfloat16"))
    augment: str = opt("layers", "Training augmentation for 'default' (flip, rotation, zoom, "
                       "shift): Keras's preprocessing layers, or the same as one batched "
                       "resampling (gather: one interpolation instead of three, no per-image "
                       "work; for GPU backends, where the layers ran at CPU speed).",
                       choices=("layers", "gather"))
    seed: int = opt(1337, "Random seed (weights, shuffling, augmentation, splits).")
    work_dir: Path | None = opt(None, "Checkpoints and backups, so a killed training resumes "
                                "(default: ~/.cache/batchemo/train/<out name>).")
    license: str = opt("", "Terms of the training data, recorded in the model card.")
    limits: str = opt("", "Known limits of the model, recorded in the model card.")
    tta: bool = opt(True, "Score the final model with horizontal-flip test-time augmentation "
                    "(recorded in the card; `run` uses it too when the card says so).")

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else _cache_dir() / "train" / Path(self.out).stem


@dataclass
class EvaluateConfig:
    data: Path = opt(None, "Folder-per-class tree (or FER2013 CSV: its PrivateTest rows) to score.",
                     short="-d")
    model: Path | None = opt(None, "Model artifact (default: the shipped FER2013 model).",
                             short="-m")
    only: str | None = opt(None, "Score only files whose name matches this glob, e.g. "
                           "'PrivateTest_*'.")
    out: Path | None = opt(None, "Folder for report.json, confusion.csv, confusion.png, "
                           "per_class.csv.", short="-o")
    tta: bool = opt(True, "Average predictions over the face and its mirror image.")
    batch_size: int = opt(256, "Inference batch size.", min=1, max=8192)
    precision: str = opt("float32", "Inference precision: float32 (the reference), bfloat16, or "
                         "auto (bfloat16 where the CPU has it natively, as `run` does).",
                         choices=("auto", "float32", "bfloat16"))


def load_job_file(path: Path, cls: type) -> dict:
    """Read a TOML job file into {field: value}; unknown keys are a ConfigError naming the key."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys are "
                          f"{', '.join(sorted(names))}")
    base = Path(path).parent
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            out[f.name] = _resolve_paths(f, raw[f.name], base)
    return out


def _resolve_paths(f: dataclasses.Field, value: Any, base: Path) -> Any:
    # Relative paths in a job file are relative to the file, so cron's working directory is moot.
    if "Path" in str(f.type):
        if isinstance(value, list):
            return [Path(os.path.expanduser(v)) if Path(os.path.expanduser(v)).is_absolute()
                    else base / v for v in value]
        if isinstance(value, str):
            p = Path(os.path.expanduser(value))
            return p if p.is_absolute() else base / p
    return value


def validate(cfg: Any) -> Any:
    """Check bounds and choices of every field; raise ConfigError naming the option."""
    for f in dataclasses.fields(cfg):
        v, m = getattr(cfg, f.name), f.metadata
        flag = "--" + f.name.replace("_", "-")
        if v is None or isinstance(v, bool):
            continue
        if m.get("choices") and v not in m["choices"]:
            raise ConfigError(f"{flag}: {v!r} is not one of {', '.join(map(str, m['choices']))}")
        if isinstance(v, int | float):
            if m.get("min") is not None and v < m["min"]:
                raise ConfigError(f"{flag}: {v} is below the minimum {m['min']}")
            if m.get("max") is not None and v > m["max"]:
                raise ConfigError(f"{flag}: {v} is above the maximum {m['max']}")
    return cfg


@dataclass
class RunConfig:
    input: list[Path] = opt([], "Input root: a directory (scanned recursively) or a file. Repeat "
                            "for several roots.", short="-i", multiple=True)
    out: Path = opt(Path("results.parquet"), "Faces table: .parquet or .csv (companion tables "
                    "beside it as <stem>.<table>.<ext>), or a directory for a Parquet dataset.",
                    short="-o")
    include: list[str] = opt([], "Only files whose relative path matches this glob (repeatable).",
                             multiple=True)
    exclude: list[str] = opt([], "Skip files whose relative path matches this glob (repeatable).",
                             multiple=True)
    fps: float = opt(5.0, "Video frames sampled per second of video time; 0 = every frame.",
                     min=0.0, max=1000.0)
    detector: str = opt("blazeface-full", "Face detector: blazeface-full (small and distant faces "
                        "too), blazeface (close-up faces, fastest), haar (OpenCV 4). Measured "
                        "recall and speed are in the README.",
                        choices=("blazeface", "blazeface-full", "haar"))
    min_face: int = opt(20, "Ignore faces narrower than this many pixels.", min=1, max=10000)
    score_threshold: float = opt(0.5, "Minimum detector score for a face.", min=0.0, max=1.0)
    model: Path | None = opt(None, "Model artifact (.keras with its .json card); default: the "
                             "shipped FER2013 model.", short="-m")
    batch_size: int = opt(64, "Faces per model call (crops from many frames and files).",
                          min=1, max=4096)
    tta: bool = opt(True, "Average each face with its mirror image (+accuracy, 2x model time); "
                    "used only if the model's card enables it.")
    precision: str = opt("auto", "Inference precision: auto = bfloat16 where the CPU has it natively "
                         "(AVX512-BF16/AMX) and a one-off timing, cached in ~/.cache/batchemo/"
                         "precision.json, found it 1.25x faster (FER2013 accuracy unchanged; see "
                         "the README), else float32; or force float32 or bfloat16.",
                         choices=("auto", "float32", "bfloat16"))
    workers: int = opt(-1, "Decode/detect worker processes; 0 = in the main process; -1 = auto "
                       "(one per CPU core beyond the one running the model, at least 1).",
                       min=-1, max=256)
    engine: str = opt("local", "Execution engine: 'local' (this machine) or 'ray' (Ray Data).",
                      choices=("local", "ray"))
    ray_address: str | None = opt(None, "Ray cluster address for --engine ray (default: start a "
                                  "local Ray).")
    force: bool = opt(False, "Reprocess every file, and accept a model different from the one "
                      "the output was made with.")
    retry_errors: bool = opt(False, "Retry files that failed in an earlier run.")
    prune_deleted: bool = opt(False, "Drop rows of files that no longer exist under their root "
                              "(default: keep them, marked in the files table).")
    wait: float = opt(0.0, "If another run holds the output's lock, wait up to this many seconds "
                      "(0 = exit 3 at once).", min=0.0)
    plots: Path | None = opt(None, "Write per-video timeline PNGs and a run chart to this folder.")
    timeline_bin: float = opt(1.0, "Timeline bin width in seconds.", min=0.01)
    quiet: bool = opt(False, "No progress bars or info logs (the closing summary line is kept).")
    log_json: bool = opt(False, "Log machine-readable JSON lines on stderr.")


@dataclass
class TimelineConfig:
    results: Path = opt(None, "The faces table written by `batchemo run` (its companions are "
                        "found beside it).")
    out: Path | None = opt(None, "Where to write the timeline (.parquet or .csv; default: "
                           "<stem>.timeline.<ext> beside the results).", short="-o")
    bin: float = opt(1.0, "Bin width in seconds.", min=0.01)
    smoothing: str = opt("ema", "Smoothing of per-bin probabilities: ema (causal, exponential), "
                         "median (centred rolling median) or none.",
                         choices=("ema", "median", "none"))
    window: float = opt(3.0, "Smoothing window in seconds.", min=0.0)
    segments_out: Path | None = opt(None, "Also write the segments table (runs of one dominant "
                                    "emotion per track) here.")
    min_segment: float = opt(1.0, "Merge segments shorter than this many seconds into a "
                             "neighbour.", min=0.0)


@dataclass
class SummaryConfig:
    results: Path = opt(None, "The faces table written by `batchemo run`.")
    out: Path | None = opt(None, "Also write the summary table here (.parquet or .csv).",
                           short="-o")
    level: list[str] = opt([], "Levels to print (repeatable): run, folder, file, track.",
                           multiple=True)


@dataclass
class ReportConfig:
    results: Path = opt(None, "The faces table written by `batchemo run`.")
    out: Path = opt(Path("report.html"), "The self-contained HTML page to write.", short="-o")
    title: str = opt("batchemo report", "Page title.")
