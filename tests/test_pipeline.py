import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import needs_shared
from helpers import assert_same_rows, comparable, copy_model, faces_at, read_output, run_cfg

from batchemo import run
from batchemo.cli import main
from batchemo.output.tables import OutputPaths


@pytest.mark.parametrize("kind", ["image", "video"])
@pytest.mark.parametrize("n_faces", [0, 1, 3])
@pytest.mark.parametrize("batch", [1, 64])
def test_faces_found_and_rows_written(tmp_path, make_image, make_video, random_model, kind,
                                      n_faces, batch):
    if kind == "image":
        make_image("in/a.png", size=(200, 480), faces=faces_at(n_faces))
    else:
        make_video("in/a.mp4", seconds=2, fps=10, size=(200, 480),
                   faces_fn=lambda i, t: faces_at(n_faces, t))
    out = tmp_path / "res.parquet"
    res = run(run_cfg([tmp_path / "in"], out, random_model, batch_size=batch, fps=5))
    faces, files = read_output(out), read_output(out, "files")
    n_frames = 1 if kind == "image" else 10
    assert res.exit_code == 0 and res.faces == n_faces * n_frames
    assert len(faces) == n_faces * n_frames
    assert files.status.tolist() == ["ok" if n_faces else "no_face"]
    if n_faces:
        p = faces[[c for c in faces if c.startswith("p_")]].to_numpy()
        assert np.allclose(p.sum(1), 1, atol=1e-5)
        assert (faces.emotion == [c[2:] for c in faces.filter(like="p_").idxmax(1)]).all()
        assert sorted(faces.face_index.unique()) == list(range(n_faces))
    if kind == "video":
        frames = read_output(out, "frames")
        assert len(frames) == 10 and (frames.n_faces == n_faces).all()
        assert np.allclose(frames.t_sec, np.arange(10) * 0.2, atol=0.051)
        if n_faces:
            assert faces.track_id.nunique() == n_faces
    else:
        assert faces.t_sec.isna().all() and (faces.frame_index == 0).all()


@pytest.mark.slow  # several runs
def test_probabilities_do_not_depend_on_batching_or_workers(tmp_path, make_image, make_video,
                                                            random_model):
    for i in range(3):
        make_image(f"in/img{i}.jpg", size=(160, 400), faces=faces_at(i + 1))
    make_video("in/clip.mp4", seconds=2, fps=10, size=(160, 400),
               faces_fn=lambda i, t: faces_at(2, t))
    a = run(run_cfg([tmp_path / "in"], tmp_path / "a.parquet", random_model, batch_size=1))
    b = run(run_cfg([tmp_path / "in"], tmp_path / "b.parquet", random_model, batch_size=16,
                    workers=2))
    assert a.faces == b.faces > 0
    assert_same_rows(read_output(tmp_path / "a.parquet"), read_output(tmp_path / "b.parquet"))


def test_bad_inputs_become_status_rows_and_the_run_goes_on(
        tmp_path, make_image, make_zero_byte, make_truncated_jpeg, make_text_as_jpg,
        make_png_bomb, make_truncated_mp4, make_symlink_loop, random_model):
    root = tmp_path / "in"
    make_image("in/good dir é/ok 1.png", size=(160, 200), faces=faces_at(1))
    make_zero_byte("in/empty.jpg")
    make_truncated_jpeg("in/trunc.jpg")
    make_text_as_jpg("in/text.jpg")
    make_png_bomb("in/bomb.png")
    make_truncated_mp4("in/trunc.mp4")
    make_symlink_loop("in/loop")
    (root / "notes.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n")
    out = tmp_path / "res.parquet"
    r = CliRunner().invoke(main, ["run", "-i", str(root), "-o", str(out), "--model",
                                  str(random_model), "--workers", "0", "--quiet"])
    assert r.exit_code == 1, r.output
    files = read_output(out, "files").set_index("source")
    assert files.loc["good dir é/ok 1.png", "status"] == "ok"
    assert files.loc["notes.srt", "status"] == "skipped"
    for bad in ("empty.jpg", "text.jpg", "bomb.png", "trunc.mp4"):
        assert files.loc[bad, "status"] == "error" and files.loc[bad, "error"], bad
    assert "0 bytes" in files.loc["empty.jpg", "error"]
    assert "too large" in files.loc["bomb.png", "error"]
    assert files.error.fillna("").str.contains("symlink loop").any()
    assert files.loc["trunc.jpg", "status"] in ("ok", "no_face")  # decoded part is used
    assert "1 files processed" not in r.output  # summary line counts every attempt


