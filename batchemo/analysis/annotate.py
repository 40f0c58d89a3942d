"""The faces behind the numbers: face crops and annotated frames, read back from the source media.

The faces table holds each face's source, frame_index and box, so a run stores no pixels: frames
are decoded again here with the numbering decode.py uses (every grab() counts a frame).
`batchemo annotate` draws boxes, track ids, labels and confidences on sampled frames (JPEG) and,
with --video, on the whole clip (VP8 WebM, which OpenCV's pip wheels can write and browsers play).
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from batchemo._util.quiet import fd2_silenced
from batchemo.analysis.plots import class_colour
from batchemo.errors import MediaError, OutputError
from batchemo.output.atomic import atomic_write, replace_synced

log = logging.getLogger("batchemo")

# (fourcc, suffix) tried in order. OpenCV's wheels cannot write H.264; VP8 in WebM plays in every
# current browser; MPEG-4 Part 2 is the fallback where VP8 is missing (players, not browsers).
VIDEO_CODECS = (("VP80", ".webm"), ("mp4v", ".mp4"))
MAX_VIDEO_WIDTH = 1280  # annotated videos of 4K sources stay small and quick to encode
SEEK_GAP_SEC = 30.0  # wanted frames further apart are reached by seeking, not decoding through


def source_path(root: str, source: str) -> Path:
    """The file a (root, source) row came from; a root that is itself the file is the file."""
    r = Path(str(root))
    return r if r.is_file() else r / str(source)


def source_problem(path: Path, files_row: dict | None = None) -> str | None:
    """Why frames cannot be taken from `path` now (None when they can): gone, or changed since
    the run (size or content fingerprint differ from the files table's row)."""
    if not path.is_file():
        return "source file not found"
    if files_row:
        size = files_row.get("size")
        try:
            now = path.stat().st_size
        except OSError:
            return "source file unreadable"
        if size is not None and not pd.isna(size) and int(size) != now:
            return "source file changed since the run"
        fp = files_row.get("fingerprint")
        if isinstance(fp, str) and fp:
            from batchemo.output.ledger import fingerprint

            try:
                if fingerprint(path, now) != fp:
                    return "source file changed since the run"
            except OSError:
                return "source file unreadable"
    return None


def read_frames(path: Path, media_type: str, wanted: Iterable[int],
                times: dict[int, float] | None = None,
                seek_gap: float = SEEK_GAP_SEC) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, upright BGR image) for the wanted frame indices.

    Images give frame 0 (EXIF orientation applied, as the run saw it). Videos are found by the
    run's own numbering: decoded sequentially, every grab() counting a frame as decode.py
    counts it, retrieve() only for wanted ones. With `times` (t_sec of the wanted frames, as
    the run recorded them) a wanted frame more than `seek_gap` seconds ahead is reached by
    seeking a second before it and matching timestamps (within half a frame), so a face near
    the end of a long video does not cost decoding all of it; the frame count resumes from the
    matched frame. A seek is tried only where the run's times and frame indices agree (within
    2×) on how far ahead the frame is: after a timestamp jump they do not, and a seek lands
    nowhere near. Frames a seek did not find are then found by decoding from the start, so
    they come last; frames that fail to decode are left out. Otherwise in index order.
    """
    want = sorted({int(i) for i in wanted})
    if not want:
        return
    if media_type == "image":
        from batchemo.media.decode import read_image

        if want[0] == 0:
            yield 0, read_image(path)
        return
    found: set[int] = set()
    sought = [False]
    for index, image in _decode_wanted(path, want, times or {}, seek_gap, sought):
        found.add(index)
        yield index, image
    missed = [i for i in want if i not in found]
    if missed and sought[0]:  # a seek passed them by: decode from the start, no seeking
        yield from _decode_wanted(path, missed, {}, seek_gap, sought)


def _decode_wanted(path: Path, want: list[int], times: dict[int, float], seek_gap: float,
                   sought_any: list[bool]) -> Iterator[tuple[int, np.ndarray]]:
    """One pass of `read_frames` over a video; sets sought_any[0] when it seeks."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps < 1000 else 25.0
    half = 0.5 / fps
    try:
        index, k, misses, t, sought = -1, 0, 0, 0.0, -1
        while k < len(want) and misses < 25:  # 25 failed grabs in a row: the stream is over
            goal = times.get(want[k])
            if (goal is not None and goal - t > seek_gap and sought != k and index is not None
                    and _agree(goal - t, (want[k] - index) / fps)):
                cap.set(cv2.CAP_PROP_POS_MSEC, max(goal - 1.0, 0.0) * 1000.0)
                index, sought = None, k  # unknown until a timestamp matches; one seek a frame
                sought_any[0] = True
            if not cap.grab():
                misses += 1
                continue
            misses = 0
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if index is None:
                if goal is None or t < goal - half:
                    continue
                if t > goal + half:  # passed it: this one is left to the second pass
                    k += 1
                    continue
                index = want[k]
            else:
                index += 1
            if index < want[k]:
                continue
            while k < len(want) and want[k] < index:  # skipped by a decode failure
                k += 1
            if k < len(want) and want[k] == index:
                ok, image = cap.retrieve()
                k += 1
                if ok and image is not None:
                    yield index, image
    finally:
        cap.release()


