"""Column helpers every table module shares: the class list (from the `p_<class>` columns),
valence and the dominant class, defined once so summary, timeline, plots and report agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

# Valence weight per class; absent classes weigh 0 (neutral, surprise: surprise is positive or
# negative depending on context, so it counts as neither). `contempt` appears in some datasets.
VALENCE_WEIGHTS = {
    "happy": 1.0,
    "angry": -1.0,
    "disgust": -1.0,
    "fear": -1.0,
    "sad": -1.0,
    "contempt": -1.0,
}



def as_frame(table: pd.DataFrame | pa.Table | None) -> pd.DataFrame | None:
    """A pandas DataFrame from a DataFrame or a pyarrow Table (None stays None)."""
    if table is None or isinstance(table, pd.DataFrame):
        return table
    return table.to_pandas()


def class_names(df: pd.DataFrame, prefix: str = "p_") -> list[str]:
    """The model's classes, in column order, from the `<prefix><class>` columns."""
    return [c[len(prefix) :] for c in df.columns if c.startswith(prefix)]


def valence_array(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """Valence per row of an (N, C) probability array; see `valence`."""
    probs = np.asarray(probs, dtype=np.float64).reshape(len(probs), len(classes))
    w = np.array([VALENCE_WEIGHTS.get(c, 0.0) for c in classes])
    out = np.full(len(probs), np.nan)
    if not w.any():
        return out  # no class with a valence: undefined rather than a misleading 0
    relevant = probs[:, w != 0]
    ok = ~np.isnan(relevant).all(axis=1)
    out[ok] = np.nansum(probs[ok][:, w != 0] * w[w != 0], axis=1)
    return out


def valence(df: pd.DataFrame, prefix: str = "p_") -> np.ndarray:
    """Valence = P(happy) − P(angry) − P(disgust) − P(fear) − P(sad) [− P(contempt)], in [−1, 1].

    It is the expected valence score under the predicted distribution, scoring each class +1
    (happy), −1 (negative classes) or 0 (neutral, surprise, unknown). Being linear in the
    probabilities, the valence of mean probabilities equals the mean of per-face valences, so
    bins, tracks, files and the run all agree. Classes the model lacks contribute 0; a row
    whose relevant probabilities are all null (an empty bin), or a model with no valenced
    class, gives NaN.
    """
    classes = class_names(df, prefix)
    cols = [prefix + c for c in classes]
    return valence_array(df[cols].to_numpy(dtype=np.float64, na_value=np.nan), classes)


def dominant_array(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """Argmax class name per row of an (N, C) array; None where the row is all NaN."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.full(len(probs), None, dtype=object)
    ok = ~np.isnan(probs).all(axis=1) if len(probs) else np.zeros(0, bool)
    if ok.any():
        idx = np.nanargmax(np.where(np.isnan(probs[ok]), -np.inf, probs[ok]), axis=1)
        out[ok] = np.asarray(classes, dtype=object)[idx]
    return out
