"""Walk input roots into MediaItems; a bad entry becomes an item with a reason, not an exception."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import BinaryIO

from batchemo.media.matroska import no_video_track
from batchemo.records import IMAGE, OTHER, VIDEO, MediaItem

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif",
                        ".heic", ".heif", ".avif"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv",
                        ".wmv", ".asf", ".3gp", ".3g2", ".ts", ".m2ts", ".mts", ".ogv"})
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS

_HEAD_BYTES = 512  # covers every signature below, including the third MPEG-TS sync byte at 376
# QuickTime files may open with any of these atoms instead of 'ftyp'.
_QT_ATOMS = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
# ISO-BMFF brands that are still images (HEIF, AVIF; decoded with Pillow) or audio, not video.
_IMAGE_BRANDS = dict.fromkeys(b"heic heix hevc heim heis mif1 msf1".split(), "heif")
_IMAGE_BRANDS |= dict.fromkeys(b"avif avis".split(), "avif")
_NOT_VIDEO_BRANDS = dict.fromkeys([b"M4A ", b"M4B ", b"M4P "], "audio-only MPEG-4")
_BMP_DIB_SIZES = {12, 40, 52, 56, 64, 108, 124}  # 'BM' alone is too weak a signature
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")  # WMV / ASF header object
_OGG_VIDEO = (b"\x80theora", b"OVP80", b"\x80daala")  # codec headers in an Ogg stream's first page
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # Matroska / WebM


def image_format(head: bytes) -> str | None:
    """The format (jpeg, png, gif, bmp, webp, tiff, heif, avif) named by a file's first bytes,
    or None."""
    if head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS:
        return _IMAGE_BRANDS[head[8:12]]
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


def _sniff_head(head: bytes, strict: bool = False) -> tuple[str, str | None]:
    """(IMAGE | VIDEO | OTHER, what an OTHER is when it is a media container without a video
    stream, e.g. "Ogg audio"; None otherwise).

    `strict` for files whose extension names no media (sidecars, text): a text line could
    pass the weakest signatures ('Get free…' as a QuickTime atom, 'G' at 0 and 188 as MPEG-TS).
    """
    if image_format(head):
        return IMAGE, None
    if head[4:8] == b"ftyp" and head[8:12] in _NOT_VIDEO_BRANDS:
        return OTHER, _NOT_VIDEO_BRANDS[head[8:12]]
    if head[:3] == b"FLV" and len(head) > 4:  # flags byte: 1 = has video
        return (VIDEO, None) if head[4] & 1 else (OTHER, "audio-only Flash Video")
    if head[:4] == b"OggS":
        return (VIDEO, None) if any(m in head for m in _OGG_VIDEO) else (OTHER, "Ogg audio")
    packets = 3 if strict else 2
    if (
        (head[4:8] in _QT_ATOMS and not (strict and head[0]))  # atom size: binary, not text
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head.startswith(_EBML_MAGIC)  # Matroska / WebM
        or head[:4] in (b"\0\0\1\xba", b"\0\0\1\xb3")  # MPEG program / video elementary stream
        or head[:16] == _ASF_GUID  # WMV / ASF
        or _sync_bytes(head, 0, 188, packets)  # MPEG transport stream
        or _sync_bytes(head, 4, 192, packets)  # M2TS / AVCHD (.mts): 4-byte time code first
    ):
        return VIDEO, None
    return OTHER, None


def _sniff_file(f: BinaryIO, size: int, strict: bool = False) -> tuple[str, str | None]:
    """_sniff_head on an open file, and an MPEG-4/QuickTime or Matroska/WebM "video" without a
    video track is OTHER (audio-only). `strict`: the extension names no media, so text is never
    media."""
    head = f.read(_HEAD_BYTES)
    # every media header holds control bytes (NUL above all); text has none
    if strict and not any(b < 9 or 13 < b < 32 for b in head):
        return OTHER, None
    kind, what = _sniff_head(head, strict)
    if kind == VIDEO and head[4:8] in _QT_ATOMS:
        what = _bmff_no_video(f, size)
    elif kind == VIDEO and head.startswith(_EBML_MAGIC):
        what = no_video_track(f, size)
    return (OTHER if what else kind), what


def _bmff_no_video(f: BinaryIO, size: int) -> str | None:
    """What an MPEG-4/QuickTime file is when its track list (moov) has no video track ("audio-only
    MPEG-4"); None when it has one, or when the list cannot be found (a truncated file: the decoder
    says what is wrong).

    FFmpeg's own files say 'isom', not 'M4A ', whatever they hold, and OpenCV only reports
    that it cannot open them. This walks box headers down to each track's handler type (about
    twenty small reads, the sample tables never read); no installed library does it.
    """
    for kind, start, end in _boxes(f, 0, size):
        if kind == b"moov":
            handlers = set()
            for trak in (b for b in _boxes(f, start, end) if b[0] == b"trak"):
                for mdia in (b for b in _boxes(f, trak[1], trak[2]) if b[0] == b"mdia"):
                    for hdlr in (b for b in _boxes(f, mdia[1], mdia[2]) if b[0] == b"hdlr"):
                        f.seek(hdlr[1] + 8)  # version/flags, pre_defined (QuickTime: 'mhlr')
                        handlers.add(f.read(4))
            if b"vide" in handlers or not handlers:
                return None
            return "audio-only MPEG-4" if b"soun" in handlers else "MPEG-4 without a video track"
    return None


def _boxes(f: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each ISO-BMFF box in [start, end)."""
    at = start
    while at + 8 <= end:
        f.seek(at)
        header = f.read(16)
        if len(header) < 8:
            return
        length, kind = struct.unpack(">I4s", header[:8])
        skip = 8
        if length == 1 and len(header) == 16:  # 64-bit size follows
            length, skip = struct.unpack(">Q", header[8:])[0], 16
        elif length == 0:  # to the end of the enclosing box
            length = end - at
        if length < skip or at + length > end:
            return  # damaged or cut: stop, do not guess
        yield kind, at + skip, at + length
        at += length


