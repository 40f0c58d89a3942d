"""Training data: folder-per-class trees and the FER2013 CSV, loaded into memory as uint8 arrays."""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchemo.errors import DatasetError
from batchemo.output.atomic import atomic_write

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# Folder names used by common datasets (FER2013, eINTERFACE, RAF-DB, CK+) for the canonical labels.
ALIASES = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "neutral": "neutral", "calm": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
}
FER2013_CSV_ORDER = EMOTIONS  # the CSV's integer labels 0..6 follow this order
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm"}


def canonical_label(name: str) -> str:
    """Map a dataset's class name onto batchemo's label; unknown names stay (lower-cased)."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


@dataclass
class Split:
    """Images (N, H, W, 1) uint8 with integer labels into `classes`."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    names: list[str]

    def __len__(self) -> int:
        return len(self.y)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.x.tobytes())
        h.update(self.y.astype(np.int64).tobytes())
        h.update(",".join(self.classes).encode())
        return h.hexdigest()[:16]

    def subset(self, index: np.ndarray) -> Split:
        return Split(self.x[index], self.y[index], self.classes, [self.names[i] for i in index])


def _order_classes(found: set[str], wanted: tuple[str, ...] | None) -> tuple[str, ...]:
    if wanted:
        missing = [c for c in wanted if c not in found]
        if missing:
            raise DatasetError(f"class(es) {', '.join(missing)} not found; the data has "
                               f"{', '.join(sorted(found))}")
        return tuple(wanted)
    canon = [c for c in EMOTIONS if c in found]
    return tuple(canon + sorted(found - set(canon)))


def _to_size(img: np.ndarray, size: int) -> np.ndarray:
    import cv2  # imported where used: training from arrays needs no OpenCV (e.g. on a GPU box)

    if img.shape != (size, size):
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img


def load_folder(root: Path, size: int, classes: tuple[str, ...] | None = None,
                only: str | None = None) -> Split:
    """Read `root/<class>/*` (class names through ALIASES); `only` filters file names by glob."""
    import cv2

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    by_label: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
                       and (only is None or fnmatch.fnmatch(f.name, only)))
        by_label.setdefault(canonical_label(d.name), []).extend(files)
    if not by_label:
        raise DatasetError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    names = _order_classes(set(by_label), classes)
    empty = [c for c in names if not by_label[c]]
    if empty:
        what = f" matching {only!r}" if only else ""
        raise DatasetError(f"{root}: class folder(s) {', '.join(empty)} hold no images{what}")
    xs, ys, paths = [], [], []
    for label, c in enumerate(names):
        for f in by_label[c]:
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DatasetError(f"{f}: unreadable image (remove it or fix it)")
            xs.append(_to_size(img, size))
            ys.append(label)
            paths.append(str(f.relative_to(root)))
    return Split(np.stack(xs)[..., None], np.asarray(ys, np.int32), names, paths)


def load_fer_csv(path: Path, size: int, classes: tuple[str, ...] | None = None) -> dict[str, Split]:
    """Read the FER2013 CSV (`emotion,pixels,Usage`) into {'train','val','test'} splits."""
    usage_to_split = {"training": "train", "publictest": "val", "privatetest": "test"}
    rows: dict[str, tuple[list, list, list]] = {}
    names = _order_classes(set(FER2013_CSV_ORDER), classes)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"emotion", "pixels"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: expected a CSV with columns emotion,pixels[,Usage]")
        for line_no, row in enumerate(reader, start=2):
            try:
                pixels = np.array(row["pixels"].split(), dtype=np.uint8)
                label = FER2013_CSV_ORDER[int(row["emotion"])]
            except (ValueError, IndexError) as e:
                raise DatasetError(f"{path}:{line_no}: bad row ({e})") from None
            if pixels.size != 48 * 48:
                raise DatasetError(f"{path}:{line_no}: {pixels.size} pixels, expected 2304 (48x48)")
            if label not in names:
                continue
            split = usage_to_split.get((row.get("Usage") or "Training").lower(), "train")
            xs, ys, ns = rows.setdefault(split, ([], [], []))
            xs.append(_to_size(pixels.reshape(48, 48), size))
            ys.append(names.index(label))
            ns.append(f"{path.name}:{line_no}")
    if "train" not in rows:
        raise DatasetError(f"{path}: no Training rows")
    return {k: Split(np.stack(x)[..., None], np.asarray(y, np.int32), names, n)
            for k, (x, y, n) in rows.items()}


def save_npz(path: Path, splits: dict[str, Split]) -> Path:
    """Write {'train', 'val', 'test'} splits of one class list into a compressed .npz (atomically):
    a dataset that loads in seconds with no image decoder, and travels as one file."""
    path = Path(path)
    arrays = {"classes": np.array(next(iter(splits.values())).classes)}
    for k, s in splits.items():
        arrays |= {f"{k}_x": s.x, f"{k}_y": s.y, f"{k}_names": np.array(s.names)}
    # An .npz is a zip of .npy files; bzip2 makes FER2013 (train + val) 59 MB where
    # savez_compressed's deflate makes 71 MB (face pixels barely deflate), and np.load reads both.
    with atomic_write(path, ".tmp.npz") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_BZIP2) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)
    return path


