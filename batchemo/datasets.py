"""`batchemo.datasets`, the path the README documented: training.datasets holds it."""

from batchemo.training.datasets import (
    EMOTIONS,
    Split,
    load_fer_csv,
    load_folder,
    load_npz,
    save_npz,
)

__all__ = ["EMOTIONS", "Split", "load_fer_csv", "load_folder", "load_npz", "save_npz"]
