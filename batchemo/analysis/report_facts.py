"""The facts at the head of the HTML report: which run wrote the rows, with what settings and
model (from the runs table and the model's JSON card), and the files by status."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def run_facts(faces: pd.DataFrame, files: pd.DataFrame | None,
              runs: pd.DataFrame | None) -> list[tuple[str, str]]:
    """(label, text) pairs for the report's head: face rows; the run that wrote the rows, with
    its settings (and the last run apart, where a later run wrote none: a rerun that found
    nothing new); run and model ids; the model card's facts; files by status."""
    facts = [("face rows", f"{len(faces):d}")]
    if runs is not None and len(runs):
        runs = runs.sort_values("started", kind="stable")
        last, wrote = runs.iloc[-1], _writing_run(runs, faces, files)
        facts.append(("rows written by", _run_text(wrote)
                      + (f" ({len(runs)} runs in all)" if len(runs) > 1 else "")))
        if last["run_id"] != wrote["run_id"]:  # a rerun that found nothing new, say
            done = sum(int(last.get(c) or 0) for c in ("files_new", "files_changed"))
            facts.append(("last run", f"{_run_text(last)}: {_count(done, 'file')} processed"))
        try:
            s = json.loads(wrote["settings"] or "{}")
        except (TypeError, ValueError):
            s = {}
        keys = ("fps", "detector", "score_threshold", "min_face", "tta", "precision", "model")
        s["model"] = s.get("model") or "the shipped default"
        facts.append(("settings", ", ".join(f"{k} {s[k]}" for k in keys if k in s)))
    for col, label in (("run_id", "runs"), ("model_id", "models")):
        if col in faces and len(faces):
            facts.append((label, ", ".join(map(str, sorted(faces[col].dropna().unique())))))
    facts += _model_facts(faces, runs)
    if files is not None and len(files):
        counts = files["status"].value_counts()
        facts.append(("files", ", ".join(f"{k}: {v}" for k, v in counts.items())))
    return facts


def _run_text(run: pd.Series) -> str:
    return f"{run['run_id']}, {str(run['started'])[:19]} to {str(run['finished'])[:19]} UTC"


def _writing_run(runs: pd.DataFrame, faces: pd.DataFrame, files: pd.DataFrame | None) -> pd.Series:
    """The latest run (`runs` sorted by start) whose id is on a face or file row, i.e. that
    wrote rows now in the tables; the latest run where none is."""
    ids = set().union(*(set(t["run_id"].dropna()) for t in (faces, files)
                        if t is not None and "run_id" in t))
    wrote = runs[runs["run_id"].isin(ids)]
    return (wrote if len(wrote) else runs).iloc[-1]


def _model_facts(faces: pd.DataFrame, runs: pd.DataFrame | None) -> list[tuple[str, str]]:
    """Training data, accuracy and limits from the model's card, where the card is found."""
    from batchemo.model import DEFAULT_MODEL

    ids = set(faces["model_id"].dropna()) if "model_id" in faces else set()
    paths = [DEFAULT_MODEL]
    if runs is not None and len(runs):
        for raw in runs["settings"].dropna():
            try:
                m = json.loads(raw).get("model")
            except (TypeError, ValueError):
                continue
            if m:
                paths.insert(0, Path(m))
    for p in paths:
        try:
            card = json.loads(Path(p).with_suffix(".json").read_text())
        except (OSError, ValueError):
            continue
        if card.get("model_id") in ids:
            test, data = card.get("test") or {}, card.get("training_data") or {}
            n_train = f", {data['n_train']} training faces" if isinstance(data, dict) and \
                data.get("n_train") else ""
            acc = (f"accuracy {test['accuracy']:.1%}, macro-F1 {test.get('macro_f1', 0):.3f} on "
                   f"{test.get('n', '?')} test faces") if "accuracy" in test else "not recorded"
            return [("model", f"{card['model_id']}: {card.get('arch', '')} "
                              f"{card.get('input_size', '')}px"),
                    ("trained on", f"{(card.get('license') or 'not stated').rstrip('.')}{n_train}"),
                    ("measured", acc), ("its limits", str(card.get("limits") or "–"))]
    return [("model card", "not found beside the model; limits unknown")] if ids else []


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
