"""Which kinds of track a Matroska/WebM file holds, read from its Tracks list, so that a sound-only
.mkv/.webm is skipped (no video stream) like an audio-only .mp4 rather than failing to open.

OpenCV only reports that FFmpeg "does not recognise" such a file, the same words as for a damaged
one. This walks EBML element headers (IDs and sizes, RFC 8794) down to each TrackEntry's
TrackType: a few dozen bytes read from the file's start; no installed library does it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

_EBML, _DOC_TYPE = 0x1A45DFA3, 0x4282
_SEGMENT, _TRACKS, _TRACK_ENTRY, _TRACK_TYPE = 0x18538067, 0x1654AE6B, 0xAE, 0x83
_CLUSTER = 0x1F43B675  # frames: the Tracks list always comes before them
_VIDEO, _AUDIO = 1, 2  # TrackType values


def no_video_track(f: BinaryIO, size: int) -> str | None:
    """What a Matroska/WebM file is when its Tracks list has no video track ("audio-only WebM",
    "Matroska without a video track"); None when it has one, or when the list is not found before
    the first frames (a damaged or cut file: the decoder says what is wrong)."""
    doc = "Matroska"
    for ident, start, end in _elements(f, 0, size):
        if ident == _EBML:  # the header: its DocType tells WebM from Matroska
            for child, s, e in _elements(f, start, end):
                if child == _DOC_TYPE and _read(f, s, e).rstrip(b"\0") == b"webm":
                    doc = "WebM"
        elif ident == _SEGMENT:
            for child, s, e in _elements(f, start, end):
                if child == _CLUSTER:
                    return None
                if child == _TRACKS:
                    types = {int.from_bytes(_read(f, vs, ve), "big")
                             for entry, ts, te in _elements(f, s, e) if entry == _TRACK_ENTRY
                             for kind, vs, ve in _elements(f, ts, te) if kind == _TRACK_TYPE}
                    if _VIDEO in types or not types:
                        return None
                    return f"audio-only {doc}" if types == {_AUDIO} else \
                        f"{doc} without a video track"
            return None
    return None


def _read(f: BinaryIO, start: int, end: int) -> bytes:
    f.seek(start)
    return f.read(min(end - start, 64))  # the values read here are a few bytes long


def _vint(data: bytes, at: int) -> tuple[int, int] | None:
    """(length in bytes, raw value with its length marker) of the variable-size integer at `at`."""
    if at >= len(data) or data[at] == 0:
        return None
    n = 9 - data[at].bit_length()  # the marker: 1 leading bit set after n - 1 zero bits
    return (n, int.from_bytes(data[at:at + n], "big")) if at + n <= len(data) else None


def _elements(f: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(ID, payload start, payload end) of each EBML element in [start, end)."""
    at = start
    while at < end:
        f.seek(at)
        head = f.read(12)  # an ID (at most 4 bytes), then a size (at most 8)
        ident, size = _vint(head, 0), None
        if ident is not None:
            size = _vint(head, ident[0])
        if ident is None or ident[0] > 4 or size is None:
            return  # damaged: stop, do not guess
        n, raw = size
        value = raw & ((1 << 7 * n) - 1)  # the size without its marker
        payload = at + ident[0] + n
        # All ones: size unknown (a live stream), up to the end of the enclosing element.
        stop = end if value == (1 << 7 * n) - 1 else payload + value
        if stop > end:
            return  # cut: stop, do not guess
        yield ident[1], payload, stop
        at = stop
