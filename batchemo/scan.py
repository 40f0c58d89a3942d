"""Walk input roots into MediaItems; a bad entry becomes an item with a reason, not an exception."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from .records import IMAGE, OTHER, VIDEO, MediaItem

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS

_HEAD_BYTES = 512  # covers every signature below, including the second MPEG-TS sync byte at 188
# QuickTime files may open with any of these atoms instead of 'ftyp'.
_QT_ATOMS = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
# ISO-BMFF brands that are still images (HEIF/AVIF) or audio, not video.
_NOT_VIDEO_BRANDS = dict.fromkeys(b"heic heix hevc heim heis mif1 msf1".split(), "HEIF image")
_NOT_VIDEO_BRANDS |= dict.fromkeys(b"avif avis".split(), "AVIF image")
_NOT_VIDEO_BRANDS |= dict.fromkeys([b"M4A ", b"M4B ", b"M4P "], "audio-only MPEG-4")
_BMP_DIB_SIZES = {12, 40, 52, 56, 64, 108, 124}  # 'BM' alone is too weak a signature


def image_format(head: bytes) -> str | None:
    """The format (jpeg, png, gif, bmp, webp, tiff) named by a file's first bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):  # classic and BigTIFF
        return "tiff"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    return None


def _sniff_head(head: bytes) -> tuple[str, str | None]:
    """(IMAGE | VIDEO | OTHER, what an OTHER actually is when known)."""
    if image_format(head):
        return IMAGE, None
    if head[4:8] == b"ftyp" and head[8:12] in _NOT_VIDEO_BRANDS:
        return OTHER, _NOT_VIDEO_BRANDS[head[8:12]]
    if (
        head[4:8] in _QT_ATOMS
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head.startswith(b"\x1a\x45\xdf\xa3")  # Matroska / WebM (EBML)
        or head[:4] in (b"\0\0\1\xba", b"\0\0\1\xb3")  # MPEG program / video elementary stream
        or (len(head) > 188 and head[0] == head[188] == 0x47)  # MPEG transport stream
    ):
        return VIDEO, None
    return OTHER, None


def sniff(path: Path) -> str:
    """IMAGE, VIDEO or OTHER from the file's first bytes; raises OSError if it cannot be read."""
    with open(path, "rb") as f:
        return _sniff_head(f.read(_HEAD_BYTES))[0]


