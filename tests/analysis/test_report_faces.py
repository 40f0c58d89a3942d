"""The faces behind the numbers: face strips in the report and `batchemo annotate`, on media
made here (a video and a photo with drawn faces) and a faces table that points into them."""

import base64
import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from batchemo.analysis.annotate import annotate, pick_frames, safe_name
from batchemo.analysis.plots import class_colour
from batchemo.analysis.plots import tick_clock as _tick
from batchemo.analysis.report import pick_strip, write_report
from batchemo.cli import main
from batchemo.config import AnnotateConfig
from batchemo.output.ledger import fingerprint

CLASSES = ["angry", "happy", "neutral", "sad"]
SKIN = np.array([140, 170, 215])  # BGR of the drawn faces (tests/facedraw.py)
FPS, SIZE = 10, 48


def face_box(i):
    """Where face A is in frame i (moves right 4 px a frame); face B stays put."""
    return [(10 + 4 * i, 20, SIZE), (200, 40, SIZE)]


def make_media(tmp_path, make_video, make_image):
    video = make_video("in/clip.mp4", 3.0, FPS, size=(140, 320), faces_fn=lambda i, t: face_box(i))
    photo = make_image("in/photo.jpg", size=(120, 200), faces=[(20, 30, 50), (120, 30, 50)])
    return video, photo


def faces_table(tmp_path, low_score_track=None):
    """Face rows as a 5 fps run would write them (every other frame of the 10 fps clip);
    track 0 turns from sad to happy at 1.5 s."""
    root = str(tmp_path / "in")
    rows = []
    for i in range(0, 30, 2):
        for k, (x, y, s) in enumerate(face_box(i)):
            emo = ("sad" if i < 15 else "happy") if k == 0 else "neutral"
            # 0.85: clear enough that the segments' sticky HMM follows track 0's change (at
            # 0.7 it decodes the whole track as `uncertain`).
            p = {c: 0.05 for c in CLASSES}
            p[emo] = 0.85
            rows.append({"root": root, "source": "clip.mp4", "media_type": "video",
                         "frame_index": i, "t_sec": i / FPS, "face_index": k, "track_id": k,
                         "x": x, "y": y, "w": s, "h": s,
                         "det_score": 0.55 if k == low_score_track else 0.9,
                         **{f"p_{c}": v for c, v in p.items()}, "emotion": emo,
                         "confidence": 0.85, "model_id": "m", "run_id": "r1"})
    for k, x in enumerate((20, 120)):
        rows.append({**rows[0], "source": "photo.jpg", "media_type": "image", "frame_index": 0,
                     "t_sec": None, "face_index": k, "track_id": None, "x": x, "y": 30,
                     "w": 50, "h": 50, "emotion": ["happy", "angry"][k]})
    faces = pd.DataFrame(rows)
    faces["track_id"] = faces["track_id"].astype("Int64")
    frames = pd.DataFrame({"root": root, "source": "clip.mp4", "frame_index": range(0, 30, 2),
                           "t_sec": np.arange(0, 30, 2) / FPS, "n_faces": 2})
    files = pd.DataFrame([{"root": root, "source": s, "media_type": m, "status": "ok",
                           "error": None, "size": (tmp_path / "in" / s).stat().st_size,
                           "fingerprint": fingerprint(tmp_path / "in" / s,
                                                      (tmp_path / "in" / s).stat().st_size)}
                          for s, m in (("clip.mp4", "video"), ("photo.jpg", "image"))])
    return faces, frames, files


