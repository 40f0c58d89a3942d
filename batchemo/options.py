"""The machinery behind config's dataclasses: `opt` (a field with its help, bounds and choices),
reading a TOML job file into fields, and checking every value of a config."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import tomllib
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

from batchemo.errors import ConfigError


def opt(default: Any, help: str, *, short: str | None = None, choices: tuple | None = None,
        min: float | None = None, max: float | None = None, multiple: bool = False,
        check: Any = None) -> Any:
    """A config field with its CLI help, bounds and choices attached as metadata; `check(value)`
    raises ValueError for a value of the right type that still means nothing."""
    meta = {"help": help, "short": short, "choices": choices, "min": min, "max": max,
            "multiple": multiple, "check": check}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


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
    hints = _hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            value, hint = raw[f.name], hints[f.name]
            # "a,b,c" for a list of strings is split by the CLI (e.g. train's classes)
            if not (isinstance(value, str) and _list_of(hint) is str):
                problem = _type_problem(hint, value)
                if problem:
                    raise ConfigError(f"{path}: {f.name}: {problem}")
            out[f.name] = _resolve_paths(f, value, base)
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _list_of(hint: Any) -> Any:
    hint = _unoptional(hint)
    return typing.get_args(hint)[0] if typing.get_origin(hint) is list else None


def _unoptional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _type_problem(hint: Any, v: Any) -> str | None:
    """Why `v` is no value of a field typed `hint` (None if it is, or if the type is not known);
    NaN and infinity are no numbers here."""
    if v is None:
        return None  # unset: each command says which fields it needs
    hint = _unoptional(hint)
    if typing.get_origin(hint) is list:
        if not isinstance(v, list | tuple):
            return f"expected a list, got {type(v).__name__} {v!r}"
        inner = typing.get_args(hint)[0]
        return next((p for x in v if (p := _type_problem(inner, x))), None)
    if hint is float:
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            return f"expected a number, got {type(v).__name__} {v!r}"
        return None if math.isfinite(v) else f"expected a finite number, got {v}"
    wanted = {bool: (bool,), int: (numbers.Integral,), str: (str,),
              Path: (str, os.PathLike)}.get(hint)
    if wanted is None:
        return None
    if isinstance(v, wanted) and not (hint is int and isinstance(v, bool)):
        return None
    return f"expected {_TYPE_NAMES[hint]}, got {type(v).__name__} {v!r}"


_TYPE_NAMES = {bool: "true or false", int: "an integer", str: "a string", Path: "a path string"}


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
    """Check types (finite numbers), bounds and choices of every field; raise ConfigError
    naming the option."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v, m = getattr(cfg, f.name), f.metadata
        flag = "--" + f.name.replace("_", "-")
        problem = _type_problem(hints[f.name], v)
        if problem:
            raise ConfigError(f"{flag}: {problem}")
        if v is None or isinstance(v, bool):
            continue
        for item in (v if isinstance(v, list | tuple) else [v]):
            if m.get("choices") and item not in m["choices"]:
                raise ConfigError(f"{flag}: {item!r} is not one of "
                                  f"{', '.join(map(str, m['choices']))}")
        if isinstance(v, int | float):
            if m.get("min") is not None and v < m["min"]:
                raise ConfigError(f"{flag}: {v} is below the minimum {m['min']}")
            if m.get("max") is not None and v > m["max"]:
                raise ConfigError(f"{flag}: {v} is above the maximum {m['max']}")
        if m.get("check"):
            try:
                m["check"](v)
            except ValueError as e:
                raise ConfigError(f"{flag}: {e}") from None
    return cfg


def actor_range(text: str) -> tuple[int, int] | None:
    """--ray-actors: None for auto, (N, N) for N, (MIN, MAX) for MIN..MAX."""
    if text == "auto":
        return None
    lo, dots, hi = text.partition("..")
    try:
        a, b = int(lo), int(hi if dots else lo)
    except ValueError:
        raise ValueError(f"expected auto, N or MIN..MAX, got {text!r}") from None
    if not 1 <= a <= b:
        raise ValueError(f"expected 1 <= MIN <= MAX, got {text!r}")
    return a, b
