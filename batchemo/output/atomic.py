"""One way to replace a file so that readers see the old one or the new one, never half of it."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

_TEMP = re.compile(r"^\.(?P<target>.+)\.\d+\.tmp$")  # atomic_write's temp names


@contextlib.contextmanager
def atomic_write(path: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it replaces `path`.

    The temp file is fsynced before the rename and the folder after it, so a power cut leaves the
    old file or the new one. On any error the temp file goes and `path` is untouched. `suffix`
    ends the temp name (a writer that checks extensions, e.g. Keras, needs its own).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")  # _TEMP (default suffix)
    try:
        yield tmp
        replace_synced(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_synced(tmp: Path, path: Path) -> None:
    """The end of an atomic write whose temp file a writer named itself (e.g. a video writer
    that needs the real extension): fsync it, rename it over `path`, fsync the folder."""
    _fsync(tmp, os.O_RDONLY)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # some filesystems cannot sync a folder; the rename stands
        _fsync(Path(path).parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def leftover_temps(folder: Path, targets: Iterable[str]) -> list[Path]:
    """Temp files that atomic_write (default suffix) left in `folder` when killed while
    writing one of `targets` (file names): nothing else, whatever its name."""
    targets = set(targets)
    if not folder.is_dir():
        return []
    return [f for f in folder.glob(".*.tmp")
            if (m := _TEMP.match(f.name)) and m["target"] in targets]