def _agree(seconds_ahead: float, frames_ahead_sec: float) -> bool:
    """Whether the time to a frame and its distance in frames (as seconds) agree within 2×."""
    return 0.5 * frames_ahead_sec <= seconds_ahead <= 2.0 * frames_ahead_sec


def crop_box(image: np.ndarray, x: float, y: float, w: float, h: float, size: int = 80,
             pad: float = 0.15) -> np.ndarray:
    """A square crop around the box (padded by `pad` of its size, clipped), resized to `size`."""
    ih, iw = image.shape[:2]
    side = max(w, h) * (1 + 2 * pad)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    x1, y1 = int(min(cx + side / 2, iw)), int(min(cy + side / 2, ih))
    if x1 <= x0 or y1 <= y0:
        return np.full((size, size, 3), 128, np.uint8)
    crop = image[y0:y1, x0:x1]
    scale = size / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.full((size, size, 3), 128, np.uint8)
    oy, ox = (size - crop.shape[0]) // 2, (size - crop.shape[1]) // 2
    out[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    return out


def jpeg(image: np.ndarray, quality: int = 70) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _bgr(name: object) -> tuple[int, int, int]:
    h = class_colour(str(name)).lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def _ascii(text: str) -> str:
    # Hershey fonts draw ASCII only; anything else would come out as '?' boxes.
    return text.encode("ascii", "replace").decode("ascii")


def face_label(row: dict) -> str:
    """'#3 happy 0.82' (track id, top class, confidence); no '#' part for untracked faces."""
    tid = row.get("track_id")
    head = "" if tid is None or pd.isna(tid) else f"#{int(tid)} "
    conf = row.get("confidence")
    tail = "" if conf is None or pd.isna(conf) else f" {float(conf):.2f}"
    return _ascii(f"{head}{row.get('emotion')}{tail}")


def draw_faces(image: np.ndarray, rows: Iterable[dict], scale: float = 1.0) -> np.ndarray:
    """Boxes (in the class's colour) with track id, label and confidence, drawn on a copy."""
    out = image.copy()
    thick = max(2, round(max(out.shape[:2]) / 500))  # 1 px lines vanish in JPEG
    font = max(0.4, max(out.shape[:2]) / 1600)
    for r in rows:
        x, y, w, h = (int(round(float(r[k]) * scale)) for k in ("x", "y", "w", "h"))
        colour = _bgr(r.get("emotion"))
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thick, cv2.LINE_AA)
        text = face_label(r)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, max(1, thick - 1))
        ty = y - 4 if y - th - base - 4 >= 0 else y + h + th + 4
        cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + base // 2), colour, -1)
        cv2.putText(out, text, (x + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), max(1, thick - 1), cv2.LINE_AA)
    return out


