"""Shared test data factories: everything is written into tmp_path from a seeded RNG.

Factories are fixtures returning a function; a relative `path` is taken under tmp_path and
parent folders are created. Keep the names stable: other modules' tests use them.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from ray_isolation import pytest_pyfunc_call  # noqa: F401 (the hook: Ray tests in their own pytest)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDIA = SHARED / "media"
needs_shared = pytest.mark.skipif(
    not MEDIA.is_dir(), reason=f"real media fixtures not present at {MEDIA} (../shared/media)"
)
# Under `pytest -n 2` each test process gets one core: TensorFlow's default thread pools (one
# thread per core, in each process and in the runs it starts) only oversubscribe the CPU there.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

# A folder and file name with a space, accents, CJK and an emoji.
ODD_NAME = "holiday photos é/Café 日本 😀.jpg"

Face = tuple[int, int, int]  # x, y, size (top-left corner and side of the face's box)

try:  # a nicer face, where another module provides one
    from facedraw import draw_face  # type: ignore[import-not-found]
except ImportError:

    def draw_face(image: np.ndarray, x: int, y: int, size: int) -> None:
        """A plain face: skin ellipse, two eyes, a mouth, inside the box (x, y, size, size)."""
        c, r = (x + size // 2, y + size // 2), size // 2
        skin = (140, 170, 220) if image.ndim == 3 else 180
        dark = (40, 40, 60) if image.ndim == 3 else 40
        cv2.ellipse(image, c, (int(r * 0.8), r), 0, 0, 360, skin, -1)
        for dx in (-r // 3, r // 3):
            cv2.circle(image, (c[0] + dx, c[1] - r // 4), max(1, r // 8), dark, -1)
        cv2.ellipse(image, (c[0], c[1] + r // 3), (r // 3, max(1, r // 8)), 0, 0, 180, dark, 2)


def _draw_faces(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    for x, y, size in faces:
        drawn = draw_face(image, x, y, size)  # in place, or returns the new image
        image = image if drawn is None else drawn
    return image


def _seed(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogateescape"))


def _background(rng: np.random.Generator, h: int, w: int, channels: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = (60 + 120 * xx / max(w - 1, 1) + 40 * yy / max(h - 1, 1)).astype(np.float32)
    shades = [base * f for f in rng.uniform(0.6, 1.0, size=max(channels, 1))]
    img = np.stack(shades, axis=-1) + rng.normal(0, 6, size=(h, w, len(shades)))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(
    path: Path,
    size: tuple[int, int] = (120, 160),
    channels: int = 3,
    faces: Sequence[Face] | None = None,
    dtype: type = np.uint8,
) -> Path:
    """Write an image whose format follows the suffix; channels 1 (gray), 3 (BGR) or 4 (BGRA)."""
    h, w = size
    rng = np.random.default_rng(_seed(path.name))
    img = _background(rng, h, w, 3)
    img = _draw_faces(img, faces or ())
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif channels == 4:
        alpha = np.full((h, w, 1), 255, np.uint8)
        alpha[: h // 4] = 0  # a transparent band at the top
        img = np.concatenate([img, alpha], axis=-1)
    if dtype == np.uint16:
        img = img.astype(np.uint16) * 257
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok, f"OpenCV cannot write {path.suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def write_video(
    path: Path,
    seconds: float,
    fps: float,
    size: tuple[int, int] = (96, 128),
    faces_fn: Callable[[int, float], Sequence[Face]] | None = None,
    codec: str = "mp4v",
    color: bool = True,
) -> Path:
    """Write round(seconds*fps) frames; a bar moves with the frame index; faces_fn(i, t) → faces."""
    h, w = size
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h), color)
    assert writer.isOpened(), f"OpenCV cannot write {codec} to {path.suffix}"
    background = _background(np.random.default_rng(_seed(path.name)), h, w, 3)
    try:
        for i in range(round(seconds * fps)):
            frame = background.copy()
            bar = (i * 4) % w
            frame[:, bar : bar + 4] = 255
            frame = _draw_faces(frame, faces_fn(i, i / fps) if faces_fn else ())
            writer.write(frame if color else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    finally:
        writer.release()
    return path


def png_bomb(path: Path, size: tuple[int, int] = (20000, 20000)) -> Path:
    """A valid all-black 1-bit PNG: ~50 KB on disk, 1.2 GB once decoded to BGR."""
    h, w = size

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = bytes(1 + (w + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    header = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _under(tmp_path: Path, path: str | Path) -> Path:
    p = Path(path)
    p = p if p.is_absolute() else tmp_path / p
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _really_unreadable(path: Path) -> bool:
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            path.read_bytes()
    except PermissionError:
        return True
    return False


@pytest.fixture
def shared_media() -> Path:
    """../shared/media, or a skip with the reason."""
    if not MEDIA.is_dir():
        pytest.skip(f"real media fixtures not present at {MEDIA}")
    return MEDIA


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """make_image(path, size=(h, w), channels=3, faces=None, dtype=np.uint8) → Path."""
    return lambda path, *args, **kw: write_image(_under(tmp_path, path), *args, **kw)


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """make_video(path, seconds, fps, size=(h, w), faces_fn=None, codec="mp4v", color=True) → Path.

    OpenCV's wheels cannot write H.264: use mp4v in .mp4 or MJPG in .avi.
    """
    return lambda path, *args, **kw: write_video(_under(tmp_path, path), *args, **kw)


@pytest.fixture
def make_zero_byte(tmp_path: Path) -> Callable[[str | Path], Path]:
    def make(path: str | Path) -> Path:
        p = _under(tmp_path, path)
        p.write_bytes(b"")
        return p

    return make


@pytest.fixture
def make_truncated_jpeg(tmp_path: Path) -> Callable[..., Path]:
    """make_truncated_jpeg(path, keep=0.5): a real JPEG cut after `keep` of its bytes."""

    def make(path: str | Path, keep: float = 0.5, size: tuple[int, int] = (120, 160)) -> Path:
        p = write_image(_under(tmp_path, path), size=size, faces=[(40, 20, 60)])
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])
        return p

    return make


@pytest.fixture
def make_text_as_jpg(tmp_path: Path) -> Callable[[str | Path], Path]:
    def make(path: str | Path = "notes.jpg") -> Path:
        p = _under(tmp_path, path)
        p.write_text("This is a text file, not a photo.\n" * 5, encoding="utf-8")
        return p

    return make


@pytest.fixture
def make_png_bomb(tmp_path: Path) -> Callable[..., Path]:
    """make_png_bomb(path, size=(20000, 20000))."""
    return lambda path, *args, **kw: png_bomb(_under(tmp_path, path), *args, **kw)


@pytest.fixture
def make_truncated_mp4(tmp_path: Path) -> Callable[..., Path]:
    """make_truncated_mp4(path, keep=0.5): an mp4v clip cut short, losing its index (at the end)."""

    def make(path: str | Path, keep: float = 0.5) -> Path:
        p = write_video(_under(tmp_path, path), 1.0, 10)
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])
        return p

    return make


@pytest.fixture
def make_unreadable_file(tmp_path: Path) -> Callable[[str | Path], Path]:
    """A JPEG chmod 000; skips the test where that does not stop reading (root)."""
    made: list[Path] = []

    def make(path: str | Path) -> Path:
        p = write_image(_under(tmp_path, path))
        p.chmod(0)
        made.append(p)
        if not _really_unreadable(p):
            pytest.skip("chmod 000 does not stop this user reading files (running as root?)")
        return p

    yield make
    for p in made:
        p.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.fixture
def make_unreadable_dir(tmp_path: Path) -> Callable[[str | Path], Path]:
    """A folder holding one JPEG, chmod 000; skips the test where that does not stop listing it."""
    made: list[Path] = []

    def make(path: str | Path) -> Path:
        d = _under(tmp_path, path)
        write_image(d / "inside.jpg")
        d.chmod(0)
        made.append(d)
        if not _really_unreadable(d):
            pytest.skip("chmod 000 does not stop this user listing folders (running as root?)")
        return d

    yield make
    for d in made:
        d.chmod(stat.S_IRWXU)


@pytest.fixture
def make_symlink_loop(tmp_path: Path) -> Callable[[str | Path], Path]:
    """make_symlink_loop(dir): dir/a.jpg and dir/sub/back → dir (an ancestor). Returns dir."""

    def make(path: str | Path) -> Path:
        d = _under(tmp_path, path)
        write_image(d / "a.jpg")
        (d / "sub").mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(d, d / "sub" / "back", target_is_directory=True)
        except (OSError, NotImplementedError) as e:
            pytest.skip(f"cannot create symlinks here: {e}")
        return d

    return make


@pytest.fixture
def copy_shared(tmp_path: Path, shared_media: Path) -> Callable[[str, str | Path], Path]:
    """copy_shared('videos/x.mp4', 'dest/name.mp4') → a writable copy of a real media file."""

    def copy(rel: str, dest: str | Path) -> Path:
        p = _under(tmp_path, dest)
        shutil.copyfile(shared_media / rel, p)
        return p

    return copy


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A real default-architecture artifact with seeded random weights (no training needed)."""
    from batchemo._util.tf import import_keras
    from batchemo.model import build, save_artifact
    from batchemo.training.datasets import EMOTIONS

    import_keras().utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("model") / "random.keras"
    save_artifact(build("default", len(EMOTIONS)), path,
                  {"arch": "default", "classes": list(EMOTIONS), "tta": True})
    return path


