"""Hostile media for the adversarial rounds (issue 28): files that are small on disk but try to
make a decoder allocate too much, or whose headers mislead. Built from numpy, OpenCV and struct
only (no FFmpeg binary or PyAV is needed), so every test machine can make them.

Each function writes one file at `path` and returns the path. Videos with bad timestamps are in
hostile.py; `python bench/make_hostile.py DIR` writes every file of both into DIR.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from hostile import ebml_element, ebml_text, ebml_uint, write_mkv

BOMB_SIDE = 12000  # 12000² = 144 MP, over the 100 MP limit


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def bigtiff_bomb(path: Path, side: int = BOMB_SIDE) -> Path:
    """A BigTIFF (version 43, 64-bit offsets) of side² gray pixels, deflated: ~140 KB on disk
    for a 144 MB decode. One strip; the zeros are compressed in pieces, never held whole."""
    packer, rows = zlib.compressobj(9), bytes(side) * 500
    strip = b"".join(packer.compress(rows[: side * min(500, side - y)])
                     for y in range(0, side, 500)) + packer.flush()
    # (tag, type, value): LONG8 = 16, SHORT = 3; 259 = 8 is Adobe deflate, 262 = 1 black is zero
    tags = [(256, 16, side), (257, 16, side), (258, 3, 8), (259, 3, 8), (262, 3, 1),
            (273, 16, 0), (277, 3, 1), (278, 16, side), (279, 16, len(strip))]
    ifd_at = 16
    strip_at = ifd_at + 8 + 20 * len(tags) + 8
    out = b"II" + struct.pack("<HHHQ", 43, 8, 0, ifd_at) + struct.pack("<Q", len(tags))
    for tag, kind, value in tags:
        out += struct.pack("<HHQQ", tag, kind, 1, strip_at if tag == 273 else value)
    path.write_bytes(out + struct.pack("<Q", 0) + strip)
    return path


def jpeg_bomb_with_junk(path: Path, side: int = BOMB_SIDE) -> Path:
    """A 16×16 JPEG whose SOF claims side×side, with one 0x00 byte after APP0: a strict marker
    walk gives up at the junk byte while libjpeg skips it ("extraneous bytes") and decodes a
    side² image, the missing rows gray."""
    data = _jpeg(np.full((16, 16, 3), 128, np.uint8))
    sof = data.find(b"\xff\xc0")
    data = data[: sof + 5] + struct.pack(">HH", side, side) + data[sof + 9 :]
    app0_end = 4 + struct.unpack(">H", data[4:6])[0]
    path.write_bytes(data[:app0_end] + b"\x00" + data[app0_end:])
    return path


def mjpeg_bomb_avi(path: Path, side: int = BOMB_SIDE, frames: int = 2) -> Path:
    """An MJPEG AVI of `frames` real side×side gray frames (~0.6 MB each: a flat image)."""
    frame = _jpeg(np.full((side, side), 100, np.uint8), quality=50)
    return _avi(path, [frame] * frames, side, side, fps=10)


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _list(kind: bytes, payload: bytes) -> bytes:
    return _chunk(b"LIST", kind + payload)


def _avi(path: Path, jpegs: list[bytes], width: int, height: int, fps: int) -> Path:
    """A minimal AVI 1.0 (RIFF, one MJPG video stream, idx1 index) around JPEG frames."""
    n, biggest = len(jpegs), max(len(j) for j in jpegs)
    avih = struct.pack("<14I", 1_000_000 // fps, 0, 0, 0x10, n, 0, 1, biggest, width, height,
                       0, 0, 0, 0)
    strh = (b"vids" + b"MJPG" + struct.pack("<IHHIIIIIIiI", 0, 0, 0, 0, 1, fps, 0, n, biggest,
                                            -1, 0) + struct.pack("<4h", 0, 0, width, height))
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3,
                       0, 0, 0, 0)
    hdrl = _list(b"hdrl", _chunk(b"avih", avih)
                 + _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf)))
    movi, index, offset = b"", b"", 4
    for j in jpegs:
        index += b"00dc" + struct.pack("<III", 0x10, offset, len(j))
        chunk = _chunk(b"00dc", j)
        movi += chunk
        offset += len(chunk)
    body = b"AVI " + hdrl + _list(b"movi", movi) + _chunk(b"idx1", index)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def thin_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG of width×height (20000×3 or 3×20000: too thin for any face)."""
    rng = np.random.default_rng(28)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), np.uint8))
    return path


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, payload: bytes) -> bytes:
    return _box(kind, b"\0\0\0\0" + payload)  # version 0, flags 0