def safe_name(source: str, root: str = "") -> str:
    """A file name for a source: readable, and unique per (root, source)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(source)).strip("_")[-80:] or "file"
    return f"{stem}-{zlib.crc32(chr(0).join((str(root), str(source))).encode()):08x}"


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


@dataclass
class AnnotateResult:
    """What `annotate` wrote, and the sources it could not read (with the reason)."""

    frames: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def pick_frames(faces: pd.DataFrame, frames: pd.DataFrame | None, every: float,
                changes: bool, segs: pd.DataFrame | None = None) -> list[int]:
    """Frame indices of one video to annotate: the first sampled frame at or after each multiple
    of `every` seconds (every sampled frame when 0); with `changes`, the first face of each
    dominant-emotion segment instead (where the label changes)."""
    if changes:
        if segs is None or not len(segs):
            return []
        picked = set()
        for s in segs.itertuples(index=False):
            own = faces[(faces["track_id"] == s.track_id) if not pd.isna(s.track_id)
                        else faces["track_id"].isna()]
            own = own[own["t_sec"] >= s.start_sec - 1e-9]
            if len(own):
                picked.add(int(own.loc[own["t_sec"].idxmin(), "frame_index"]))
        return sorted(picked)
    src = frames if frames is not None and len(frames) else faces
    times = src[["frame_index", "t_sec"]].dropna().drop_duplicates("frame_index").sort_values("t_sec")
    if every <= 0:
        return times["frame_index"].astype(int).tolist()
    slot = np.floor(times["t_sec"].to_numpy(float) / every + 1e-9)
    first = np.r_[True, slot[1:] != slot[:-1]]
    return times["frame_index"].to_numpy(int)[first].tolist()


def _open_writer(base: Path, fps: float, size: tuple[int, int]):
    for fourcc, suffix in VIDEO_CODECS:
        tmp = base.with_name(f".{base.name}.tmp{suffix}")
        # OpenCV prints "tag 'VP80' is not supported with codec id 139 and format 'webm'" on
        # every open, straight to fd 2: WebM lists no codec tags, yet the file is fine.
        with fd2_silenced():
            writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc),
                                     fps, size)
        if writer.isOpened():
            return writer, tmp, base.with_name(base.name + suffix)
        writer.release()
        tmp.unlink(missing_ok=True)
    raise OSError("no video codec available to OpenCV here (tried VP8/WebM, MPEG-4)")


def write_video(path: Path, src: Path, faces: pd.DataFrame, interval: float) -> Path:
    """The whole clip with each sampled frame's boxes held until the next sample (at most
    1.5 sampling intervals, so a face is not drawn long after it left); returns the file."""
    cap = cv2.VideoCapture(str(src), cv2.CAP_FFMPEG)
    writer, tmp = None, None
    by_frame = {int(k): g.to_dict("records") for k, g in faces.groupby("frame_index")}
    times = {k: float(g[0]["t_sec"]) for k, g in by_frame.items()}
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps < 1000 else 25.0
    try:
        index, misses, shown, shown_t = -1, 0, [], -math.inf
        while misses < 25:
            if not cap.grab():
                misses += 1
                continue
            misses, index = 0, index + 1
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if index in by_frame:
                shown, shown_t = by_frame[index], times[index]
            elif t - shown_t > 1.5 * max(interval, 1.0 / fps):
                shown = []
            scale = min(1.0, MAX_VIDEO_WIDTH / image.shape[1])
            if scale < 1:
                # even sides (the encoder's), never 0 (a frame 1-2 px high and very wide)
                image = cv2.resize(image, (max(2, round(image.shape[1] * scale) // 2 * 2),
                                           max(2, round(image.shape[0] * scale) // 2 * 2)),
                                   interpolation=cv2.INTER_AREA)
            if writer is None:
                writer, tmp, path = _open_writer(path, fps, (image.shape[1], image.shape[0]))
            writer.write(draw_faces(image, shown, scale))
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if tmp is None:
        raise OSError("no frame could be decoded")
    replace_synced(tmp, path)
    return path


def annotate(cfg) -> AnnotateResult:
    """Annotated JPEG frames (and videos) for a run's results, per `AnnotateConfig`.

    Per video: DIR/<name>/f<frame_index>_<m>m<ss.ss>s.jpg for the picked frames (see
    `pick_frames`), and with `video` DIR/<name>.webm. Per photo: DIR/<name>.jpg. A source that
    is gone or changed since the run is listed in `failed` and skipped.
    """
    from batchemo.analysis.summarize import sampling_intervals
    from batchemo.analysis.timeline import timelines_and_segments
    from batchemo.options import validate
    from batchemo.output.read import load

    validate(cfg)
    faces, frames, files = (load(cfg.results, t) for t in ("faces", "frames", "files"))
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from None
    if cfg.source:
        keep = faces["source"].map(lambda s: any(fnmatch.fnmatch(str(s), p) for p in cfg.source))
        faces = faces[keep]
    rows_of = {} if files is None else {(r["root"], r["source"]): r for r in files.to_dict("records")}
    interval = sampling_intervals(faces, frames, files)
    segs = timelines_and_segments(faces, frames)[1] if cfg.changes else None
    result = AnnotateResult()
    for (root, source), part in faces.groupby(["root", "source"], sort=True):
        path = source_path(root, source)
        problem = source_problem(path, rows_of.get((root, source)))
        if problem:
            log.warning("%s: %s, not annotated", source, problem)
            result.failed[str(source)] = problem
            continue
        try:
            _annotate_one(cfg, out, path, part, frames, segs, interval, result)
        except (OSError, MediaError) as e:  # one bad file must not stop the others
            log.warning("%s: %s, not annotated", source, e)
            result.failed[str(source)] = str(e)
    return result


def _annotate_one(cfg, out: Path, path: Path, part: pd.DataFrame, frames: pd.DataFrame | None,
                  segs: pd.DataFrame | None, interval: pd.Series, result: AnnotateResult) -> None:
    """Annotate one source's faces (`part`) into `out`; see `annotate`."""
    root, source = part["root"].iat[0], part["source"].iat[0]
    name = safe_name(source, root)
    media = str(part["media_type"].iat[0])
    if media == "image":
        for _, image in read_frames(path, "image", [0]):
            target = out / f"{name}.jpg"
            _write_atomic(target, jpeg(draw_faces(image, part.to_dict("records")), cfg.quality))
            result.frames.append(target)
        return
    vframes = None if frames is None else frames[(frames["root"] == root)
                                                 & (frames["source"] == source)]
    vsegs = None if segs is None else segs[(segs["root"] == root) & (segs["source"] == source)]
    wanted = pick_frames(part, vframes, cfg.every, cfg.changes, vsegs)
    by_frame = {int(k): g.to_dict("records") for k, g in part.groupby("frame_index")}
    times = dict(zip(part["frame_index"].astype(int), part["t_sec"].astype(float),
                     strict=True))
    if vframes is not None:
        times.update(zip(vframes["frame_index"].astype(int),
                         vframes["t_sec"].astype(float), strict=True))
    (out / name).mkdir(exist_ok=True)
    for index, image in read_frames(path, "video", wanted, times):
        m, s = divmod(float(times.get(index, 0.0)), 60)
        target = out / name / f"f{index:06d}_{int(m)}m{s:05.2f}s.jpg"
        _write_atomic(target, jpeg(draw_faces(image, by_frame.get(index, [])), cfg.quality))
        result.frames.append(target)
    if cfg.video:
        step = interval.get((root, source), np.nan)
        result.videos.append(write_video(out / name, path, part,
                                         0.2 if pd.isna(step) else float(step)))
