import cv2
import numpy as np
import pytest

from batchemo.errors import DatasetError
from batchemo.training.datasets import (
    EMOTIONS,
    canonical_label,
    class_weights,
    load_fer_csv,
    load_folder,
    load_npz,
    load_votes,
    majority_labels,
    save_npz,
    stratified_split,
)


def write_tree(root, counts, size=48, seed=0, suffix=".png"):
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / name / f"img_{i}{suffix}"),
                        rng.integers(0, 256, (size, size), dtype=np.uint8))
    return root


def test_aliases_map_onto_canonical_labels():
    assert [canonical_label(n) for n in ("Anger", "Happiness", "Sadness", "Fearful", "Surprised",
                                         "Disgusted", "neutral")] == \
        ["angry", "happy", "sad", "fear", "surprise", "disgust", "neutral"]
    assert canonical_label("Contempt") == "contempt"  # unknown names stay


def test_folder_tree_uses_canonical_order_and_aliases(tmp_path):
    write_tree(tmp_path, {"Surprised": 2, "Anger": 3, "contempt": 1})
    s = load_folder(tmp_path, 48)
    assert s.classes == ("angry", "surprise", "contempt")
    assert s.x.shape == (6, 48, 48, 1) and s.x.dtype == np.uint8
    assert np.bincount(s.y).tolist() == [3, 2, 1]


def test_classes_selects_a_subset_in_the_given_order(tmp_path):
    write_tree(tmp_path, {"happy": 2, "sad": 3, "neutral": 4})
    s = load_folder(tmp_path, 48, classes=("sad", "happy"))
    assert s.classes == ("sad", "happy") and np.bincount(s.y).tolist() == [3, 2]
    with pytest.raises(DatasetError, match="fear"):
        load_folder(tmp_path, 48, classes=("fear",))


def test_only_filters_by_file_name_and_images_are_resized(tmp_path):
    write_tree(tmp_path, {"happy": 2}, size=96)
    (tmp_path / "happy" / "img_0.png").rename(tmp_path / "happy" / "PrivateTest_0.png")
    s = load_folder(tmp_path, 48, only="PrivateTest_*")
    assert len(s) == 1 and s.x.shape[1:] == (48, 48, 1)


def test_empty_class_folder_is_a_clear_error(tmp_path):
    write_tree(tmp_path, {"happy": 2})
    (tmp_path / "sad").mkdir()
    with pytest.raises(DatasetError, match="sad hold no images"):
        load_folder(tmp_path, 48)


def test_unreadable_image_is_a_clear_error(tmp_path):
    write_tree(tmp_path, {"happy": 1})
    (tmp_path / "happy" / "broken.jpg").write_text("not an image")
    with pytest.raises(DatasetError, match="broken.jpg: unreadable image"):
        load_folder(tmp_path, 48)


def _csv(path, rows):
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows))
    return path


def test_fer_csv_splits_by_usage(tmp_path):
    px = " ".join(["7"] * 2304)
    f = _csv(tmp_path / "fer.csv", [(3, px, "Training"), (0, px, "Training"),
                                     (6, px, "PublicTest"), (1, px, "PrivateTest")])
    s = load_fer_csv(f, 48)
    assert {k: len(v) for k, v in s.items()} == {"train": 2, "val": 1, "test": 1}
    assert [s["train"].classes[y] for y in s["train"].y] == ["happy", "angry"]
    assert s["train"].classes == EMOTIONS and int(s["train"].x[0, 0, 0, 0]) == 7


def test_fer_csv_with_wrong_pixel_count_names_the_line(tmp_path):
    f = _csv(tmp_path / "fer.csv", [(3, " ".join(["1"] * 2304), "Training"),
                                     (3, " ".join(["1"] * 100), "Training")])
    with pytest.raises(DatasetError, match=r"fer.csv:3: 100 pixels, expected 2304"):
        load_fer_csv(f, 48)


def test_stratified_split_is_seeded_and_keeps_every_class(tmp_path):
    write_tree(tmp_path, {"happy": 20, "disgust": 5})
    s = load_folder(tmp_path, 48)
    tr1, va1 = stratified_split(s, 0.2, seed=3)
    tr2, va2 = stratified_split(s, 0.2, seed=3)
    assert va1.names == va2.names and len(tr1) + len(va1) == 25
    assert np.bincount(va1.y).tolist() == [1, 4]  # disgust 1 of 5, happy 4 of 20
    assert not set(tr1.names) & set(va1.names)


def test_class_weights_lift_rare_classes():
    w = class_weights(np.array([0] * 90 + [1] * 10), 2)
    assert w[1] == pytest.approx(np.sqrt(100 / 20)) and w[0] == pytest.approx(np.sqrt(100 / 180))