@pytest.fixture(scope="session")
def random_int8_model(random_model, tmp_path_factory) -> Path:
    """random_model with an int8 copy. `run --precision int8` with it needs no TensorFlow: a run
    in a subprocess starts in about 1 CPU s instead of 6 (TensorFlow's import)."""
    from helpers import copy_model

    from batchemo.model import quantize

    path = copy_model(random_model, tmp_path_factory.mktemp("model") / "random.keras")
    quantize(path, np.random.default_rng(0).integers(0, 256, (32, 48, 48, 1), np.uint8), n=16)
    return path


@pytest.fixture(autouse=True)
def _no_error_logs(request, caplog):
    """STYLE.md: a test that logs at ERROR fails, unless it says it expects to
    (`@pytest.mark.logs_errors`)."""
    yield
    if request.node.get_closest_marker("logs_errors"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors:
        pytest.fail("logged at ERROR (mark the test logs_errors if expected): "
                    + "; ".join(f"{r.name}: {r.getMessage()}" for r in errors[:3]), pytrace=False)


@pytest.fixture(scope="session")
def train_seed() -> int:
    """The seed every training test trains (and draws its faces) with: TrainConfig's default
    1337, shifted by BATCHEMO_TEST_SEED (default 0). Training tests must pass for any shift:
    `BATCHEMO_TEST_SEED=3 pytest tests/training` checks that an outcome is not a lucky draw."""
    return 1337 + int(os.environ.get("BATCHEMO_TEST_SEED", "0"))