def scan(
    roots: Sequence[str | Path], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Iterator[MediaItem]:
    """Yield one MediaItem per file under each root (a directory, walked recursively, or a file).

    Items come root by root, each root's sorted by `source`. Hidden entries are left out;
    include/exclude globs match `source` (a pattern without '/' also matches the file name)
    and exclude wins; an excluded directory is not entered. A file given as a root is always
    yielded, its `source` being its name. Only files with a media extension are opened: their
    content decides IMAGE or VIDEO, and content that is neither makes an error item. Other
    files come as OTHER with a `reason` (skipped). Unreadable entries, broken links and
    symlink loops come as OTHER items with `error` set.
    """
    for root in roots:
        yield from _scan_root(os.fspath(root), tuple(include), tuple(exclude))


Globs = tuple[str, ...]


def _scan_root(root: str, include: Globs, exclude: Globs) -> Iterator[MediaItem]:
    # abspath, not resolve: `path` keeps the user's symlinked folder names
    top = Path(os.path.abspath(root))
    try:
        st = top.stat()
    except OSError as e:
        missing = e.errno == errno.ENOENT and not top.is_symlink()
        yield _error(root, "", top, "input not found" if missing else _os_reason(e, top))
        return
    if not stat.S_ISDIR(st.st_mode):
        yield _file_item(root, _table_safe(top.name), top)
        return
    real = os.path.realpath(top)
    walk = _Walk(root, real, include, exclude)
    yield from walk.directory(top, "", real)


class _Walk:
    def __init__(self, root: str, root_real: str, include: Globs, exclude: Globs):
        self.root, self.root_real = root, root_real
        self.include, self.exclude = include, exclude
        self.visited = {root_real}

    def directory(self, path: Path, rel: str, real_path: str) -> Iterator[MediaItem]:
        try:
            with os.scandir(path) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError as e:
            yield _error(self.root, rel, path, f"cannot list directory: {e.strerror or e}")
            return
        # A directory sorts as 'name/': a depth-first walk in that order yields sources in
        # plain string order ('a.txt' < 'a/b.jpg'), so nothing has to be collected and sorted.
        keyed = [(e.name + "/" if _is_dir(e) else e.name, e) for e in entries]
        for key, entry in sorted(keyed, key=lambda k: k[0]):
            source = f"{rel}/{entry.name}" if rel else entry.name
            source = _table_safe(source)
            child = Path(entry.path)
            if not key.endswith("/"):
                if _wanted(source, self.include, self.exclude):
                    yield _file_item(self.root, source, child)
                continue
            if _matches(source, self.exclude):
                continue
            real = os.path.realpath(child)
            if _inside(real_path, real):  # the link leads back to where we are
                why = "symlink loop: links to an enclosing directory"
                yield _error(self.root, source, child, why)
                continue
            if real in self.visited or (entry.is_symlink() and _inside(real, self.root_real)):
                # scanned under its real path already (or will be): walking it again would
                # give every file twice under two sources
                log.debug("not following %s: directory scanned elsewhere", child)
                continue
            self.visited.add(real)
            yield from self.directory(child, source, real)


def _file_item(root: str, source: str, path: Path) -> MediaItem:
    ext = path.suffix.lower()
    if ext not in MEDIA_EXTS:
        size, mtime = _stat_or_zero(path)
        why = f"not media ({ext})" if ext else "not media (no extension)"
        return MediaItem(root, source, path, OTHER, size, mtime, reason=why)
    try:
        st = path.stat()
    except OSError as e:
        return _error(root, source, path, _os_reason(e, path))
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read below forever
        return MediaItem(root, source, path, OTHER, 0, st.st_mtime, reason="not a regular file")
    if st.st_size == 0:
        return _error(root, source, path, "empty file (0 bytes)", st)
    try:
        with open(path, "rb") as f:
            kind, what = _sniff_head(f.read(_HEAD_BYTES))
    except OSError as e:
        return _error(root, source, path, f"cannot read file: {e.strerror or e}", st)
    if kind != OTHER:
        return MediaItem(root, source, path, kind, st.st_size, st.st_mtime)
    expected = "not an image" if ext in IMAGE_EXTS else "not a video"
    detail = f"{what} is not supported" if what else "content is not a known image or video format"
    return _error(root, source, path, f"{expected}: {detail}", st)


def _error(
    root: str, source: str, path: Path, error: str, st: os.stat_result | None = None
) -> MediaItem:
    size, mtime = (st.st_size, st.st_mtime) if st else _stat_or_zero(path)
    return MediaItem(root, source, path, OTHER, size, mtime, error=error)


def _os_reason(e: OSError, path: Path) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT and path.is_symlink():
        return f"broken symlink (to {os.readlink(path)})"
    if e.errno == errno.ENOENT:
        return "file vanished during the scan"
    return f"cannot access: {e.strerror or e}"


def _stat_or_zero(path: Path) -> tuple[int, float]:
    for follow in (True, False):
        try:
            st = os.stat(path, follow_symlinks=follow)
            return st.st_size, st.st_mtime
        except OSError:
            continue
    return 0, 0.0


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; False for broken ones
    except OSError:
        return False


def _inside(real: str, folder_real: str) -> bool:
    return real == folder_real or real.startswith(folder_real.rstrip(os.sep) + os.sep)


def _matches(source: str, patterns: Globs) -> bool:
    name = source.rsplit("/", 1)[-1]
    return any(fnmatchcase(source, p) or ("/" not in p and fnmatchcase(name, p)) for p in patterns)


def _wanted(source: str, include: Globs, exclude: Globs) -> bool:
    return (not include or _matches(source, include)) and not _matches(source, exclude)


def _table_safe(source: str) -> str:
    # Names that are not valid UTF-8 arrive as lone surrogates, which Parquet/CSV cannot encode;
    # `source` shows them as U+FFFD while `path` keeps the real name for opening the file.
    try:
        source.encode("utf-8")
        return source
    except UnicodeEncodeError:
        return source.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