def decode_uri(uri):
    data = base64.b64decode(uri.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def strips(page):
    """{heading: [(crop image or None, caption)]} for each 'track N' block and photo."""
    out = {}
    for head, body in re.findall(r'<div><b>(track \d+)</b>(.*?)</div></div>', page, re.S):
        out[head] = _figures(body)
    for head, body in re.findall(r'<h3>([^<]+\.jpg) <span[^>]*>[^<]*</span></h3>\s*'
                                 r'<div class="strip">(.*?)</div>\n', page, re.S):
        out[head] = _figures(body)
    return out


def _figures(body):
    figs = re.findall(r"<figure>(.*?)<figcaption>(.*?)</figcaption></figure>", body, re.S)
    return [(decode_uri(m.group(1)) if (m := re.search(r'src="([^"]+)"', img)) else None, cap)
            for img, cap in figs]


def skin_share(crop):
    centre = crop[25:55, 25:55].reshape(-1, 3).astype(int)
    return float((np.abs(centre - SKIN).max(axis=1) < 40).mean())


def test_report_strips_hold_decodable_crops_of_the_faces(tmp_path, make_video, make_image):
    make_media(tmp_path, make_video, make_image)
    faces, frames, files = faces_table(tmp_path)
    page = write_report(faces, frames, files, tmp_path / "r.html").read_text()
    got = strips(page)
    assert set(got) == {"track 0", "track 1", "photo.jpg"}
    for name, figs in got.items():
        assert figs and all(img is not None and img.shape == (80, 80, 3) for img, _ in figs)
        assert all(skin_share(img) > 0.5 for img, _ in figs), name  # the face, centred
    # Track 0: start, middle, end, and the best face of its sad and happy segments.
    caps = [c for _, c in got["track 0"]]
    assert caps[0] == "0:00.0 sad 0.85" and caps[-1] == "0:02.8 happy 0.85"
    assert any("sad" in c for c in caps) and any("happy" in c for c in caps)
    assert [c for _, c in got["photo.jpg"]] == ["#0 happy 0.85", "#1 angry 0.85"]
    assert "<th></th>" not in page  # no empty header row above the run facts
    assert "valence</b>: P(happy)" in page and "confidence</b>: the model" in page
    text = re.sub(r"data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+", "", page)
    assert "http" not in text and "<script" not in text  # still one self-contained page


def test_missing_or_changed_source_shows_a_placeholder(tmp_path, make_video, make_image):
    video, photo = make_media(tmp_path, make_video, make_image)
    faces, frames, files = faces_table(tmp_path)
    video.unlink()
    photo.write_bytes(photo.read_bytes() + b"\0" * 10)  # edited since the run
    page = write_report(faces, frames, files, tmp_path / "r.html").read_text()
    got = strips(page)
    assert all(img is None for figs in got.values() for img, _ in figs)
    assert page.count(">source file not found</div>") == sum(len(got[k]) for k in
                                                              ("track 0", "track 1"))
    assert page.count(">source file changed since the run</div>") == 2


def test_suspect_and_short_tracks_are_folded_with_the_reason(tmp_path, make_video, make_image):
    make_media(tmp_path, make_video, make_image)
    faces, frames, files = faces_table(tmp_path, low_score_track=1)
    page = write_report(faces, frames, files, tmp_path / "r.html").read_text()
    folded = page.split("folded away", 1)[1].split("</details>", 1)[0]
    assert "track 1: low detector scores (mean 0.55)" in folded and "track 0" not in folded
    page = write_report(faces, frames, files, tmp_path / "r.html", min_track_sec=5).read_text()
    folded = page.split("2 tracks folded away", 1)[1].split("</details>", 1)[0]
    assert "track 0: on screen 3.0 s &lt; 5 s" in folded
    assert len(strips(page)["track 0"]) >= 3  # folded tracks keep their strips


def test_report_shows_run_settings_and_the_model_card(tmp_path, make_video, make_image):
    from batchemo.model import DEFAULT_MODEL

    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    make_media(tmp_path, make_video, make_image)
    faces, frames, files = faces_table(tmp_path)
    faces["model_id"] = card["model_id"]
    runs = pd.DataFrame([{"run_id": "r1", "started": "2026-01-02T03:04:05+00:00",
                          "finished": "2026-01-02T03:05:00+00:00",
                          "settings": json.dumps({"fps": 5.0, "detector": "blazeface-full",
                                                  "model": None})}])
    page = write_report(faces, frames, files, tmp_path / "r.html", runs=runs).read_text()
    assert "2026-01-02T03:04:05" in page and "fps 5.0, detector blazeface-full" in page
    assert "its limits" in page and card["limits"][:40].replace("'", "&#x27;") in page


def test_time_ticks_keep_tenths_between_whole_seconds():
    assert [_tick(t) for t in (0, 0.5, 1, 1.5, 2)] == ["0:00", "0:00.5", "0:01", "0:01.5",
                                                      "0:02"]
    assert _tick(3725) == "1:02:05"


def test_pick_strip_start_middle_end_and_segment_best():
    track = pd.DataFrame({"t_sec": np.arange(10) * 0.5, "p_sad": np.linspace(0.9, 0.1, 10),
                          "p_happy": [0.1] * 5 + [0.2, 0.9, 0.3, 0.2, 0.1]})
    segs = pd.DataFrame({"emotion": ["sad", "happy"], "start_sec": [0.0, 2.5],
                         "end_sec": [2.5, 5.0]})
    assert pick_strip(track, segs)["t_sec"].tolist() == [0.0, 2.5, 3.0, 4.5]


def write_results(tmp_path, faces, frames, files):
    out = tmp_path / "res.parquet"
    faces.to_parquet(out)
    frames.to_parquet(tmp_path / "res.frames.parquet")
    files.to_parquet(tmp_path / "res.files.parquet")
    return out


def test_annotate_writes_frames_with_boxes_and_labels(tmp_path, make_video, make_image):
    make_media(tmp_path, make_video, make_image)
    faces, frames, files = faces_table(tmp_path)
    res = write_results(tmp_path, faces, frames, files)
    r = annotate(AnnotateConfig(results=res, out=tmp_path / "ann", every=1.0))
    assert r.exit_code == 0 and not r.failed
    name = safe_name("clip.mp4", str(tmp_path / "in"))
    shots = sorted((tmp_path / "ann" / name).glob("*.jpg"))
    assert [p.name for p in shots] == ["f000000_0m00.00s.jpg", "f000010_0m01.00s.jpg",
                                       "f000020_0m02.00s.jpg"]
    img = cv2.imread(str(shots[1])).astype(int)
    sad = [int(class_colour("sad")[i : i + 2], 16) for i in (5, 3, 1)]  # BGR
    x, y, s = face_box(10)[0]
    label = img[y - 15 : y - 5, x : x + 40]  # the label's background, above the box
    assert (np.abs(label - sad).max(axis=2) < 60).mean() > 0.3
    box = img[y + 5 : y + s - 5, x - 1 : x + 2]  # the box's left side
    assert (np.abs(box - sad).max(axis=2) < 60).mean() > 0.3
    assert (tmp_path / "ann" / f"{safe_name('photo.jpg', str(tmp_path / 'in'))}.jpg").is_file()


def test_annotate_segment_changes_and_video(tmp_path, make_video, make_image):
    make_media(tmp_path, make_video, make_image)
    faces, frames, files = faces_table(tmp_path)
    res = write_results(tmp_path, faces, frames, files)
    r = annotate(AnnotateConfig(results=res, out=tmp_path / "ann", changes=True, video=True,
                                source=["clip*"]))
    name = safe_name("clip.mp4", str(tmp_path / "in"))
    shots = sorted(p.name[:7] for p in (tmp_path / "ann" / name).glob("*.jpg"))
    # The start, and the first face of track 0's happy segment: it turns happy at 1.6 s, but
    # the 1-2 s bin is still mostly sad, so the segment (and its first face) starts at 2 s.
    assert shots == ["f000000", "f000020"]
    assert len(r.videos) == 1 and r.videos[0].suffix in (".webm", ".mp4")
    cap = cv2.VideoCapture(str(r.videos[0]))
    n = 0
    while cap.grab():
        n += 1
    assert n == 30  # every frame of the clip, boxes drawn
    assert not list((tmp_path / "ann").glob("*photo*"))  # --source left the photo out


def test_pick_frames_every_n_seconds():
    frames = pd.DataFrame({"frame_index": range(0, 40, 4), "t_sec": np.arange(10) * 0.4})
    assert pick_frames(frames, frames, 1.0, False) == [0, 12, 20, 32]
    assert pick_frames(frames, frames, 0, False) == list(range(0, 40, 4))


def test_annotate_command_and_a_missing_source(tmp_path, make_video, make_image):
    video, _ = make_media(tmp_path, make_video, make_image)
    faces, frames, files = faces_table(tmp_path)
    res = write_results(tmp_path, faces, frames, files)
    ok = CliRunner().invoke(main, ["annotate", str(res), "-o", str(tmp_path / "a1")])
    assert ok.exit_code == 0 and "wrote 4 frames and 0 videos" in ok.output
    video.unlink()
    gone = CliRunner().invoke(main, ["annotate", str(res), "-o", str(tmp_path / "a2")])
    assert gone.exit_code == 1 and "1 sources not found or changed" in gone.output


@pytest.mark.parametrize("bad", ["--every=-1", "--quality=5"])
def test_annotate_rejects_bad_options(tmp_path, make_video, make_image, bad):
    make_media(tmp_path, make_video, make_image)
    res = write_results(tmp_path, *faces_table(tmp_path))
    r = CliRunner().invoke(main, ["annotate", str(res), bad])
    assert r.exit_code == 2


def test_read_frames_seeks_to_far_frames_and_gets_the_same_ones(tmp_path, make_video):
    from batchemo.analysis.annotate import read_frames

    video = make_video("v.mp4", 6.0, FPS, size=(96, 128), faces_fn=lambda i, t: face_box(i)[:1])
    cap = cv2.VideoCapture(str(video))
    times = []
    while cap.grab():
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    want = [1, 30, 31, 59]
    ts = {i: times[i] for i in want}
    straight = dict(read_frames(video, "video", want))
    seeking = dict(read_frames(video, "video", want, ts, seek_gap=1.0))
    assert sorted(straight) == sorted(seeking) == want
    assert all(np.array_equal(straight[i], seeking[i]) for i in want)