def _sync_bytes(head: bytes, start: int, step: int, n: int) -> bool:
    at = range(start, start + step * n, step)
    return len(head) > at[-1] and all(head[i] == 0x47 for i in at)


def scan(
    roots: Sequence[str | Path], include: Sequence[str] = (), exclude: Sequence[str] = (),
    skip: Sequence[str | Path] = (),
) -> Iterator[MediaItem]:
    """Yield one MediaItem per file under each root (a directory, walked recursively, or a file).

    Items come root by root, each root's sorted by `source`. Hidden entries are left out;
    include/exclude globs match `source` (a pattern without '/' also matches the file name)
    and exclude wins; an excluded directory is not entered. A file given as a root is always
    yielded, its `source` being its name. Only files with a media extension are opened: their
    content decides IMAGE or VIDEO, and content that is neither makes an error item; sound
    only (an MPEG-4 without a video track, Ogg or Flash audio) comes as OTHER with a `reason`
    (skipped), like other files. Unreadable entries, broken links and
    symlink loops come as OTHER items with `error` set. Files and folders in `skip` (a run's
    own outputs and state, when they lie inside a root) are left out silently.
    """
    skipped = frozenset(q for p in skip for q in (os.path.abspath(p), os.path.realpath(p)))
    for root in roots:
        yield from _scan_root(os.fspath(root), tuple(include), tuple(exclude), skipped)


Globs = tuple[str, ...]


def _scan_root(root: str, include: Globs, exclude: Globs,
               skip: frozenset[str] = frozenset()) -> Iterator[MediaItem]:
    # abspath, not resolve: `path` keeps the user's symlinked folder names
    top = Path(os.path.abspath(root))
    root = table_safe(root)  # the `root` column; `top` keeps the real bytes
    try:
        st = top.stat()
    except OSError as e:
        missing = e.errno == errno.ENOENT and not top.is_symlink()
        yield _error(root, "", top, "input not found" if missing else _os_reason(e, top))
        return
    if not stat.S_ISDIR(st.st_mode):
        yield _file_item(root, table_safe(top.name), top)
        return
    real = os.path.realpath(top)
    walk = _Walk(root, real, include, exclude, skip)
    yield from walk.directory(top, "", real)


