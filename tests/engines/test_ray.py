"""--engine ray: same rows as the local engine, same ledger semantics, a clear message without Ray.

Each test that starts Ray runs in a pytest of its own (`own_ray`, tests/ray_isolation.py), with
a private local Ray (2 CPUs, no dashboard, session folders in a temporary folder of its own that is
removed), so a Ray that dies fails that test, not the suite; tests end it with ray.shutdown(),
never `ray stop` (that stops every cluster of the user).
The multi-node test starts a real two-node cluster (`ray start --block`, one CPU each, own ports
and temp folders) and stops its nodes by SIGTERM.
"""

import contextlib
import json
import os
import pickle
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import assert_same_outputs, assert_same_rows, read_output

from batchemo import RunConfig, run
from batchemo.cli import main
from batchemo.errors import ConfigError
from batchemo.output.tables import OutputPaths

# Ray Data's own DataContext warns about its deprecated fields when it copies itself.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
BIG = 64  # faces this big are found by every BlazeFace model (tests/facedraw.py)
UNTIMED = ["run_id", "seconds", "model_id"]
RAY_CHILD = "BATCHEMO_RAY_CHILD"  # set by tests/ray_isolation.py in the pytest that runs it
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


@pytest.fixture
def local_ray():
    """A private local Ray for this one test, started in its own pytest (an `own_ray` test; the
    parent pytest, which only waits for that child, gets None)."""
    ray = pytest.importorskip("ray")
    if os.environ.get(RAY_CHILD) != "1":
        yield None
        return
    # Short and private: Ray's unix sockets live in it (a path limit), and it is removed after.
    temp = tempfile.mkdtemp(prefix="bt-ray-")
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp,
                 object_store_memory=256 << 20, log_to_driver=False)
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


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
@pytest.mark.own_ray
def test_ray_rows_equal_local_rows_and_reruns_are_incremental(
        tmp_path, make_image, make_video, make_text_as_jpg, random_model, local_ray):
    # One Ray for both checks: each own_ray test pays for a pytest and a Ray of its own.
    make_archive(make_image, make_video, make_text_as_jpg)
    a, b = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    local = run(cfg_for(tmp_path / "in", a, random_model, batch_size=16, fps=5))
    # Another batch size and two decode tasks at most: rows and probabilities must not change.
    cfg = cfg_for(tmp_path / "in", b, random_model, batch_size=4, fps=5, workers=2, engine="ray")
    remote = run(cfg)
    assert local.exit_code == remote.exit_code == 1  # broken.jpg
    for k in ("files_new", "files_failed", "files_skipped", "frames", "faces"):
        assert getattr(local, k) == getattr(remote, k), k
    assert remote.files_new == 4 and remote.faces == 1 + 3 + 5 * 2
    assert_same_outputs(a, b)
    assert table(b, "frames").n_faces.tolist() == [2] * 5 + [0] * 5
    runs = pq.read_table(OutputPaths.from_out(b).table("runs")).to_pandas()
    assert '"engine": "ray"' in runs.settings[0]

    again = run(cfg)
    assert again.files_new == again.files_changed == 0 and again.files_unchanged == 4
    assert len(table(b, "faces")) == 14  # never a duplicate row
    make_image("in/img0.png", size=(160, 400), faces=faces_at(2))  # changed content
    (tmp_path / "in/img3.png").unlink()
    third = run(cfg)
    assert (third.files_changed, third.files_deleted, third.faces) == (1, 1, 2)
    # the same archive processed from scratch by the local engine gives the same rows
    fresh = tmp_path / "fresh.parquet"
    run(cfg_for(tmp_path / "in", fresh, random_model, fps=5))
    faces = table(b, "faces")
    assert faces.groupby("source").size().to_dict() == {
        "clips/v.mp4": 10, "img0.png": 2, "img1.png": 1, "img3.png": 3}
    kept = faces[faces.source != "img3.png"].reset_index(drop=True)  # gone, kept as absent
    assert_same_rows(kept, table(fresh, "faces"), obj="faces")


