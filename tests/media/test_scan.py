import os
import sys
from pathlib import Path

import pytest
from conftest import MEDIA, ODD_NAME, needs_shared, write_image, write_video
from helpers import sniff

from batchemo.media import scan as scan_mod
from batchemo.media.scan import IMAGE_EXTS, VIDEO_EXTS, image_format, scan
from batchemo.records import IMAGE, OTHER, VIDEO


def by_source(items):
    return {it.source: it for it in items}


@pytest.fixture
def tree(tmp_path, make_image, make_video):
    root = tmp_path / "archive"
    make_image(root / "b.jpg")
    make_image(root / "a" / "x.png")
    make_image(root / "a" / "deep" / "y.jpeg")
    make_image(root / "a.bmp")
    make_video(root / "clips" / "c.mp4", 0.5, 10)
    make_video(root / "clips" / "d.avi", 0.5, 10, codec="MJPG")
    (root / "clips" / "c.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    (root / "meta.json").write_text("{}")
    (root / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    (root / "README").write_text("no extension")
    make_image(root / ".hidden.jpg")
    make_image(root / ".cache" / "z.jpg")
    return root


def test_exts():
    assert IMAGE_EXTS == {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff",
                          ".gif", ".heic", ".heif", ".avif"}  # fmt: skip (issue 14.10)
    assert VIDEO_EXTS == {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                          ".flv", ".wmv", ".asf", ".3gp", ".3g2", ".ts", ".m2ts", ".mts",
                          ".ogv"}  # fmt: skip (issue 14.10)


def test_walk_types_order_and_fields(tree):
    items = list(scan([str(tree)]))
    sources = [it.source for it in items]
    assert sources == sorted(sources)
    assert sources == [
        "README", "Thumbs.db", "a.bmp", "a/deep/y.jpeg", "a/x.png", "b.jpg",
        "clips/c.mp4", "clips/c.srt", "clips/d.avi", "meta.json",
    ]  # fmt: skip
    got = by_source(items)
    assert {s for s, it in got.items() if it.media_type == IMAGE} == {
        "a.bmp", "a/deep/y.jpeg", "a/x.png", "b.jpg"}  # fmt: skip
    assert {s for s, it in got.items() if it.media_type == VIDEO} == {"clips/c.mp4", "clips/d.avi"}
    for it in items:
        assert it.root == str(tree)
        assert it.path.is_absolute() and it.path == tree / it.source
        assert it.error is None
        st = it.path.stat()
        assert (it.size, it.mtime) == (st.st_size, st.st_mtime)
    assert got["clips/c.srt"].reason == "not media (.srt)"
    assert got["meta.json"].reason == "not media (.json)"
    assert got["Thumbs.db"].reason == "not media (.db)"
    assert got["README"].reason == "not media (no extension)"
    assert all(it.media_type == OTHER for it in items if it.reason)


def test_order_is_deterministic_and_roots_kept_as_given(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    first = list(scan(["archive", Path("archive/clips")]))
    assert first == list(scan(["archive", Path("archive/clips")]))
    assert {it.root for it in first} == {"archive", "archive/clips"}
    clips = [it.source for it in first if it.root == "archive/clips"]
    assert clips == ["c.mp4", "c.srt", "d.avi"]
    assert all(it.path.is_absolute() for it in first)


def test_hidden_entries_skipped_silently(tree):
    assert not [it for it in scan([tree]) if "hidden" in it.source or "cache" in it.source]


def test_single_file_root_uses_its_name(tree):
    (item,) = scan([tree / "a" / "x.png"])
    assert item.source == "x.png" and item.media_type == IMAGE
    assert item.root == str(tree / "a" / "x.png") and item.path == tree / "a" / "x.png"


def test_missing_root(tmp_path):
    (item,) = scan([tmp_path / "nope"])
    assert item.error == "input not found" and item.media_type == OTHER and item.source == ""


def test_include_exclude(tree):
    def sources(**kw):
        return [it.source for it in scan([tree], **kw)]

    assert sources(include=["*.jpg", "*.png"]) == ["a/x.png", "b.jpg"]  # basename match
    assert sources(include=["a/*"]) == ["a/deep/y.jpeg", "a/x.png"]  # '*' crosses '/'
    assert sources(include=["a/*"], exclude=["*.png"]) == ["a/deep/y.jpeg"]  # exclude wins
    assert "a/x.png" not in sources(exclude=["a"])  # an excluded folder is not entered
    assert sources(include=["clips/*"], exclude=["clips/*.srt"]) == ["clips/c.mp4", "clips/d.avi"]


def test_excluded_folder_not_listed(tree, monkeypatch):
    listed = []
    real = os.scandir

    def spy(path):
        listed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(scan_mod.os, "scandir", spy)
    list(scan([tree], exclude=["clips"]))
    assert "clips" not in listed


def test_content_decides_where_extension_lies(tmp_path, make_image, make_video):
    jpeg = make_image("lies/photo.png.tmp.jpg")
    jpeg.rename(tmp_path / "lies" / "photo.png")
    video = make_video("lies/clip.mp4", 0.5, 10)
    video.rename(tmp_path / "lies" / "clip.jpg")
    got = by_source(scan([tmp_path / "lies"]))
    assert got["photo.png"].media_type == IMAGE
    assert got["clip.jpg"].media_type == VIDEO


def test_not_media_with_media_extension_is_error(tmp_path, make_zero_byte, make_text_as_jpg):
    make_zero_byte("bad/empty.mp4")
    make_text_as_jpg("bad/notes.jpg")
    (tmp_path / "bad" / "notes.mov").write_text("hello")
    (tmp_path / "bad" / "iphone.jpg").write_bytes(b"\0\0\0\x18ftypheic" + bytes(100))
    got = by_source(scan([tmp_path / "bad"]))
    assert got["empty.mp4"].error == "empty file (0 bytes)"
    assert got["notes.jpg"].error == "not an image: content is not a known image or video format"
    assert got["notes.mov"].error == "not a video: content is not a known image or video format"
    # HEIF is a supported photo format now (issue 14.10), whatever the extension says
    assert got.pop("iphone.jpg").media_type == IMAGE
    assert all(it.media_type == OTHER and it.reason is None for it in got.values())


SIGNATURES = {
    "jpeg": (b"\xff\xd8\xff\xe0\0\x10JFIF", IMAGE),
    "png": (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", IMAGE),
    "gif": (b"GIF89a\x01\0\x01\0", IMAGE),
    "bmp": (b"BM" + bytes(12) + (40).to_bytes(4, "little"), IMAGE),
    "bmp-like text": (b"BMW service notes, not a bitmap", OTHER),
    "webp": (b"RIFF\0\0\0\0WEBPVP8 ", IMAGE),
    "tiff-le": (b"II*\0\x08\0\0\0", IMAGE),
    "tiff-be": (b"MM\0*\0\0\0\x08", IMAGE),
    "mp4": (b"\0\0\0\x20ftypisom\0\0\x02\0", VIDEO),
    "mov-qt": (b"\0\0\0\x14ftypqt  ", VIDEO),
    "mov-moov": (b"\0\0\x01\0moov", VIDEO),
    "mov-mdat": (b"\0\0\x01\0mdat", VIDEO),
    "mov-wide": (b"\0\0\0\x08wide", VIDEO),
    "avi": (b"RIFF\0\0\0\0AVI LIST", VIDEO),
    "wav": (b"RIFF\0\0\0\0WAVEfmt ", OTHER),
    "mkv": (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", VIDEO),
    "mpeg-ps": (b"\0\0\x01\xba\x44\0", VIDEO),
    "mpeg-es": (b"\0\0\x01\xb3\x14\0", VIDEO),
    "mpeg-ts": (b"\x47" + bytes(187) + b"\x47" + bytes(187), VIDEO),
    "heic": (b"\0\0\0\x18ftypheic", IMAGE),  # decoded with pillow-heif (issue 14.10)
    "m4a": (b"\0\0\0\x18ftypM4A ", OTHER),
    "text": (b"hello world", OTHER),
    "empty": (b"", OTHER),
}


@pytest.mark.parametrize("name", SIGNATURES)
def test_sniff(tmp_path, name):
    head, expected = SIGNATURES[name]
    p = tmp_path / "f.bin"
    p.write_bytes(head + bytes(600))
    if name == "empty":
        p.write_bytes(b"")
    assert sniff(p) == expected


def test_image_format_names():
    assert image_format(SIGNATURES["jpeg"][0]) == "jpeg"
    assert image_format(SIGNATURES["tiff-be"][0]) == "tiff"
    assert image_format(b"hello") is None


def test_odd_names(tmp_path, make_image, make_video):
    make_image(Path("odd") / ODD_NAME)
    make_video("odd/with space/ünï 视频.mp4", 0.5, 10)
    items = list(scan([tmp_path / "odd"]))
    assert [(it.source, it.media_type) for it in items] == [
        (ODD_NAME, IMAGE), ("with space/ünï 视频.mp4", VIDEO)]  # fmt: skip
    assert all(it.path.exists() for it in items)


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes")
def test_name_not_utf8(tmp_path, make_image):
    d = tmp_path / "raw"
    d.mkdir()
    p = make_image("x.jpg")
    os.rename(p, os.path.join(os.fsencode(d), b"caf\xe9.jpg"))
    (item,) = scan([d])
    assert item.source == "caf\\xe9.jpg"  # encodable for the tables, distinct (issue 14.5)
    item.source.encode("utf-8")
    assert item.media_type == IMAGE and item.path.exists()


def test_symlink_loop_terminates(make_symlink_loop):
    d = make_symlink_loop("loop")
    items = list(scan([d]))
    assert [it.source for it in items] == ["a.jpg", "sub/back"]
    assert items[1].error.startswith("symlink loop") and items[1].media_type == OTHER


def test_symlinks_followed_once(tmp_path, make_image):
    outside = tmp_path / "outside"
    make_image(outside / "o.jpg")
    root = tmp_path / "root"
    make_image(root / "real" / "r.jpg")
    os.symlink(root / "real", root / "alias")  # inside the root: scanned as real/
    os.symlink(outside, root / "ext")  # outside: followed
    os.symlink(outside, root / "ext2")  # the same folder again: not twice
    os.symlink(root / "real" / "r.jpg", root / "file_link.jpg")
    os.symlink(tmp_path / "gone.jpg", root / "broken.jpg")
    os.symlink(root / "self.mp4", root / "self.mp4")
    got = by_source(scan([root]))
    assert set(got) == {"broken.jpg", "ext/o.jpg", "file_link.jpg", "real/r.jpg", "self.mp4"}
    assert got["ext/o.jpg"].media_type == IMAGE and got["ext/o.jpg"].path == root / "ext" / "o.jpg"
    # followed once, by real path (issue 14.14): r.jpg is analysed as real/r.jpg only
    assert got["file_link.jpg"].media_type == OTHER
    assert got["file_link.jpg"].reason == "symlink to real/r.jpg, analysed under that name"
    assert got["broken.jpg"].error.startswith("broken symlink")
    assert got["broken.jpg"].media_type == OTHER
    assert got["self.mp4"].error == "symlink loop"


def test_symlink_to_a_folder_above_the_root(tmp_path, make_image):
    root = tmp_path / "top" / "root"
    make_image(root / "r.jpg")
    make_image(tmp_path / "top" / "other" / "o.jpg")
    os.symlink(tmp_path / "top", root / "up")
    got = by_source(scan([root]))
    assert set(got) == {"r.jpg", "up"}  # not up/root/r.jpg, nor up/other/o.jpg
    assert got["up"].error.startswith("symlink loop")


def test_broken_symlink_root(tmp_path):
    os.symlink(tmp_path / "gone", tmp_path / "link")
    (item,) = scan([tmp_path / "link"])
    assert item.error.startswith("broken symlink")


def test_fifo_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    (item,) = scan([tmp_path])
    assert item.media_type == OTHER and item.reason == "not a regular file"


def test_unreadable_file(tmp_path, make_unreadable_file):
    make_unreadable_file("perm/secret.jpg")
    (item,) = scan([tmp_path / "perm"])
    assert item.error == "cannot read file: Permission denied" and item.media_type == OTHER


def test_unreadable_dir(tmp_path, make_image, make_unreadable_dir):
    make_image("perm/ok.jpg")
    make_unreadable_dir("perm/locked")
    got = by_source(scan([tmp_path / "perm"]))
    assert got["ok.jpg"].media_type == IMAGE
    assert got["locked"].error == "cannot list directory: Permission denied"


# The two tests above skip as root (chmod 000 blocks nothing there); these fake the denial.
def test_unreadable_file_simulated(tmp_path, make_image, monkeypatch):
    make_image("perm/secret.jpg")
    make_image("perm/fine.jpg")
    real_open = open

    def deny(path, *args, **kw):
        if Path(path).name == "secret.jpg":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(scan_mod, "open", deny, raising=False)  # shadows the builtin in scan only
    got = by_source(scan([tmp_path / "perm"]))
    assert got["secret.jpg"].error == "cannot read file: Permission denied"
    assert got["secret.jpg"].size > 0 and got["fine.jpg"].media_type == IMAGE


def test_unreadable_dir_simulated(tmp_path, make_image, monkeypatch):
    make_image("perm/locked/inside.jpg")
    make_image("perm/ok.jpg")
    real = os.scandir

    def deny(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(scan_mod.os, "scandir", deny)
    got = by_source(scan([tmp_path / "perm"]))
    assert set(got) == {"locked", "ok.jpg"}
    assert got["locked"].error == "cannot list directory: Permission denied"


def test_root_itself_unlistable(tmp_path, monkeypatch):
    (tmp_path / "r").mkdir()

    def deny(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(scan_mod.os, "scandir", deny)
    (item,) = scan([tmp_path / "r"])
    assert item.source == "" and item.error == "cannot list directory: Permission denied"


def test_scan_is_lazy(tmp_path, monkeypatch):
    for i in range(3):
        write_image(tmp_path / "lazy" / f"{i}.jpg")
        write_image(tmp_path / "lazy" / f"d{i}" / "x.jpg")
    listed, opened = [], []
    real_scandir, real_open = os.scandir, open

    def scandir(path):
        listed.append(Path(path).name)
        return real_scandir(path)

    def spy_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(scan_mod.os, "scandir", scandir)
    monkeypatch.setattr(scan_mod, "open", spy_open, raising=False)  # scan's `open` only
    it = scan([tmp_path / "lazy"])
    assert next(it).source == "0.jpg"
    # One file found means one file read: a scanner that lists or sniffs everything first fails.
    assert "d2" not in listed and "1.jpg" not in opened and "2.jpg" not in opened
    assert len(list(it)) == 5


def test_stat_values(tmp_path):
    p = write_video(tmp_path / "v" / "a.avi", 0.3, 10, codec="MJPG")
    os.utime(p, (1_600_000_000, 1_600_000_000.5))
    (item,) = scan([tmp_path / "v"])
    assert item.mtime == 1_600_000_000.5 and item.size == p.stat().st_size


@needs_shared
def test_real_media_tree():
    items = list(scan([MEDIA]))
    got = by_source(items)
    assert sorted(s for s, it in got.items() if it.media_type == IMAGE) == sorted(
        f"images/{p.name}" for p in (MEDIA / "images").iterdir())  # fmt: skip
    assert sorted(s for s, it in got.items() if it.media_type == VIDEO) == sorted(
        f"videos/{p.name}" for p in (MEDIA / "videos").iterdir())  # fmt: skip
    assert got["README.md"].reason == "not media (.md)"
    assert got["SHA256SUMS"].reason == "not media (no extension)"
    assert not [it for it in items if it.error]
