"""Click commands: options generated from the config dataclasses → library call → exit code."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys
import types
import typing
from pathlib import Path

import click

from batchemo import config as C
from batchemo import options
from batchemo._util.jsonlog import log_to_stderr
from batchemo.errors import EXIT_FATAL, BatchemoError, ConfigError

log = logging.getLogger("batchemo")


def _base_type(hint) -> type:
    """Path | None → Path, list[str] → str, int → int."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is list:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _click_type(f: dataclasses.Field, base: type):
    if f.metadata.get("choices"):
        return click.Choice(f.metadata["choices"])
    return click.Path(path_type=Path) if base is Path else base


def config_options(cls: type, job: bool = True, skip: tuple[str, ...] = ()):
    """Decorate a command with one option per config field (defaults None = 'not given')."""

    hints = typing.get_type_hints(cls)

    def decorate(fn):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip:
                continue
            base = _base_type(hints[f.name])
            name = "--" + f.name.replace("_", "-")
            m = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = f" [default: {_show(default)}]" if default not in (None, [], False) else ""
            bounds = "".join(f" [{k}: {m[k]}]" for k in ("min", "max") if m.get(k) is not None
                             and not m.get("choices"))
            helptext = m["help"] + shown + bounds
            decls = [name] + ([m["short"]] if m.get("short") else [])
            if base is bool:
                decls = [f"{name}/--no-{f.name.replace('_', '-')}"]
                fn = click.option(*decls, f.name, default=None, help=helptext)(fn)
            else:
                fn = click.option(*decls, f.name, type=_click_type(f, base), default=None,
                                  multiple=bool(m.get("multiple")), help=helptext)(fn)
        if job:
            fn = click.option("--job", type=click.Path(path_type=Path, dir_okay=False),
                              help="TOML job file whose keys are this command's long option "
                              "names (with _); flags given here override it.")(fn)
        return fn

    return decorate