@pytest.mark.slow
@pytest.mark.own_ray
def test_engine_starts_its_own_ray_runs_the_int8_copy_there_and_removes_it(
        tmp_path, make_image, random_int8_model, monkeypatch):
    # No local_ray fixture: the engine starts Ray only when nobody in this process has.
    ray = pytest.importorskip("ray")
    from batchemo import pipeline
    from batchemo.engines import ray as engine

    model = random_int8_model
    make_image("in/a.png", size=(160, 300), faces=faces_at(2))
    a, b = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    run(cfg_for(tmp_path / "in", a, model, precision="int8"))
    assert not ray.is_initialized()
    temp = tempfile.mkdtemp(prefix="bt-")  # short: Ray's sockets go below it
    monkeypatch.setattr(tempfile, "tempdir", temp)
    seen = []
    collect = engine._collect

    def spy(*args):
        seen.append((ray.is_initialized(), signal.getsignal(signal.SIGTERM)))
        return collect(*args)

    monkeypatch.setattr(engine, "_collect", spy)
    try:
        remote = run(cfg_for(tmp_path / "in", b, model, precision="int8", engine="ray"))
        assert remote.exit_code == 0 and remote.faces == 2
        # pipeline's SIGTERM handler survives ray.init (which installs its own)
        assert seen == [(True, pipeline._on_sigterm)]
        assert not ray.is_initialized()
        assert os.listdir(temp) == []  # Ray's session folder went with it
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    # the actors ran the int8 copy the driver chose: the local engine's rows, to the bit
    assert_same_outputs(a, b)
    runs = pq.read_table(OutputPaths.from_out(b).table("runs")).to_pandas()
    assert '"precision": "int8"' in runs.settings[0]


@pytest.mark.slow
@pytest.mark.own_ray(timeout=180)
def test_a_killed_driver_leaves_no_private_ray_behind(tmp_path, make_video):
    # Issue 28, minor: after kill -9 of the driver with `--engine ray`, the raylet's dashboard and
    # runtime-env agents (~85 MB each) lived on for 60 s, and the session folder for good.
    pytest.importorskip("ray")
    import psutil  # Ray's own copy (ray/thirdparty_files), on the path once ray is imported

    def title(p):
        with contextlib.suppress(psutil.Error):
            return " ".join(p.cmdline()).strip()
        return ""

    def alive(p):  # a zombie has ended too
        with contextlib.suppress(psutil.Error):
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        return False

    make_video("in/v.mp4", seconds=4, fps=10, size=(160, 200))  # keeps the driver busy
    temp = tempfile.mkdtemp(prefix="bt-")  # short (Ray's sockets go below it) and this test's own
    env = {**os.environ, "TMPDIR": temp}
    env.pop("RAY_ADDRESS", None)  # a private Ray, never one someone started
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen([sys.executable, "-m", "batchemo", "run", "-i",
                                   str(tmp_path / "in"), "-o", str(tmp_path / "r.parquet"),
                                   "--engine", "ray", "--quiet"], env=env, stderr=log)
    ray_procs: list = []  # the driver's descendants: this test's own Ray, nobody else's
    try:
        deadline = time.monotonic() + 120
        while not {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= set(map(title, ray_procs)):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no Ray agents under the driver within 120 s"
            time.sleep(0.2)
            with contextlib.suppress(psutil.Error):
                ray_procs = psutil.Process(driver.pid).children(recursive=True)
        driver.kill()
        driver.wait()
        killed = time.monotonic()
        while any(map(alive, ray_procs)) and time.monotonic() - killed < 15:
            time.sleep(0.1)
        left = [f"{title(p)[:60]} ({p.pid})" for p in ray_procs if alive(p)]
        assert not left, f"alive {time.monotonic() - killed:.0f} s after the driver: {left}"
        assert os.listdir(temp) == []  # Ray's session folder went with them
    finally:
        for p in ray_procs:  # those that outlived the bound (psutil checks it is still the same)
            with contextlib.suppress(psutil.Error):
                p.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args: str, env: dict) -> tuple[subprocess.Popen, str]:
    """`ray start --block` (stopped with its processes by SIGTERM; never `ray stop`, which would
    stop every Ray of this user): one CPU, a small object store, its own ports and temp folder."""
    temp = tempfile.mkdtemp(prefix="bt-")  # short: Ray's unix sockets go below it
    ports = {opt: _free_port() for opt in ("--dashboard-agent-listen-port",
                                           "--dashboard-agent-grpc-port",
                                           "--runtime-env-agent-port", "--metrics-export-port")}
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--block", *args,
           "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--object-store-memory={150 << 20}",
           f"--temp-dir={temp}", "--disable-usage-stats",
           *(f"{opt}={port}" for opt, port in ports.items())]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return proc, temp


# Waits until both nodes are up; prints their ids and resources (as `ray status` knows them).
PROBE = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
for _ in range(240):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) == 2:
        break
    time.sleep(0.5)
print(json.dumps({n["NodeID"]: n["Resources"] for n in nodes}))
"""


@contextlib.contextmanager
def two_node_cluster():
    """The README's cluster, on this machine: a head and a second node with its own custom
    resource (`second`), token authentication on; yields (address, env, {node id: resources})."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    started = []
    try:
        started.append(_ray_start("--head", f"--port={port}", "--include-dashboard=false",
                                  f"--ray-client-server-port={_free_port()}", env=env))
        deadline = time.monotonic() + 120
        while True:  # the second node needs the head's GCS to be listening
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline and started[0][0].poll() is None, "no Ray head"
            time.sleep(0.5)
        started.append(_ray_start(f"--address={address}", '--resources={"second": 1}',
                                  env=env))
        probe = subprocess.run([sys.executable, "-c", PROBE, address], env=env, text=True,
                               capture_output=True, timeout=180)
        nodes = json.loads(probe.stdout.strip().splitlines()[-1])
        assert len(nodes) == 2, probe.stderr
        yield address, env, nodes
    finally:
        for proc, temp in reversed(started):
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(temp, ignore_errors=True)