class _Walk:
    def __init__(self, root: str, root_real: str, include: Globs, exclude: Globs,
                 skip: frozenset[str] = frozenset()):
        self.root, self.root_real = root, root_real
        self.include, self.exclude = include, exclude
        self.skip = skip
        self.visited = {root_real}
        self.linked: dict[str, str] = {}  # real path of a followed file link → its source

    def file(self, source: str, path: Path, entry: os.DirEntry) -> MediaItem:
        """A file, or a file symlink followed once by real path: a link to a file inside the
        root is skipped (the file is analysed under its own name), a link out of the root is
        followed unless another link led to the same file."""
        if entry.is_symlink():
            real = os.path.realpath(path)
            if os.path.isfile(real):
                if _inside(real, self.root_real):
                    to = table_safe(os.path.relpath(real, self.root_real).replace(os.sep, "/"))
                    why = f"symlink to {to}, analysed under that name"
                elif real in self.linked:
                    why = f"symlink to the same file as {self.linked[real]}"
                else:
                    self.linked[real] = source
                    return _file_item(self.root, source, path)
                return MediaItem(self.root, source, path, OTHER, *_stat_or_zero(path), reason=why)
        return _file_item(self.root, source, path)

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
            source = table_safe(source)
            child = Path(entry.path)
            # by the path as walked and by the real one (the root may be a link, or spelled
            # otherwise than --out), without a syscall: real_path is this folder's real path
            if entry.path in self.skip or os.path.join(real_path, entry.name) in self.skip:
                continue
            if not key.endswith("/"):
                if _wanted(source, self.include, self.exclude):
                    yield self.file(source, child, entry)
                continue
            if _matches(source, self.exclude):
                continue
            real = os.path.realpath(child)
            if real in self.skip:
                continue
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
        return _probe(root, source, path, ext)
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
            kind, what = _sniff_file(f, st.st_size)
    except OSError as e:
        return _error(root, source, path, f"cannot read file: {e.strerror or e}", st)
    if kind != OTHER:
        return MediaItem(root, source, path, kind, st.st_size, st.st_mtime)
    if what:  # sound only, under any media extension: skipped, like a .m4a
        return MediaItem(root, source, path, OTHER, st.st_size, st.st_mtime,
                         reason=f"no video stream ({what})")
    expected = "not an image" if ext in IMAGE_EXTS else "not a video"
    return _error(root, source, path, f"{expected}: content is not a known image or video format",
                  st)


def _probe(root: str, source: str, path: Path, ext: str) -> MediaItem:
    """A file whose extension names no media: its content decides (a photo or video under any
    name is analysed); anything else, or anything unreadable, is skipped as not media."""
    size, mtime = _stat_or_zero(path)
    with contextlib.suppress(OSError):
        st = path.stat()
        if stat.S_ISREG(st.st_mode) and st.st_size:
            with open(path, "rb") as f:
                kind = _sniff_file(f, st.st_size, strict=True)[0]
            if kind != OTHER:
                return MediaItem(root, source, path, kind, st.st_size, st.st_mtime)
    why = f"not media ({ext})" if ext else "not media (no extension)"
    return MediaItem(root, source, path, OTHER, size, mtime, reason=why)


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


def table_safe(name: str) -> str:
    """A file name as the tables hold it: bytes that are not UTF-8 (lone surrogates here, which
    Parquet/CSV cannot encode) become backslash escapes, `\\xff`, so that two such names stay
    two names (U+FFFD made `\\xff.jpg` and `\\xfe.jpg` one). `path` keeps the real name."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
