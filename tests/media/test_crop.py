import cv2
import numpy as np
import pytest

from batchemo.media.crop import CROP_MARGIN, CROP_MARGINS, face_crop, square_box
from batchemo.records import FaceBox


def fb(x, y, w, h):
    return FaceBox(x, y, w, h, 1.0)


@pytest.mark.parametrize(
    ("box", "margin", "size", "expected"),
    [
        # side 40 (the longer side), centred on (25, 40)
        (fb(10, 20, 30, 40), 0.0, (100, 100), (5, 20, 45, 60)),
        # wider than tall: the square grows vertically, here exactly to the top edge
        (fb(10, 10, 40, 20), 0.0, (100, 100), (10, 0, 50, 40)),
        # margin 0.25 on every side: side 20 * 1.5 = 30 around centre (50, 50)
        (fb(40, 40, 20, 20), 0.25, (100, 100), (35, 35, 65, 65)),
        # clipped at the left and top: unclipped (-10, -10, 30, 30)
        (fb(0, 0, 20, 20), 0.5, (100, 100), (0, 0, 30, 30)),
        # clipped at the right and bottom of a 50x40 image: unclipped (35, 25, 55, 45)
        (fb(40, 30, 10, 10), 0.5, (50, 40), (35, 25, 50, 40)),
        # clipped on all four edges of a tiny 5x5 image: unclipped (-2, -2, 7, 7)
        (fb(1, 1, 3, 3), 1.0, (5, 5), (0, 0, 5, 5)),
        # odd box (centre 12.5), even side 6: 9.5..15.5 floored
        (fb(10, 10, 5, 5), 0.1, (100, 100), (9, 9, 15, 15)),
    ],
)
def test_square_box(box, margin, size, expected):
    assert square_box(box, margin, *size) == expected


def test_square_box_is_square_inside_and_covers_box():
    rng = np.random.default_rng(3)
    for _ in range(200):
        x, y = rng.integers(100, 400, 2)
        w, h = rng.integers(5, 100, 2)
        margin = float(rng.uniform(0, 0.5))
        x0, y0, x1, y1 = square_box(fb(int(x), int(y), int(w), int(h)), margin, 1000, 1000)
        assert x1 - x0 == y1 - y0 >= max(w, h)
        assert x0 <= x and y0 <= y and x1 >= x + w and y1 >= y + h


def test_margins_are_small_positive():
    assert CROP_MARGIN == CROP_MARGINS["blazeface-full"]
    assert all(0.0 <= m < 0.25 for m in CROP_MARGINS.values())


def test_face_crop_shape_dtype_and_size():
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = face_crop(img, fb(50, 30, 40, 50))
    assert crop.shape == (48, 48, 1) and crop.dtype == np.uint8
    assert face_crop(img, fb(50, 30, 40, 50), size=64).shape == (64, 64, 1)


def test_face_crop_inside_is_the_gray_region():
    img = np.random.default_rng(1).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    crop = face_crop(img, fb(10, 20, 48, 48), size=48, margin=0.0)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(crop[:, :, 0], gray[20:68, 10:58])


@pytest.mark.parametrize(("bgr", "gray"), [((255, 0, 0), 29), ((0, 0, 255), 76),
                                           ((0, 255, 0), 150), ((200, 200, 200), 200)])
def test_face_crop_converts_to_gray_like_opencv(bgr, gray):
    img = np.empty((60, 60, 3), np.uint8)
    img[:] = bgr
    crop = face_crop(img, fb(10, 10, 30, 30))
    assert np.all(crop == gray)


def test_face_crop_accepts_gray_input():
    img = np.random.default_rng(2).integers(0, 256, (100, 100), dtype=np.uint8)
    crop = face_crop(img, fb(10, 20, 48, 48), margin=0.0)
    np.testing.assert_array_equal(crop[:, :, 0], img[20:68, 10:58])
    assert face_crop(img[:, :, None], fb(10, 20, 48, 48)).shape == (48, 48, 1)


def test_face_crop_pads_by_replicating_instead_of_stretching():
    img = np.random.default_rng(4).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    # square (-10, -10)..(30, 30), 40 px, kept at 40 px: no resampling
    crop = face_crop(img, fb(0, 0, 20, 20), size=40, margin=0.5)[:, :, 0]
    np.testing.assert_array_equal(crop[10:, 10:], gray[:30, :30])  # not stretched
    assert np.all(crop[:10, :10] == gray[0, 0])  # corner replicated
    np.testing.assert_array_equal(crop[:10, 10:], np.broadcast_to(gray[0, :30], (10, 30)))
    np.testing.assert_array_equal(crop[10:, :10], np.broadcast_to(gray[:30, :1], (30, 10)))


def test_face_crop_at_bottom_right_edge():
    img = np.zeros((50, 80, 3), np.uint8)
    img[:, 70:] = 255  # a white band at the right edge
    crop = face_crop(img, fb(60, 30, 20, 20), size=40, margin=0.5)[:, :, 0]
    # square (50, 20)..(90, 60): columns 20.. are image columns 70..80, then replicated white
    assert np.all(crop[:, 20:] == 255) and np.all(crop[:, :20] == 0)
    np.testing.assert_array_equal(crop[30:], np.broadcast_to(crop[29], (10, 40)))


def test_face_crop_downscales_large_faces():
    img = np.zeros((400, 400, 3), np.uint8)
    img[100:300, 100:200] = 255  # left half of the face box is white
    crop = face_crop(img, fb(100, 100, 200, 200), margin=0.0)[:, :, 0]
    assert np.all(crop[:, :24] == 255) and np.all(crop[:, 24:] == 0)


def test_face_crop_rejects_box_outside_image():
    with pytest.raises(ValueError, match="outside"):
        face_crop(np.zeros((50, 50, 3), np.uint8), fb(100, 100, 10, 10), margin=0.0)