PLACEMENT = re.compile(r"decode/detect ran on \d+ node\(s\) \(files per node: ([^)]*)\); "
                       r"\d+ model actor\(s\) on \d+ node\(s\) \(actors per node: ([^)]*)\)")


@pytest.mark.slow
def test_ray_on_a_two_node_cluster_uses_both_nodes(tmp_path, make_image, make_video,
                                                    make_text_as_jpg, random_model):
    make_archive(make_image, make_video, make_text_as_jpg)
    # Enough files that both nodes decode some, and small batches, so that both model actors
    # get work (Ray Data hands batches to whichever actor is free: with few, one may take all).
    for i in range(20):
        make_image(f"in/more/m{i}.png", size=(160, 400), faces=faces_at(1 + i % 3))
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert run(cfg_for(tmp_path / "in", local, random_model, fps=5)).exit_code == 1
    with two_node_cluster() as (address, env, nodes):
        # As the README's cluster section runs it: RAY_ADDRESS, data on a path every node sees.
        r = subprocess.run([sys.executable, "-m", "batchemo", "run", "--engine", "ray",
                            "-i", str(tmp_path / "in"), "-o", str(remote), "--model",
                            str(random_model), "--fps", "5", "--batch-size", "1",
                            "--ray-actors", "2"], env={**env, "RAY_ADDRESS": address},
                           text=True, capture_output=True, timeout=600)
    assert r.returncode == 1, r.stderr  # broken.jpg
    assert f"connecting to {address} (RAY_ADDRESS)" in r.stderr
    assert "Ray: 2 node(s), 2 CPUs" in r.stderr
    placement = PLACEMENT.search(r.stderr)
    assert placement, r.stderr
    print(placement.group(0))  # shown by pytest -rP
    files, actors = ({k: int(v) for k, v in (x.split() for x in part.split(", "))}
                     for part in placement.groups())
    second = next(n for n, res in nodes.items() if "second" in res)
    assert set(files) == set(actors) == set(nodes) and second in nodes
    assert sum(files.values()) == 24 and sum(actors.values()) == 2  # broken.jpg: by the scan
    for name in ("faces", "frames", "files"):
        assert_same_rows(read_output(local, name), read_output(remote, name), obj=name)


@pytest.mark.parametrize("actors, gpus, resources, pool", [
    ("auto", 0, {"CPU": 2}, (1, 1)), ("auto", 0, {"CPU": 64}, (1, 16)),
    ("2..8", 0, {"CPU": 64}, (2, 8)), ("3", 0, {"CPU": 64}, (3, 3)),
    ("2..8", 0, {"CPU": 2}, (2, 3)),  # what the CPUs hold beside one decode task
    ("auto", 1, {"CPU": 64, "GPU": 4}, (1, 4)), ("auto", 0.5, {"CPU": 64, "GPU": 4}, (1, 8)),
])
def test_model_actor_pool_is_sized_from_the_cluster(actors, gpus, resources, pool):
    from batchemo.engines.ray import _actor_pool

    assert _actor_pool(RunConfig(ray_actors=actors, ray_gpus=gpus), resources) == pool


def test_ray_gpus_without_gpus_and_bad_actor_ranges_exit_2(tmp_path):
    from batchemo.engines.ray import _actor_pool

    with pytest.raises(ConfigError, match="--ray-gpus 1: this Ray cluster has 0 GPUs"):
        _actor_pool(RunConfig(ray_gpus=1), {"CPU": 8})
    for bad in ("0", "3..1", "two", "1..", "auto..4"):
        r = CliRunner().invoke(main, ["run", "-i", str(tmp_path), "--ray-actors", bad])
        assert r.exit_code == 2 and "--ray-actors" in r.output, bad


@pytest.mark.parametrize("flag, env, address", [
    (None, None, "local"), (None, "10.0.0.5:6379", "10.0.0.5:6379"), ("auto", None, "auto"),
    ("auto", "10.0.0.5:6379", "auto"),  # the flag wins; ray.init("auto") then reads RAY_ADDRESS
    ("10.0.0.6:6379", "10.0.0.5:6379", "10.0.0.6:6379"),
])
def test_ray_address_flag_then_ray_address_then_a_private_ray(flag, env, address, monkeypatch):
    from batchemo.engines.ray_session import ray_session

    calls = []
    fake = SimpleNamespace(is_initialized=lambda: False, shutdown=lambda: None,
                           init=lambda address, **kw: calls.append((address, "_temp_dir" in kw)))
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_session(fake, RunConfig(ray_address=flag, quiet=True)):
        pass
    assert calls == [(address, address == "local")]  # only a private Ray gets its own temp dir