def load_npz(path: Path, size: int, classes: tuple[str, ...] | None = None) -> dict[str, Split]:
    """Read a `save_npz` file into {'train', 'val', 'test'} (those it holds), keeping `classes`."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        stored = tuple(str(c) for c in arrays["classes"])
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path}: not a dataset written by save_npz ({e})") from None
    names = _order_classes(set(stored), classes)
    remap = np.array([names.index(c) if c in names else -1 for c in stored])
    out = {}
    for k in ("train", "val", "test"):
        if f"{k}_x" not in arrays:
            continue
        y = remap[arrays[f"{k}_y"]]
        keep = y >= 0
        x = arrays[f"{k}_x"][keep]
        if x.shape[1:3] != (size, size):
            x = np.stack([_to_size(face[..., 0], size) for face in x])[..., None]
        out[k] = Split(x, y[keep].astype(np.int32), names, arrays[f"{k}_names"][keep].tolist())
    if "train" not in out:
        raise DatasetError(f"{path}: no train split")
    return out


def vote_counts(path: Path, split: Split) -> tuple[np.ndarray, tuple[str, ...]]:
    """(counts (N, columns), column labels) from a votes CSV (`file` plus one count column per
    label, such as FER+'s `ferplus_votes.csv`), aligned with `split`. Column names go through
    ALIASES (`happiness` → happy); every column after `file` that holds numbers counts, other
    labels too (contempt, unknown, NF). A `file` matches a face whose relative path it ends
    with; faces without a row (or with an empty one) get NaN rows."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = reader.fieldnames or []
    except OSError as e:
        raise DatasetError(f"{path}: cannot read votes ({e.strerror})") from None
    known = set(ALIASES.values()) | {"contempt", "unknown", "nf"}
    columns = [f for f in fields if canonical_label(f) in known]
    missing = [c for c in split.classes if c not in {canonical_label(f) for f in columns}]
    if "file" not in fields or missing:
        raise DatasetError(f"{path}: a votes CSV needs a `file` column and a count column per "
                           f"class (found {', '.join(fields)}; no column for "
                           f"{', '.join(missing) or 'file'})")
    for line_no, row in enumerate(rows, start=2):  # every row: a bad count anywhere is a bad file
        for c in columns:
            _check_count(path, line_no, c, row[c])
    by_tail: dict[str, dict | None] = {}
    for row in rows:  # every tail of the path, so `train/angry/x.jpg` matches `angry/x.jpg`
        parts = Path(row["file"]).parts
        for i in range(len(parts)):
            tail = "/".join(parts[i:])
            by_tail[tail] = None if tail in by_tail else row  # an ambiguous tail matches nothing
    out = np.full((len(split), len(columns)), np.nan, np.float32)
    for n, name in enumerate(split.names):
        row = by_tail.get(Path(name).as_posix())
        if row is not None and not any(_blank(row[c]) for c in columns):
            out[n] = [float(row[c]) for c in columns]
    return out, tuple(canonical_label(c) for c in columns)


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()  # None: a row shorter than the header


def _check_count(path: Path, line_no: int, column: str, value: str | None) -> None:
    """A vote count is empty (no votes) or a finite number ≥ 0: `inf` trained a NaN model."""
    if _blank(value):
        return
    try:
        count = float(value)
    except ValueError:
        count = None
    if count is None or not np.isfinite(count) or count < 0:
        raise DatasetError(f"{path}:{line_no}: column {column} holds {value!r}; a vote count is "
                           "a finite number of votes, 0 or more")


def load_votes(path: Path, split: Split) -> np.ndarray:
    """Per-face label distributions over `split.classes` from a votes CSV (see vote_counts),
    rows summing to 1; votes for other labels are left out. NaN rows where a face has no votes
    for the split's classes (callers fall back to its label)."""
    counts, labels = vote_counts(path, split)
    votes = np.stack([counts[:, labels.index(c)] if c in labels else np.zeros(len(split))
                      for c in split.classes], axis=1)
    total = votes.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, votes / total, np.nan).astype(np.float32)


def majority_labels(path: Path, split: Split) -> np.ndarray:
    """Each face's majority vote as an index into `split.classes`, or -1 where there is none: no
    votes, a tie for the top, or a majority for a label outside the classes (FER+'s contempt,
    unknown, not-a-face)."""
    counts, labels = vote_counts(path, split)
    out = np.full(len(split), -1, np.int32)
    for n, row in enumerate(counts):
        if np.isnan(row).any() or row.max() <= 0 or (row == row.max()).sum() > 1:
            continue
        top = labels[int(row.argmax())]
        out[n] = split.classes.index(top) if top in split.classes else -1
    return out


def stratified_split(data: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out `fraction` of every class (seeded); returns (train, val)."""
    rng = np.random.default_rng(seed)
    val_idx = []
    for label in range(len(data.classes)):
        idx = np.flatnonzero(data.y == label)
        rng.shuffle(idx)
        val_idx.extend(idx[: max(1, round(fraction * len(idx)))])
    mask = np.zeros(len(data), bool)
    mask[val_idx] = True
    return data.subset(np.flatnonzero(~mask)), data.subset(np.flatnonzero(mask))


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Square-root inverse-frequency weights: lift rare classes (disgust) without swamping the rest."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    w = np.sqrt(len(y) / (n_classes * np.maximum(counts, 1)))
    return {i: float(v) for i, v in enumerate(w)}