def test_rerun_is_incremental_and_never_duplicates(tmp_path, make_image, random_model):
    for i in range(3):
        make_image(f"in/{i}.png", size=(160, 200), faces=faces_at(1))
    out = tmp_path / "res.parquet"
    cfg = run_cfg([tmp_path / "in"], out, random_model)
    first = run(cfg)
    assert first.files_new == 3 and len(read_output(out)) == 3
    again = run(cfg)
    assert again.files_new == again.files_changed == 0 and again.files_unchanged == 3
    make_image("in/1.png", size=(160, 200), faces=faces_at(2))  # changed content
    os.utime(tmp_path / "in/1.png", (1e9, 1e9))
    (tmp_path / "in/2.png").unlink()
    third = run(cfg)
    assert third.files_changed == 1 and third.files_deleted == 1
    faces = read_output(out)
    assert faces.groupby("source").size().to_dict() == {"0.png": 1, "1.png": 2, "2.png": 1}
    files = read_output(out, "files").set_index("source")
    assert not files.loc["2.png", "present"] and files.loc["0.png", "present"]
    run(run_cfg([tmp_path / "in"], out, random_model, prune_deleted=True))
    assert sorted(read_output(out).source.unique()) == ["0.png", "1.png"]
    assert len(read_output(out, "runs")) == 4


@pytest.mark.slow  # several runs
def test_precision_is_a_setting_and_bfloat16_agrees_with_float32(tmp_path, make_image,
                                                                 random_model):
    for i in range(2):
        make_image(f"in/{i}.png", size=(160, 300), faces=faces_at(2))
    out = tmp_path / "res.parquet"
    first = run(run_cfg([tmp_path / "in"], out, random_model, precision="float32"))
    f32 = comparable(read_output(out))
    second = run(run_cfg([tmp_path / "in"], out, random_model, precision="bfloat16"))
    assert first.files_new == 2 and second.files_changed == 2  # other numbers: reprocessed
    bf16 = comparable(read_output(out))
    p = [c for c in f32 if c.startswith("p_")]
    derived = p + ["emotion", "confidence"]  # the random model's near-ties may flip
    pd.testing.assert_frame_equal(f32.drop(columns=derived), bf16.drop(columns=derived))
    assert 0 < np.abs(f32[p].to_numpy() - bf16[p].to_numpy()).max() < 0.05
    applied = [json.loads(r)["precision"] for r in read_output(out, "runs").settings]
    assert applied == ["float32", "bfloat16"]


@pytest.mark.slow  # several runs and models
def test_int8_precision_runs_the_models_int8_copy(tmp_path, make_image, random_model):
    from batchemo.model import quantize

    model = copy_model(random_model, tmp_path / "m.keras")  # the fixture is shared
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48, 1), np.uint8)
    quantize(model, faces, n=32)
    for i in range(2):
        make_image(f"in/{i}.png", size=(160, 300), faces=faces_at(2))
    out = tmp_path / "res.parquet"
    run(run_cfg([tmp_path / "in"], out, model, precision="float32"))
    f32 = comparable(read_output(out))
    second = run(run_cfg([tmp_path / "in"], out, model, precision="int8"))
    assert second.files_changed == 2  # another precision is another setting: reprocessed
    q = comparable(read_output(out))
    p = [c for c in f32 if c.startswith("p_")]
    derived = p + ["emotion", "confidence"]  # the random model's near-ties may flip
    pd.testing.assert_frame_equal(f32.drop(columns=derived), q.drop(columns=derived))
    assert 0 < np.abs(f32[p].to_numpy() - q[p].to_numpy()).max() < 0.1
    assert np.allclose(q[p].sum(axis=1), 1, atol=1e-5)
    applied = [json.loads(r)["precision"] for r in read_output(out, "runs").settings]
    assert applied == ["float32", "int8"]