def test_npz_round_trip_keeps_splits_and_selects_classes(tmp_path):
    from batchemo import TrainConfig
    from batchemo.training.train import load_splits

    train = load_folder(write_tree(tmp_path / "train", {"happy": 3, "sad": 2, "angry": 2}), 48)
    val = load_folder(write_tree(tmp_path / "val", {"happy": 1, "sad": 1, "angry": 1}, seed=1), 48)
    path = save_npz(tmp_path / "faces.npz", {"train": train, "val": val})
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically
    back = load_npz(path, 48)
    assert set(back) == {"train", "val"} and back["train"].classes == train.classes
    np.testing.assert_array_equal(back["train"].x, train.x)
    assert back["train"].names == train.names and back["train"].fingerprint() == train.fingerprint()
    sub = load_npz(path, 96, classes=("sad", "happy"))["train"]
    assert sub.classes == ("sad", "happy") and np.bincount(sub.y).tolist() == [2, 3]
    assert sub.x.shape == (5, 96, 96, 1)  # resized for an architecture with a larger input
    tr, va, te, how = load_splits(TrainConfig(data=path), 48)
    assert len(tr) == 7 and len(va) == 3 and te is None and how == "the val split of faces.npz"
    (tmp_path / "bad.npz").write_text("not numpy")
    with pytest.raises(DatasetError, match="not a dataset written by save_npz"):
        load_npz(tmp_path / "bad.npz", 48)


def _votes_csv(path, rows):
    header = "file,usage,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    path.write_text("\n".join([header] + [f"{f},Training,{v}" for f, v in rows]) + "\n")
    return path


def test_votes_align_by_path_tail_and_leave_other_labels_out(tmp_path):
    write_tree(tmp_path / "train", {"Happiness": 2, "Sadness": 1})
    s = load_folder(tmp_path / "train", 48)  # names like happy-folder/img_0.png
    votes = _votes_csv(tmp_path / "votes.csv", [
        ("data/train/Happiness/img_0.png", "2,6,0,0,0,0,0,0,2,0"),  # unknown votes dropped
        ("data/train/Happiness/img_1.png", "0,0,0,0,0,0,0,5,5,0"),  # only contempt/unknown
        ("data/train/Sadness/img_0.png", "1,0,0,9,0,0,0,0,0,0"),
    ])
    v = load_votes(votes, s)
    assert s.classes == ("happy", "sad")
    np.testing.assert_allclose(v[0], [1.0, 0.0])  # 6 happy, 0 sad of the classes kept
    assert np.isnan(v[1]).all()  # no vote for the split's classes: the caller keeps the label
    np.testing.assert_allclose(v[2], [0.0, 1.0])
    assert majority_labels(votes, s).tolist() == [0, -1, 1]  # contempt/unknown tie: left out


def test_votes_csv_without_class_columns_is_refused(tmp_path):
    write_tree(tmp_path, {"happy": 1})
    (tmp_path / "v.csv").write_text("file,foo\nhappy/img_0.png,1\n")
    with pytest.raises(DatasetError, match="count column"):
        load_votes(tmp_path / "v.csv", load_folder(tmp_path, 48))


# Issue 28 item 6: `inf` in a vote column trained a NaN model with exit 0; `many` was a traceback;
# a negative count said "no row matches a training file"; `file,neutral` alone was accepted.
@pytest.mark.parametrize("value, line", [("inf", 3), ("many", 3), ("-2", 3), ("nan", 3)])
def test_every_vote_count_is_a_finite_number_0_or_more(tmp_path, value, line):
    write_tree(tmp_path / "train", {"Happiness": 1, "Sadness": 1})
    s = load_folder(tmp_path / "train", 48)
    votes = _votes_csv(tmp_path / "votes.csv", [
        ("data/train/Happiness/img_0.png", "2,6,0,0,0,0,0,0,2,0"),
        ("data/train/Sadness/img_0.png", f"1,0,0,{value},0,0,0,0,0,0"),
        ("data/train/Sadness/img_9.png", "1,0,0,9,0,0,0,0,0,0"),  # no such face: still checked
    ])
    for read in (load_votes, majority_labels):
        with pytest.raises(DatasetError, match=rf"votes\.csv:{line}: column sadness holds "
                                               rf"'{value}'"):
            read(votes, s)


def test_a_vote_row_for_no_training_face_is_checked_too(tmp_path):
    write_tree(tmp_path / "train", {"happy": 1, "sad": 1})
    (tmp_path / "v.csv").write_text("file,happy,sad\nhappy/img_0.png,1,0\nelse/x.png,1,inf\n")
    with pytest.raises(DatasetError, match=r"v\.csv:3: column sad"):
        load_votes(tmp_path / "v.csv", load_folder(tmp_path / "train", 48))


def test_votes_csv_needs_a_column_for_every_class(tmp_path):
    write_tree(tmp_path, {"happy": 1, "neutral": 1})
    (tmp_path / "v.csv").write_text("file,neutral\nhappy/img_0.png,3\n")
    with pytest.raises(DatasetError, match="no column for happy"):
        load_votes(tmp_path / "v.csv", load_folder(tmp_path, 48))


def test_blank_vote_cells_mean_no_votes(tmp_path):
    write_tree(tmp_path, {"happy": 1, "sad": 1})
    (tmp_path / "v.csv").write_text("file,happy,sad\nhappy/img_0.png, ,\nsad/img_0.png,0,4\n")
    v = load_votes(tmp_path / "v.csv", load_folder(tmp_path, 48))
    assert np.isnan(v[0]).all() and v[1].tolist() == [0.0, 1.0]
