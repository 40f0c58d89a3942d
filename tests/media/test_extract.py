"""extract(): detection on several threads gives the frames, boxes, crops and cuts of one thread."""

import numpy as np

from batchemo.media.crop import margin_for
from batchemo.media.detect import get_detector
from batchemo.media.extract import detect_threads, extract
from batchemo.records import VIDEO, ExtractSettings, MediaItem


def _run(path, detectors) -> tuple[list, object]:
    item = MediaItem(str(path), path.name, path, VIDEO)
    settings = ExtractSettings(10.0, "blazeface-full", 20, 0.5, margin_for("blazeface-full"))
    msgs = list(extract(item, settings, detectors, 48, chunk_frames=4))
    frames = [f for kind, chunk in msgs if kind == "chunk" for f in chunk]
    assert msgs[-1][0] == "done"
    return frames, msgs[-1][1]


def test_several_detector_threads_keep_frame_order_and_results(make_video):
    # A face walking right, then a smaller face elsewhere.
    def faces(i, t):
        return [(20 + 4 * i, 40, 70)] if t < 1.5 else [(150, 60, 50)]

    path = make_video("walk.mp4", seconds=3.0, fps=10, size=(240, 320), faces_fn=faces)
    one, end_one = _run(path, get_detector("blazeface-full"))
    three, end_three = _run(path, [get_detector("blazeface-full") for _ in range(3)])
    assert [f.frame_index for f in three] == [f.frame_index for f in one] == list(range(30))
    assert sum(len(f.boxes) for f in one) >= 25  # the drawn faces were found
    for a, b in zip(one, three, strict=True):
        assert [(x.x, x.y, x.w, x.h) for x in a.boxes] == [(x.x, x.y, x.w, x.h) for x in b.boxes]
        np.testing.assert_array_equal(a.crops, b.crops)
    assert end_three.cuts == end_one.cuts and end_three.error is None


def test_detect_threads_share_the_cores_between_workers(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert (detect_threads(1), detect_threads(2), detect_threads(3)) == (2, 1, 1)
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert (detect_threads(1), detect_threads(15)) == (4, 2)
