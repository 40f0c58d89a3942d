"""The store: staged parts, recovery, compaction and the small tables; it deletes only files the
ledger recorded it writing (issue 28 item 3) and readers never see a row twice (issue 28)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from batchemo.output import store as store_mod
from batchemo.output.ledger import Ledger
from batchemo.output.store import Store
from batchemo.output.tables import TABLES, OutputPaths, faces_schema, foreign_file
from batchemo.records import FileRow

CLASSES = ("happy", "sad")


def faces(source: str, n: int) -> pa.Table:
    return pa.Table.from_pylist([{"root": "in", "source": source, "media_type": "image",
                                  "frame_index": 0, "face_index": i, "p_happy": 0.5,
                                  "p_sad": 0.5} for i in range(n)], schema=faces_schema(CLASSES))


@pytest.fixture
def store(tmp_path):
    paths = OutputPaths.from_out(tmp_path / "out")
    ledger = Ledger(paths.state)
    ledger.set_meta("classes", '["happy", "sad"]')
    yield Store(paths, ledger)
    ledger.close()


def commit(store: Store, source: str, n: int, run_id: str = "r1") -> FileRow:
    part = store.write_part(run_id, faces(source, n), None)
    row = FileRow("in", source, "image", "ok", faces=n, frames_sampled=1, part=part,
                  settings_id="s")
    store.ledger.commit_file(row)
    return row


def visible_faces(store: Store) -> list[tuple[str, int]]:
    """What a Parquet reader of the directory form sees (hidden files skipped)."""
    t = ds.dataset(store.paths.out / "faces", format="parquet").to_table()
    return sorted(zip(t["source"].to_pylist(), t["face_index"].to_pylist(), strict=True))


def test_recover_deletes_its_orphan_part_and_keeps_foreign_files(store):
    # Issue 28 item 3: recovery used to delete every unknown *.parquet in faces/ and frames/.
    kept = commit(store, "a.jpg", 2)
    orphan = store.write_part("r2", faces("b.jpg", 1), None)  # killed before its commit
    foreign = [store.paths.out / "faces" / "my_annotations.parquet",
               store.paths.out / "frames" / "keyframes.parquet",
               store.paths.out / "faces" / ".notes.1234.tmp"]
    for f in foreign:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"not batchemo's")
    ours = store.paths.out / "faces" / f".{kept.part}.parquet.999.tmp"  # a killed write's
    ours.write_bytes(b"half")
    store.recover()
    assert not ours.exists()
    assert not store.part_path("faces", orphan).exists()
    assert store.part_path("faces", kept.part).exists()
    assert all(f.read_bytes() == b"not batchemo's" for f in foreign)
    assert store.ledger.claimed("parts") == {kept.part}


def test_small_tables_replace_only_their_own_files(store):
    # Issue 28 item 3: the small-table writer removed every part-*.parquet in its folder.
    summary = store.paths.table("summary")
    summary.mkdir(parents=True)
    theirs = summary / "part-2019-report.parquet"
    theirs.write_bytes(b"a user's report")
    legacy = summary / "part-r0.parquet"  # written by a version that claimed nothing
    legacy.write_bytes(b"old batchemo table")
    store.ledger.add_run({"run_id": "r0", "started": "2026-01-01T00:00:00+00:00"})
    table = pa.table({"x": [1]})
    store.write_small("summary", table, "r1")
    store.write_small("summary", table, "r2")
    assert sorted(p.name for p in summary.iterdir()) == ["part-2019-report.parquet",
                                                        "part-r2.parquet"]
    assert theirs.read_bytes() == b"a user's report"


class _Killed(BaseException):
    """kill -9 at this point: nothing after it runs."""


# Where the kill lands: writing the merged part; removing the first old part (after the ledger
# points at the merged one); moving the merged part in (the 2nd os.replace: the 1st is the
# atomic write's own).
KILL_POINTS = {"write": (store_mod, "write_table", 1), "unlink": (Path, "unlink", 1),
               "replace": (store_mod.os, "replace", 2)}


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_a_kill_inside_compaction_never_shows_a_face_twice(store, monkeypatch, kill_at):
    # Issue 28, minor: kill -9 inside `compact` left the directory form showing every face twice
    # until the next command.
    for i in range(4):
        commit(store, f"f{i}.jpg", 3)
    want = visible_faces(store)
    assert len(want) == 12
    module, name, nth = KILL_POINTS[kill_at]
    real = getattr(module, name)
    calls = []

    def killed(*args, **kw):
        calls.append(1)
        if len(calls) == nth:
            raise _Killed()
        return real(*args, **kw)

    monkeypatch.setattr(module, name, killed)
    with pytest.raises(_Killed):
        store.compact("t", force=True)
    monkeypatch.undo()
    seen = visible_faces(store) if any((store.paths.out / "faces").glob("*.parquet")) else []
    assert len(set(seen)) == len(seen) and set(seen) <= set(want)  # never a face twice
    again = Store(store.paths, store.ledger)  # the next command
    again.recover()
    assert visible_faces(again) == want
    assert again.check_parts(CLASSES) == 0  # every file's rows are where its row says
    on_disk = {p.stem for p in (store.paths.out / "faces").iterdir()}
    assert on_disk == store.ledger.claimed("parts")
    assert again.compact("u", force=True) >= 0 and visible_faces(again) == want


def test_compaction_merges_parts_without_changing_rows(store):
    for i in range(4):
        commit(store, f"f{i}.jpg", 2)
    want = visible_faces(store)
    assert store.compact("t", force=True) == 4
    assert visible_faces(store) == want
    assert len(list((store.paths.out / "faces").iterdir())) == 1
    assert not list((store.paths.out / "faces").glob(".*"))


def test_forget_keeps_rows_marked_absent_or_prunes_them(store):
    a, b = commit(store, "a.jpg", 1), commit(store, "b.jpg", 1)
    store.forget(a, prune=False)
    assert store.ledger.get(a.key).present is False and store.part_path("faces", a.part).exists()
    store.forget(b, prune=True)
    assert store.ledger.get(b.key) is None and not store.part_path("faces", b.part).exists()
    assert b.part not in store.ledger.claimed("parts") and store.ledger.dirty


def test_a_missing_part_sends_its_file_back(store):
    a = commit(store, "a.jpg", 2)
    store.part_path("faces", a.part).unlink()
    assert store.check_parts(CLASSES) == 1
    back = store.ledger.get(a.key)
    assert (back.status, back.part, back.settings_id, back.faces) == ("error", None, None, 0)
    assert "missing" in back.error


def test_a_directory_output_without_videos_or_faces_is_complete(store):
    # Issue 28, minor: no frames/ folder (no videos) made every no-op rerun rebuild everything.
    for name in TABLES:
        if name not in ("faces", "frames"):
            store.paths.table(name).mkdir(parents=True)
    assert store.complete()
    store.paths.table("summary").rmdir()
    assert not store.complete()


def test_foreign_files_are_found_where_no_ledger_is(tmp_path):
    out = tmp_path / "proj"
    (out / "faces").mkdir(parents=True)
    assert foreign_file(OutputPaths.from_out(out)) is None  # empty folders hold nothing
    (out / "clip.mp4").write_bytes(b"x")  # an input root given as --out (issue 28 item 8)
    assert foreign_file(OutputPaths.from_out(out)) is None
    (out / "summary").mkdir()
    (out / "summary" / "part-2019-report.parquet").write_bytes(b"x")
    assert foreign_file(OutputPaths.from_out(out)) == out / "summary" / "part-2019-report.parquet"
    Ledger(OutputPaths.from_out(out).state).close()
    assert foreign_file(OutputPaths.from_out(out)) is None  # a batchemo output
    single = tmp_path / "res.parquet"
    assert foreign_file(OutputPaths.from_out(single)) is None
    (tmp_path / "res.files.parquet").write_bytes(b"x")
    assert foreign_file(OutputPaths.from_out(single)) == tmp_path / "res.files.parquet"