@pytest.mark.slow  # several runs and models
def test_an_output_keeps_the_precision_auto_chose_first(tmp_path, make_image, random_model,
                                                        monkeypatch):
    from batchemo import model as model_mod
    from batchemo.model import quantize

    monkeypatch.setattr(model_mod, "native_bfloat16", lambda: False)
    model = copy_model(random_model, tmp_path / "m.keras")  # the fixture is shared
    make_image("in/0.png", size=(160, 300), faces=faces_at(2))
    out = tmp_path / "res.parquet"
    run(run_cfg([tmp_path / "in"], out, model))  # auto: float32, the model has no int8 copy
    quantize(model, np.random.default_rng(0).integers(0, 256, (32, 48, 48, 1), np.uint8), n=16)
    make_image("in/1.png", size=(160, 300), faces=faces_at(2))
    again = run(run_cfg([tmp_path / "in"], out, model))
    assert (again.files_new, again.files_changed, again.files_unchanged) == (1, 0, 1)
    assert [json.loads(r)["precision"] for r in read_output(out, "runs").settings] == ["float32"] * 2
    fresh = tmp_path / "fresh.parquet"  # a new output takes today's choice
    run(run_cfg([tmp_path / "in"], fresh, model))
    assert json.loads(read_output(fresh, "runs").settings[0])["precision"] == "int8"


@pytest.mark.slow  # several runs
def test_csv_and_directory_outputs(tmp_path, make_image, make_video, random_model):
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    make_video("in/v.mp4", seconds=1, fps=10, size=(160, 200), faces_fn=lambda i, t: faces_at(1))
    run(run_cfg([tmp_path / "in"], tmp_path / "r.csv", random_model))
    assert pd.read_csv(tmp_path / "r.csv").shape[0] == 6
    assert pd.read_csv(tmp_path / "r.frames.csv").shape[0] == 5
    assert (tmp_path / "r.files.csv").is_file() and (tmp_path / "r.runs.csv").is_file()
    out = tmp_path / "ds"
    run(run_cfg([tmp_path / "in"], f"{out}/", random_model))
    import pyarrow.dataset as ds

    assert ds.dataset(out / "faces").count_rows() == 6
    assert ds.dataset(out / "files").count_rows() == 2
    meta = pq.read_schema(next((out / "faces").glob("part-*.parquet"))).metadata
    assert meta[b"batchemo.schema_version"] == b"1"


def test_second_run_on_a_locked_output_exits_3(tmp_path, make_image, random_model):
    make_image("in/a.png", size=(80, 80))
    out = tmp_path / "res.parquet"
    state = OutputPaths.from_out(out).state
    state.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl,sys,time; f=open(sys.argv[1],'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), str(state / "lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o", str(out),
                                      "--model", str(random_model), "--quiet"])
        assert r.exit_code == 3 and "--wait" in r.output
    finally:
        holder.kill()
        holder.wait()
    # the holder died without unlocking: its stale lock no longer blocks anyone
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o", str(out),
                                  "--model", str(random_model), "--quiet", "--workers", "0"])
    assert r.exit_code == 0, r.output


def test_a_different_model_is_refused_without_force(tmp_path, make_image, random_model):
    from batchemo.model import build, save_artifact
    from batchemo.training.datasets import EMOTIONS

    make_image("in/a.png", size=(80, 80))
    out = tmp_path / "res.parquet"
    run(run_cfg([tmp_path / "in"], out, random_model))
    other = tmp_path / "other.keras"
    save_artifact(build("default", 7), other, {"arch": "default", "classes": list(EMOTIONS)})
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o", str(out), "--model",
                                  str(other), "--quiet", "--workers", "0"])
    assert r.exit_code == 2 and "--force" in r.output
    assert run(run_cfg([tmp_path / "in"], out, other, force=True)).files_changed == 1