def audio_only_mp4(path: Path, seconds: int = 1, rate: int = 8000) -> Path:
    """An MPEG-4 file (brand 'isom', as FFmpeg writes) with one 16-bit PCM sound track and no
    video track; the moov box after mdat, as without `-movflags faststart`."""
    samples = seconds * rate
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    mdat = _box(b"mdat", bytes(2 * samples))
    mvhd = _full_box(b"mvhd", struct.pack(">IIIIIH10x", 0, 0, 1000, 1000 * seconds, 0x10000,
                                          0x100) + matrix + bytes(24) + struct.pack(">I", 2))
    tkhd = _box(b"tkhd", struct.pack(">IIIIII8xHHH2x", 3, 0, 0, 1, 0, 1000 * seconds, 0, 0,
                                     0x100) + matrix + struct.pack(">II", 0, 0))
    mdhd = _full_box(b"mdhd", struct.pack(">IIIIHH", 0, 0, rate, samples, 0x55C4, 0))
    hdlr = _full_box(b"hdlr", struct.pack(">I", 0) + b"soun" + bytes(12) + b"SoundHandler\0")
    twos = _box(b"twos", bytes(6) + struct.pack(">HHHIHHHHI", 1, 0, 0, 0, 1, 16, 0, 0,
                                                 rate << 16))
    stbl = _box(b"stbl", _full_box(b"stsd", struct.pack(">I", 1) + twos)
                + _full_box(b"stts", struct.pack(">III", 1, samples, 1))
                + _full_box(b"stsc", struct.pack(">IIII", 1, 1, samples, 1))
                + _full_box(b"stsz", struct.pack(">II", 2, samples))
                + _full_box(b"stco", struct.pack(">II", 1, len(ftyp) + 8)))
    dinf = _box(b"dinf", _full_box(b"dref", struct.pack(">I", 1)
                                   + _box(b"url ", b"\0\0\0\1")))
    minf = _box(b"minf", _full_box(b"smhd", bytes(4)) + dinf + stbl)
    trak = _box(b"trak", tkhd + _box(b"mdia", mdhd + hdlr + minf))
    path.write_bytes(ftyp + mdat + _box(b"moov", mvhd + trak))
    return path


def offset_mkv(path: Path, start_s: float = 1e9, frames: int = 144, fps: float = 24.0,
               size: tuple[int, int] = (48, 64)) -> Path:
    """An intact MJPEG Matroska file whose timestamps start at `start_s` seconds (what
    `ffmpeg -output_ts_offset` or a cut broadcast recording gives); its Duration states the
    absolute end, as FFmpeg's muxer writes it (hostile.write_mkv)."""
    images = [np.full((*size, 3), (k * 7) % 256, np.uint8) for k in range(frames)]
    return write_mkv(path, images, [start_s + k / fps for k in range(frames)], fps)


def audio_only_mkv(path: Path, doc_type: str = "matroska", seconds: int = 1,
                   rate: int = 8000) -> Path:
    """A Matroska file (DocType "matroska" or "webm") with one 16-bit PCM sound track and no
    video track, laid out as FFmpeg's muxer writes it: a SeekHead and a Void before Info, Tracks,
    then one cluster of samples. (Real WebM carries Opus or Vorbis; the scan reads only the
    track list.)"""
    header = ebml_element(0x1A45DFA3, ebml_uint(0x4286, 1) + ebml_uint(0x42F7, 1) + ebml_uint(0x42F2, 4)
                          + ebml_uint(0x42F3, 8) + ebml_text(0x4282, doc_type) + ebml_uint(0x4287, 4)
                          + ebml_uint(0x4285, 2))
    info = ebml_element(0x1549A966, ebml_uint(0x2AD7B1, 1_000_000)
                        + ebml_element(0x4489, struct.pack(">d", seconds * 1000.0)))
    audio = ebml_element(0xE1, ebml_element(0xB5, struct.pack(">d", rate)) + ebml_uint(0x9F, 1)
                         + ebml_uint(0x6264, 16))
    track = ebml_element(0xAE, ebml_uint(0xD7, 1) + ebml_uint(0x73C5, 1) + ebml_uint(0x83, 2)  # audio track 1
                         + ebml_text(0x86, "A_PCM/INT/LIT") + audio)
    block = b"\x81" + struct.pack(">hB", 0, 0x80) + bytes(2 * rate * seconds)
    body = (ebml_element(0x114D9B74, b"") + ebml_element(0xEC, bytes(40))  # SeekHead, Void
            + info + ebml_element(0x1654AE6B, track)
            + ebml_element(0x1F43B675, ebml_uint(0xE7, 0) + ebml_element(0xA3, block)))
    path.write_bytes(header + ebml_element(0x18538067, body))
    return path


def truncated_mp4(path: Path, source: Path, keep: float = 0.6) -> Path:
    """`source` (an MP4) cut after `keep` of its bytes: FFmpeg complains on stderr about it."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path



def faststart_mp4(path: Path, source: Path) -> Path:
    """`source` (an MP4 with moov after mdat, as OpenCV writes it) with moov moved before
    mdat (`-movflags faststart`): cut, it still opens, and FFmpeg logs "partial file" per
    packet it cannot read."""
    data = source.read_bytes()
    boxes, at = {}, 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        boxes[kind] = data[at : at + size]
        at += size
    moov = bytearray(boxes[b"moov"])
    shift = len(moov)
    at = moov.find(b"stco")
    while at >= 0:
        (count,) = struct.unpack(">I", moov[at + 8 : at + 12])
        for k in range(count):
            pos = at + 12 + 4 * k
            moov[pos : pos + 4] = struct.pack(">I", struct.unpack(">I", moov[pos : pos + 4])[0]
                                              + shift)
        at = moov.find(b"stco", at + 4)
    head = b"".join(v for k, v in boxes.items() if k not in (b"moov", b"mdat"))
    path.write_bytes(head + bytes(moov) + boxes[b"mdat"])
    return path