@pytest.mark.slow
@pytest.mark.own_ray
def test_a_file_that_keeps_killing_its_worker_becomes_an_error_row(tmp_path, make_image,
                                                                    local_ray):
    from batchemo.engines import ray as engine
    from batchemo.plan import extract_settings
    from batchemo.records import IMAGE, EngineJob, FileTask, MediaItem

    path = make_image("in/a.png", size=(160, 200), faces=faces_at(1))
    item = MediaItem(str(path.parent), "a.png", path, IMAGE)
    attempts = local_ray.remote(num_cpus=0)(engine._Attempts).remote()
    for _ in range(engine.MAX_CRASHES):  # as if decoding file 0 had killed its worker twice
        local_ray.get(attempts.start.remote(0))
    batch = {"idx": np.array([0]), "item": np.array([pickle.dumps(item)], dtype=object)}
    settings = extract_settings(RunConfig(detector="haar"))  # _detect_crop's typed seam
    rows = list(engine._detect_crop(batch, settings, 48, 16, attempts))
    assert [r["kind"].tolist() for r in rows] == [[engine.DONE]]
    # The driver leaves out what the crashed attempts sent, before the closing row or after it.
    earlier = engine._chunk_rows(0, [SimpleNamespace(frame_index=0, t_sec=None, boxes=[],
                                                     crops=[])], 48)

    def as_inferred(rows):
        n = len(rows["idx"])
        return {**rows, "probs": np.zeros((n, 7), np.float32),
                "actor": np.array(["node actor"] * n, dtype=object)}

    ds = SimpleNamespace(iter_batches=lambda **kw: iter(
        [as_inferred(earlier), as_inferred(rows[0]), as_inferred(earlier)]))
    job = EngineJob([FileTask(item, "")], extract_settings(RunConfig()), None, False)
    seen = engine._Placement()
    [res] = list(engine._collect(ds, job, seen))
    assert res.error == "decoding it killed the Ray worker 2 times"
    assert res.frames == [] and res.faces == [] and sum(seen.files.values()) == 1


KILL_DEMO = "BATCHEMO_RAY_KILL_DEMO"


@pytest.mark.own_ray(timeout=300)
@pytest.mark.skipif(os.environ.get(KILL_DEMO) != "1",
                    reason="run by test_a_dead_raylet_fails_its_test_and_the_suite_goes_on")
def test_ray_test_whose_raylet_is_killed(local_ray):
    import psutil

    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    assert raylets, "no raylet under this test's own Ray"
    for p in raylets:
        p.kill()

    @local_ray.remote
    def one():
        return 1

    # Ray's health check declares the node dead within about a minute; Ray then ends this
    # process ("Terminate the process"), as it ended the whole pytest before issue 29.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        big = local_ray.put(np.zeros(1 << 20))  # through the plasma store, as rows are
        with contextlib.suppress(local_ray.exceptions.GetTimeoutError):
            local_ray.get([one.remote(), big], timeout=5)
    pytest.fail("Ray went on without its raylet")


@pytest.mark.own_ray(timeout=300)
@pytest.mark.skipif(os.environ.get(KILL_DEMO) != "1",  # the other Ray tests cover this
                    reason="run by test_a_dead_raylet_fails_its_test_and_the_suite_goes_on")
def test_a_private_ray_runs_a_task(local_ray):
    assert local_ray.get(local_ray.remote(lambda: 41).remote()) + 1 == 42


@pytest.mark.slow
def test_a_dead_raylet_fails_its_test_and_the_suite_goes_on():
    # Issue 29 item 2: a Ray test lost its raylet and Ray ended the pytest process: exit 1, no
    # summary. Now that test fails, the other Ray test passes and pytest prints its summary.
    pytest.importorskip("ray")
    here = Path(__file__)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"{here}::test_ray_test_whose_raylet_is_killed",
                        f"{here}::test_a_private_ray_runs_a_task"],
                       cwd=here.parents[2], env={**os.environ, KILL_DEMO: "1"},
                       capture_output=True, text=True, timeout=1200)
    assert re.search(r"^1 failed, 1 passed in ", r.stdout, re.M), r.stdout[-4000:]
    assert "FAILED tests/engines/test_ray.py::test_ray_test_whose_raylet_is_killed" in r.stdout
    assert "Ray test" in r.stdout, r.stdout[-4000:]  # the parent's message names what died
