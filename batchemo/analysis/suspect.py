"""Which tracks look like something other than a real face (a poster, a still image)."""

from __future__ import annotations

import numpy as np
import pandas as pd

# A track is suspect (probably not a person's face) when it has fewer faces than this, ...
SUSPECT_MIN_FACES = 3
# ... or its detector scores average below this (measured: the shared title card 0.54, the
# faces of people 0.7-0.95; small faces far away 0.55-0.65 are flagged too, and their labels
# are the least reliable anyway) ...
SUSPECT_MIN_SCORE = 0.6
# ... or its box stays put to within this share of its size over 5+ faces: lettering, a
# poster, a screen; a person's face, however still, moves its box by more than that.
SUSPECT_STILL = 0.004


def suspect_reasons(faces: pd.DataFrame) -> pd.Series:
    """Why each track is probably not a person's face, indexed by (root, source, track_id);
    only suspect tracks appear. Reasons, joined by '; ': few faces, low detector scores, a box
    that does not move (the SUSPECT_* constants)."""
    faces = faces[faces["track_id"].notna()] if "track_id" in faces else faces.iloc[:0]
    keys = ["root", "source", "track_id"]
    if not len(faces):
        return pd.Series([], dtype=object, index=pd.MultiIndex.from_tuples([], names=keys))
    box = (faces[["x", "y", "w", "h"]].to_numpy(np.float64) if {"x", "y", "w", "h"} <= set(faces)
           else np.full((len(faces), 4), np.nan))  # tables without boxes: no stillness test
    work = pd.DataFrame({"cx": box[:, 0] + box[:, 2] / 2, "cy": box[:, 1] + box[:, 3] / 2,
                         "size": np.sqrt(box[:, 2] * box[:, 3]),
                         "score": faces["det_score"].to_numpy(np.float64)
                         if "det_score" in faces else np.nan}, index=faces.index)
    g = work.groupby([faces[k] for k in keys], sort=True)
    n, mean_size, score = g.size(), g["size"].mean(), g["score"].mean()
    spread = g[["cx", "cy", "size"]].std().max(axis=1) / mean_size
    out = {}
    for key, k, sc, sp in zip(n.index, n.to_numpy(), score.to_numpy(), spread.to_numpy(),
                              strict=True):
        why = [f"only {k} faces"] if k < SUSPECT_MIN_FACES else []
        if sc < SUSPECT_MIN_SCORE:
            why.append(f"low detector scores (mean {sc:.2f})")
        if k >= 5 and sp < SUSPECT_STILL:
            why.append("the box does not move (lettering, a picture?)")
        if why:
            out[key] = "; ".join(why)
    return pd.Series(out, dtype=object, index=pd.MultiIndex.from_tuples(list(out), names=keys))
