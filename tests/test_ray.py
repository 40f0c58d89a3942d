"""--engine ray: same rows as the local engine, same ledger semantics, a clear message without Ray.

Ray runs locally here (2 CPUs, no dashboard, session folders in a temporary folder that is
removed); tests end it with ray.shutdown(), never `ray stop` (that stops every cluster of the user).
"""

import os
import shutil
import signal
import sys
import tempfile

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import assert_same_outputs, assert_same_rows

from batchemo import RunConfig, run
from batchemo.cli import main
from batchemo.errors import ConfigError
from batchemo.tables import OutputPaths

# Ray Data's own DataContext warns about its deprecated fields when it copies itself.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
BIG = 64  # faces this big are found by every BlazeFace model (tests/facedraw.py)
UNTIMED = ["run_id", "seconds", "model_id"]
KEYS = {"faces": ["root", "source", "frame_index", "face_index"],
        "frames": ["root", "source", "frame_index"], "files": ["root", "source"]}


def faces_at(n, t=0.0, size=BIG):
    return [(20 + i * (size + 30) + int(10 * t), 40, size) for i in range(n)]


def cfg_for(root, out, model, **kw):
    return RunConfig(input=[str(root)], out=out, model=model, quiet=True,
                     workers=kw.pop("workers", 0), **kw)


def table(out, name):
    df = pq.read_table(OutputPaths.from_out(out).table(name)).to_pandas()
    return (df.drop(columns=[c for c in UNTIMED if c in df]).sort_values(KEYS[name])
            .reset_index(drop=True))


def make_archive(make_image, make_video, make_text_as_jpg):
    """in/: images with 0, 1 and 3 faces, a video whose faces leave halfway, a bad file, a
    sidecar. 4 media files, 14 faces."""
    for n in (0, 1, 3):
        make_image(f"in/img{n}.png", size=(160, 400), faces=faces_at(n))
    make_video("in/clips/v.mp4", seconds=2, fps=10, size=(160, 400),
               faces_fn=lambda i, t: faces_at(2 if t < 1 else 0, t))
    make_text_as_jpg("in/broken.jpg").with_name("notes.srt").write_text("1\n")


@pytest.fixture(scope="module")
def _ray_module():
    ray = pytest.importorskip("ray")
    # Short and private: Ray's unix sockets live in it (a path limit), and it is removed after.
    temp = tempfile.mkdtemp(prefix="batchemo-test-ray-")
    yield ray, temp
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def local_ray(_ray_module):
    """A local Ray shared by this module's tests (restarted if a test shut it down)."""
    ray, temp = _ray_module
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp,
                 object_store_memory=256 << 20, log_to_driver=False)
    return ray


def test_without_ray_the_message_says_how_to_install(tmp_path, make_image, random_model,
                                                     monkeypatch):
    make_image("in/a.png", size=(80, 80))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    out = tmp_path / "res.parquet"
    with pytest.raises(ConfigError, match=r'pip install "batchemo\[ray\]"'):
        run(cfg_for(tmp_path / "in", out, random_model, engine="ray"))
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path / "in"), "-o", str(out), "--model",
                                  str(random_model), "--engine", "ray", "--quiet"])
    assert r.exit_code == 2 and 'pip install "batchemo[ray]"' in r.output
    assert not out.exists() and not OutputPaths.from_out(out).state.exists()


@pytest.mark.slow
def test_ray_rows_equal_local_rows(tmp_path, make_image, make_video, make_text_as_jpg,
                                   random_model, local_ray):
    make_archive(make_image, make_video, make_text_as_jpg)
    a, b = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    local = run(cfg_for(tmp_path / "in", a, random_model, batch_size=16, fps=5))
    # Another batch size and two detect actors: rows and probabilities must not change.
    remote = run(cfg_for(tmp_path / "in", b, random_model, batch_size=4, fps=5, workers=2,
                         engine="ray"))
    assert local.exit_code == remote.exit_code == 1  # broken.jpg
    for k in ("files_new", "files_failed", "files_skipped", "frames", "faces"):
        assert getattr(local, k) == getattr(remote, k), k
    assert remote.faces == 1 + 3 + 5 * 2
    assert_same_outputs(a, b)
    assert table(b, "frames").n_faces.tolist() == [2] * 5 + [0] * 5
    runs = pq.read_table(OutputPaths.from_out(b).table("runs")).to_pandas()
    assert '"engine": "ray"' in runs.settings[0]


@pytest.mark.slow
def test_ray_reruns_are_incremental(tmp_path, make_image, make_video, make_text_as_jpg,
                                    random_model, local_ray):
    make_archive(make_image, make_video, make_text_as_jpg)
    out = tmp_path / "ray.parquet"
    cfg = cfg_for(tmp_path / "in", out, random_model, fps=5, engine="ray")
    first = run(cfg)
    assert first.files_new == 4 and len(table(out, "faces")) == 14
    again = run(cfg)
    assert again.files_new == again.files_changed == 0 and again.files_unchanged == 4
    assert len(table(out, "faces")) == 14  # never a duplicate row
    make_image("in/img0.png", size=(160, 400), faces=faces_at(2))  # changed content
    (tmp_path / "in/img3.png").unlink()
    third = run(cfg)
    assert (third.files_changed, third.files_deleted, third.faces) == (1, 1, 2)
    # the same archive processed from scratch by the local engine gives the same rows
    fresh = tmp_path / "local.parquet"
    run(cfg_for(tmp_path / "in", fresh, random_model, fps=5))
    faces = table(out, "faces")
    assert faces.groupby("source").size().to_dict() == {
        "clips/v.mp4": 10, "img0.png": 2, "img1.png": 1, "img3.png": 3}
    kept = faces[faces.source != "img3.png"].reset_index(drop=True)  # gone, kept as absent
    local = table(fresh, "faces")
    assert_same_rows(kept, local, obj="faces")


@pytest.mark.slow
def test_engine_starts_and_removes_its_own_local_ray(tmp_path, make_image, random_model,
                                                     monkeypatch, _ray_module):
    ray, _ = _ray_module
    ray.shutdown()  # the engine starts Ray only when nobody in this process has
    temp = tempfile.mkdtemp(prefix="bt-")  # short: Ray's sockets go below it
    monkeypatch.setattr(tempfile, "tempdir", temp)
    from batchemo import pipeline
    from batchemo.engines import ray as engine

    seen = []
    collect = engine._collect

    def spy(*args):
        seen.append((ray.is_initialized(), signal.getsignal(signal.SIGTERM)))
        return collect(*args)

    monkeypatch.setattr(engine, "_collect", spy)
    make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    try:
        res = run(cfg_for(tmp_path / "in", tmp_path / "r.parquet", random_model, engine="ray"))
        assert res.exit_code == 0 and res.faces == 1
        # pipeline's SIGTERM handler survives ray.init (which installs its own)
        assert seen == [(True, pipeline._on_sigterm)]
        assert not ray.is_initialized()
        assert os.listdir(temp) == []  # Ray's session folder went with it
    finally:
        shutil.rmtree(temp, ignore_errors=True)
