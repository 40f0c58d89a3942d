"""`train --soup`: the mean of fine-tunes of one start (a uniform model soup, Wortsman et al.,
"Model soups", 2022)."""

from __future__ import annotations

import numpy as np

from batchemo.errors import ConfigError


def soup_weights(members: list, paths: list, start_id: str) -> list[np.ndarray]:
    """The mean weights of `members` (loaded artifacts from `paths`), each with its own folded
    temperature taken out of its output layer first. Fine-tunes of one start lie in one basin, so
    their mean is a model too; a model from another start (not `start_id`) is refused, since the
    mean of two basins is no model."""
    strays = [str(p) for p, m in zip(paths, members, strict=True)
              if (m.meta.get("initialised_from") or {}).get("model_id") != start_id]
    if strays:
        raise ConfigError(f"--soup {', '.join(strays)}: not fine-tuned from --init ({start_id}); "
                          "a soup averages fine-tunes of one start")
    weights = [m.keras_model.get_weights() for m in members]
    for w, m in zip(weights, members, strict=True):
        w[-2:] = [v * (m.meta.get("temperature") or {}).get("value", 1.0) for v in w[-2:]]
    return [np.mean(ws, axis=0) for ws in zip(*weights, strict=True)]