def _show(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def build_config(cls: type, job: Path | None, flags: dict):
    """Defaults ← job file ← flags (only those actually given)."""
    values = options.load_job_file(job, cls) if job else {}
    for k, v in flags.items():
        if v is None or (isinstance(v, tuple) and not v):
            continue
        values[k] = list(v) if isinstance(v, tuple) else v
    if isinstance(values.get("classes"), str):  # "a,b,c" from a flag or a job file
        values["classes"] = [c.strip() for c in values["classes"].split(",") if c.strip()]
    return options.validate(cls(**values))


def _setup_logging(quiet: bool = False, as_json: bool = False) -> None:
    log_to_stderr(logging.WARNING if quiet else logging.INFO, as_json)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # _guard: "interrupted", exit 2


def _guard(fn):
    """Turn library errors into a one-line message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BatchemoError as e:
            click.echo(f"batchemo: error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("batchemo: interrupted", err=True)
            sys.exit(EXIT_FATAL)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="batchemo")
def main() -> None:
    """batchemo: per-face emotion tables from photo and video archives.

    \b
    batchemo run -i videos/ -o results.parquet      analyse an archive (incremental)
    batchemo train -d fer2013/ -o my.keras          train a model
    batchemo evaluate -d test/ --only 'PrivateTest_*'
    batchemo timeline|summary|report results.parquet
    batchemo annotate results.parquet -o annotated/  boxes and labels drawn on frames
    """


@main.command()
@config_options(C.RunConfig)
@_guard
def run(job, **flags) -> None:
    """Detect faces in images and sampled video frames and classify their emotion.

    Writes the faces table to --out and its companions (frames, files, runs, summary, timeline,
    segments) beside it. Re-running processes only new or changed files. Exit codes: 0 all good,
    1 some files failed (see the files table), 2 the job could not be done, 3 output locked.
    """
    # Start-up (TensorFlow's import) takes seconds: a SIGTERM then must exit 2, not 143.
    signal.signal(signal.SIGTERM, _interrupt)
    cfg = build_config(C.RunConfig, job, flags)
    _setup_logging(cfg.quiet, cfg.log_json)
    from batchemo.pipeline import run as run_pipeline

    result = run_pipeline(cfg)
    if cfg.log_json:  # one machine-readable closing record instead of the human line
        from batchemo._util.jsonlog import record

        level = "INFO" if result.exit_code == 0 else "WARNING"
        click.echo(record(level, "batchemo", result.summary_line(), event="run_finished",
                          **dataclasses.asdict(result)), err=True)
    else:
        click.echo(result.summary_line(), err=True)
    sys.exit(result.exit_code)


@main.command()
@config_options(C.TrainConfig)
@_guard
def train(job, **flags) -> None:
    """Train an emotion model and write the artifact (.keras + .json card).

    Resumes automatically from --work-dir if a previous call with the same output was killed.
    """
    cfg = build_config(C.TrainConfig, job, flags)
    _setup_logging()
    from batchemo.training.train import train as train_model

    meta = train_model(cfg)
    line = f"wrote {meta['path']}: val accuracy {meta['validation']['accuracy']:.4f}"
    if "test" in meta:
        line += f", test accuracy {meta['test']['accuracy']:.4f} (macro-F1 " \
                f"{meta['test']['macro_f1']:.4f})"
    click.echo(line)


@main.command()
@config_options(C.EvaluateConfig, job=False)
@_guard
def evaluate(**flags) -> None:
    """Score a model on a labelled folder-per-class tree (or FER2013 CSV) and write a report."""
    cfg = build_config(C.EvaluateConfig, None, flags)
    _setup_logging()
    from batchemo.training.evaluate import evaluate as evaluate_model

    r = evaluate_model(cfg)
    left = f" ({r['left_out']} without a clear FER+ majority left out)" if r["left_out"] else ""
    click.echo(f"{r['n']} faces{left}, {r['labels']} labels: accuracy {r['accuracy']:.4f}, "
               f"macro-F1 {r['macro_f1']:.4f}, ECE {r['ece']:.4f}")
    for c, m in r["per_class"].items():
        click.echo(f"  {c:<10} recall {m['recall']:.3f}  precision {m['precision']:.3f}  "
                   f"n={m['support']:<5} predicted share {r['predicted_share'][c]:.3f}")
    for condition, d in r["degraded"].items():
        g = d["largest_share_growth"]
        click.echo(f"  {condition:<12} accuracy {d['accuracy']:.4f} (kept {d['kept']:.3f}), "
                   f"ECE {d['ece']:.4f}, largest share growth {g['class']} {g['ratio']:.2f}x")
    if cfg.out:
        click.echo(f"report in {cfg.out}/")


@main.command()
@click.argument("results", type=click.Path(path_type=Path, exists=True))
@config_options(C.TimelineConfig, job=False, skip=("results",))
@_guard
def timeline(results, **flags) -> None:
    """Per-video, per-track emotion timeline in time bins, from a run's RESULTS (faces table)."""
    cfg = build_config(C.TimelineConfig, None, {**flags, "results": results})
    from batchemo.analysis.commands import make_timeline

    click.echo(f"wrote {make_timeline(cfg)}")


@main.command()
@click.argument("results", type=click.Path(path_type=Path, exists=True))
@config_options(C.SummaryConfig, job=False, skip=("results",))
@_guard
def summary(results, **flags) -> None:
    """Print summary statistics (run, folder, file, track) of a run's RESULTS."""
    cfg = build_config(C.SummaryConfig, None, {**flags, "results": results})
    from batchemo.analysis.commands import make_summary

    _, text = make_summary(cfg)
    click.echo(text)


@main.command()
@click.argument("results", type=click.Path(path_type=Path, exists=True))
@config_options(C.ReportConfig, job=False, skip=("results",))
@_guard
def report(results, **flags) -> None:
    """Write a self-contained HTML report (timelines, tracks, failed files) of a run's RESULTS."""
    cfg = build_config(C.ReportConfig, None, {**flags, "results": results})
    _check_writable_file(Path(cfg.out), "--out")  # before the work, not after it
    from batchemo.analysis.commands import make_report

    click.echo(f"wrote {make_report(cfg)}")


def _check_writable_file(path: Path, option: str) -> None:
    """A file can be written at `path`: its folder exists and is writable, and it is no folder
    (ConfigError, exit 2, otherwise)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: no such folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in {folder}")


@main.command()
@click.argument("out", type=click.Path(path_type=Path, exists=True))
@_guard
def compact(out) -> None:
    """Merge the small part files of a run's OUT (as given to `run --out`) into large ones.

    Runs do this themselves past a few hundred small parts. A reader of a directory OUT never
    sees a row twice; for an instant per merged part (or after a kill, until the next
    command) it may miss that part's rows.
    """
    from batchemo.pipeline import compact as compact_output

    click.echo(f"merged {compact_output(out)} part files of {out}")


@main.command()
@click.argument("results", type=click.Path(path_type=Path, exists=True))
@config_options(C.AnnotateConfig, job=False, skip=("results",))
@_guard
def annotate(results, **flags) -> None:
    """Draw boxes, track ids, labels and confidences on frames of the sources in RESULTS.

    Exit code 1 when a source is gone or changed since the run (the others are written).
    """
    cfg = build_config(C.AnnotateConfig, None, {**flags, "results": results})
    _setup_logging()
    from batchemo.analysis.annotate import annotate as annotate_results

    r = annotate_results(cfg)
    click.echo(f"wrote {len(r.frames)} frames and {len(r.videos)} videos to {cfg.out}/"
               + (f"; {len(r.failed)} sources not found or changed" if r.failed else ""))
    sys.exit(r.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()

