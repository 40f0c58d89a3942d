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
                     "<class> with optional val/ and test/) or the FER2013 CSV.", short="-d")
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
    epochs: int = opt(45, "Training epochs (the cosine learning-rate schedule spans them all).",
                      min=1, max=10000)
    batch_size: int = opt(128, "Training batch size.", min=1, max=4096)
    lr: float = opt(0.1, "Peak learning rate (SGD with Nesterov momentum; Adam for 'seed').",
                    min=1e-6, max=10.0)
    weight_decay: float = opt(5e-3, "Decoupled weight decay (SGD).", min=0.0, max=1.0)
    label_smoothing: float = opt(0.1, "Label smoothing.", min=0.0, max=0.5)
    class_weighting: bool = opt(True, "Weight classes by inverse square-root frequency "
                                "(lifts FER2013's rare 'disgust').")
    precision: str = opt("mixed_bfloat16", "Training precision. mixed_bfloat16 measured 2x faster "
                         "than float32 on this project's CPUs; the artifact is always float32.",
                         choices=("float32", "mixed_bfloat16"))
    seed: int = opt(1337, "Random seed (weights, shuffling, augmentation, splits).")
    work_dir: Path | None = opt(None, "Checkpoints and backups, so a killed training resumes "
                                "(default: ~/.cache/batchemo/train/<out name>).")
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