def test_unwritable_output_exits_2(tmp_path, make_image, random_model):
    make_image("in/a.png", size=(80, 80))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o",
                                  str(blocker / "res.parquet"), "--model", str(random_model)])
    assert r.exit_code == 2 and "cannot" in r.output


def test_log_json_writes_only_json_lines(tmp_path, make_image, random_model):
    import json

    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o",
                                  str(tmp_path / "r.parquet"), "--model", str(random_model),
                                  "--workers", "0", "--log-json"])
    assert r.exit_code == 0
    records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert records[-1]["event"] == "run_finished" and records[-1]["faces"] == 1
    assert all("message" in rec or "event" in rec for rec in records)


def test_run_writes_summary_timeline_segments_and_plots(tmp_path, make_video, random_model):
    make_video("in/talk.mp4", seconds=3, fps=10, size=(160, 320),
               faces_fn=lambda i, t: faces_at(1, t) if t < 1.0 or t >= 2.0 else [])
    out = tmp_path / "res.parquet"
    run(run_cfg([tmp_path / "in"], out, random_model, plots=tmp_path / "plots"))
    tl = read_output(out, "timeline")
    assert sorted(tl.bin_start.unique()) == [0.0, 1.0, 2.0]  # the empty second stays a bin
    empty = tl[tl.bin_start == 1.0]
    assert (empty.n_faces == 0).all()
    summary = read_output(out, "summary")
    assert {"run", "folder", "file", "track"} <= set(summary.level)
    assert summary.loc[summary.level == "run", "faces"].item() == 10
    segs = read_output(out, "segments")
    assert len(segs) >= 1 and (segs.duration_sec > 0).all()
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "run_shares.png" in pngs and any(n.startswith("timeline_talk.mp4") for n in pngs)


@needs_shared
def test_real_media_end_to_end(tmp_path, copy_shared, random_model):
    for rel in ("images/group_5_people.jpg", "images/noface_mountain.jpg",
                "images/exif_orientation6_rotated_face.jpg",
                "videos/multi_person_stage_audience.mp4"):
        copy_shared(rel, f"in/{rel}")
    out = tmp_path / "res.parquet"
    assert run(run_cfg([tmp_path / "in"], out, random_model, workers=1)).exit_code == 0
    faces, files = read_output(out), read_output(out, "files").set_index("source")
    per_file = faces.groupby("source").size()
    assert per_file["images/group_5_people.jpg"] >= 4
    assert files.loc["images/noface_mountain.jpg", "status"] == "no_face"
    rotated = faces[faces.source == "images/exif_orientation6_rotated_face.jpg"]
    assert len(rotated) == 1  # found only if decoded upright
    video = faces[faces.source == "videos/multi_person_stage_audience.mp4"]
    frames = read_output(out, "frames")
    assert frames.t_sec.is_monotonic_increasing and frames.t_sec.is_unique
    # Nearly all tracked: a lone low-score detection starts no track (ByteTrack; issue 15).
    assert video.track_id.notna().mean() > 0.9 and video.track_id.nunique() >= 2
    # one track never holds two faces of the same frame
    assert not video.duplicated(["frame_index", "track_id"]).any()


def test_failed_files_are_retried_only_when_asked(tmp_path, make_image, random_model):
    make_image("in/good.png", size=(120, 160), faces=faces_at(1))
    bad = make_image("in/cut.png", size=(120, 160))
    bad.write_bytes(bad.read_bytes()[:80])  # a PNG header, then nothing: fails to decode
    out = tmp_path / "res.parquet"
    first = run(run_cfg([tmp_path / "in"], out, random_model))
    assert first.exit_code == 1 and read_output(out, "files").set_index("source").status["cut.png"] == \
        "error"
    second = run(run_cfg([tmp_path / "in"], out, random_model))
    assert second.files_unchanged == 2 and second.exit_code == 0  # not retried by default
    third = run(run_cfg([tmp_path / "in"], out, random_model, retry_errors=True))
    assert third.files_changed == 1 and third.files_failed == 1 and third.exit_code == 1


def test_directory_output_grows_by_unique_parts_without_duplicates(tmp_path, make_image,
                                                                   random_model):
    import pyarrow.dataset as ds

    for i in range(2):
        make_image(f"in/{i}.png", size=(160, 200), faces=faces_at(1))
    out = tmp_path / "ds"
    cfg = run_cfg([tmp_path / "in"], f"{out}/", random_model)
    run(cfg)
    first_parts = {p.name for p in (out / "faces").glob("part-*.parquet")}
    make_image("in/1.png", size=(160, 200), faces=faces_at(2))
    os.utime(tmp_path / "in/1.png", (1e9, 1e9))
    make_image("in/2.png", size=(160, 200), faces=faces_at(1))
    assert run(cfg).files_changed == 1
    parts = {p.name for p in (out / "faces").glob("part-*.parquet")}
    assert len(parts) == 3 and len(parts & first_parts) == 1  # 1.png's old part replaced
    faces = ds.dataset(out / "faces").to_table().to_pandas()
    assert faces.groupby("source").size().to_dict() == {"0.png": 1, "1.png": 2, "2.png": 1}


# -- issue 28: nothing lost on the inputs and folders users really have ----------------------


def test_a_file_replaced_while_analysed_is_processed_again(tmp_path, make_image, random_model,
                                                           monkeypatch):
    # Issue 28 item 2: a same-size replacement during the analysis kept the old file's rows
    # forever ("unchanged" on every rerun): the fingerprint was taken after decoding.
    from batchemo.engines import local

    a = make_image("in/a.jpg", size=(200, 480), faces=faces_at(2))
    b = make_image(tmp_path / "b.jpg", size=(160, 400))  # no faces, another width
    size = max(a.stat().st_size, b.stat().st_size)
    for f in (a, b):  # the same size: JPEG decoders ignore bytes after the end marker
        f.write_bytes(f.read_bytes().ljust(size, b"\0"))
    real = local.extract

    def replaced_after_decoding(item, *args, **kw):
        for kind, payload in real(item, *args, **kw):
            if kind == "done":
                os.replace(b, a)  # `cat B > a.jpg` while a.jpg is being analysed
            yield kind, payload

    monkeypatch.setattr(local, "extract", replaced_after_decoding)
    out = tmp_path / "res.parquet"
    first = run(run_cfg([tmp_path / "in"], out, random_model))
    files = read_output(out, "files")
    assert first.exit_code == 1 and files.status.tolist() == ["error"]
    assert "changed while it was being analysed" in files.error[0] and len(read_output(out)) == 0
    monkeypatch.undo()
    second = run(run_cfg([tmp_path / "in"], out, random_model))
    files = read_output(out, "files")
    assert second.exit_code == 0 and second.files_changed == 1
    assert files.width.tolist() == [400] and files.status.tolist() == ["no_face"]
    third = run(run_cfg([tmp_path / "in"], out, random_model))
    assert third.files_unchanged == 1 and third.files_changed == 0


def test_a_folder_that_is_not_a_batchemo_output_is_refused(tmp_path, make_image, random_model):
    # Issue 28 item 3: an existing --out folder lost the files batchemo did not write.
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    proj = tmp_path / "proj"
    theirs = {proj / "faces" / "my_annotations.parquet": b"1",
              proj / "frames" / "keyframes.parquet": b"2",
              proj / "summary" / "part-2019-report.parquet": b"3"}
    for f, data in theirs.items():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o", str(proj),
                                  "--model", str(random_model), "--workers", "0", "--quiet"])
    assert r.exit_code == 2 and "faces/my_annotations.parquet" in r.output  # names the first found
    assert all(f.read_bytes() == data for f, data in theirs.items())
    assert not (proj / "_batchemo").exists()


@pytest.mark.slow  # several runs and models
def test_a_batchemo_output_keeps_files_a_user_added_to_it(tmp_path, make_image, random_model):
    # Issue 28 item 3: recovery removed every unknown *.parquet in faces/ and frames/, the
    # small-table writer every part-*.parquet: never delete what the ledger did not record.
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    out = tmp_path / "proj"
    assert run(run_cfg([tmp_path / "in"], out, random_model)).exit_code == 0
    theirs = [out / "faces" / "my_annotations.parquet", out / "frames" / "keyframes.parquet",
              out / "summary" / "part-2019-report.parquet"]
    for f in theirs:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"mine")
    make_image("in/b.png", size=(160, 200), faces=faces_at(1))  # a rebuild is due
    again = run(run_cfg([tmp_path / "in"], out, random_model))
    assert again.exit_code == 0 and again.files_new == 1
    assert all(f.read_bytes() == b"mine" for f in theirs)
    summary = [p.name for p in (out / "summary").glob("part-*.parquet")]
    assert sorted(summary) == sorted(["part-2019-report.parquet", f"part-{again.run_id}.parquet"])


def test_the_same_root_given_three_ways_is_analysed_once(tmp_path, make_image, random_model,
                                                         monkeypatch):
    # Issue 28, minor: `-i in -i in -i /abs/in` analysed each file three times and the closing
    # line counted 3x what the tables held.
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    make_image("in/b.png", size=(160, 200), faces=faces_at(1))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res.parquet"
    res = run(run_cfg(["in", "in", tmp_path / "in"], out, random_model))
    files = read_output(out, "files")
    assert res.files_new == len(files) == 2 and res.faces == len(read_output(out)) == 2
    assert set(files.root) == {"in"}


def test_a_noop_rerun_of_a_directory_output_without_videos_rebuilds_nothing(
        tmp_path, make_image, random_model):
    # Issue 28, minor: no frames/ folder (no videos) made every no-op rerun rewrite all
    # derived tables.
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    out = tmp_path / "res"
    assert run(run_cfg([tmp_path / "in"], out, random_model)).exit_code == 0
    before = {p.relative_to(out) for p in out.rglob("*.parquet") if "runs" not in p.parts}
    again = run(run_cfg([tmp_path / "in"], out, random_model))
    assert again.files_unchanged == 1
    assert {p.relative_to(out) for p in out.rglob("*.parquet") if "runs" not in p.parts} == before


def test_files_seconds_is_work_not_queue_time(tmp_path, make_image, random_model, monkeypatch):
    # Issue 29: files.seconds ("processing time") was the time from queueing to the last face's
    # batch (5.6 s for a 128x128 photo; 133 s summed over a 35 s run). It is the file's work now:
    # what its worker spent on it plus its faces' share of the model calls.
    from batchemo import pipeline as pipeline_mod

    for i in range(30):
        make_image(f"in/p{i:02d}.png", size=(128, 128), faces=[(30, 30, 64)])
    spans = []
    real = pipeline_mod.get_engine

    def timed_engine(name):
        engine = real(name)

        def timed(job):
            t = time.perf_counter()
            yield from engine(job)
            spans.append(time.perf_counter() - t)

        return timed

    monkeypatch.setattr(pipeline_mod, "get_engine", timed_engine)
    workers = 1
    out = tmp_path / "res.parquet"
    res = run(run_cfg([tmp_path / "in"], out, random_model, workers=workers, batch_size=64))
    seconds = read_output(out, "files").seconds
    assert res.exit_code == 0 and len(seconds) == 30 and (seconds > 0).all()
    # The worker and the model (in this process) can at most both be busy the whole time.
    assert seconds.sum() <= spans[0] * (workers + 1) * 1.1
