"""The ledger: typed file rows, the outputs' markers, runs, and the files batchemo claims."""

import dataclasses
import sqlite3

from batchemo.output.ledger import FILE_COLUMNS, Ledger
from batchemo.output.tables import FILES_SCHEMA, files_table
from batchemo.records import FileRow


def row(source="a.jpg", **kw) -> FileRow:
    return FileRow("in", source, "image", kw.pop("status", "ok"), size=10, mtime=1.5,
                   fingerprint="fp", faces=2, frames_sampled=1, **kw)


def test_file_row_is_the_files_schema_plus_the_ledgers_own_columns():
    # Issue 27 item 4: one typed record for a file's row, in the files table's order.
    names = [f.name for f in dataclasses.fields(FileRow)]
    assert names == FILES_SCHEMA.names + ["settings_id", "part"] == FILE_COLUMNS


def test_commit_get_and_files_round_trip_typed_rows(tmp_path):
    ledger = Ledger(tmp_path / "state")
    try:
        assert ledger.get(("in", "a.jpg")) is None and ledger.files() == {}
        a = row(settings_id="s1", part="part-r-000001")
        ledger.commit_file(a)
        got = ledger.get(a.key)
        assert got == a and got.present is True and isinstance(got.present, bool)
        b = dataclasses.replace(a, source="b.jpg", part=None, present=False)
        ledger.commit_file(b)
        assert ledger.files() == {a.key: a, b.key: b}
        ledger.commit_file(dataclasses.replace(a, faces=5))  # replaces, never duplicates
        assert ledger.get(a.key).faces == 5 and len(ledger.files()) == 2
        ledger.mark_absent(a.key)
        assert ledger.get(a.key).present is False
        ledger.delete(a.key)
        assert list(ledger.files()) == [b.key]
        # The files table is made from the rows as they are
        table = files_table(list(ledger.files().values()))
        assert table.schema.names == FILES_SCHEMA.names and table["source"].to_pylist() == ["b.jpg"]
    finally:
        ledger.close()


def test_markers_commit_marks_dirty_rebuild_clears_derived_is_kept(tmp_path):
    ledger = Ledger(tmp_path / "state")
    try:
        assert not ledger.dirty and ledger.derived is None
        ledger.commit_file(row())
        assert ledger.dirty
        ledger.mark_rebuilt()
        assert not ledger.dirty
        ledger.mark_dirty()
        assert ledger.dirty
        ledger.set_derived('{"bin": 2.0}')
        assert ledger.derived == '{"bin": 2.0}'
    finally:
        ledger.close()
    again = Ledger(tmp_path / "state")  # markers live in the file, not the object
    try:
        assert again.dirty and again.derived == '{"bin": 2.0}'
    finally:
        again.close()


def test_runs_and_ever_used(tmp_path):
    state = tmp_path / "state"
    assert not Ledger.ever_used(state)
    ledger = Ledger(state)
    try:
        assert not Ledger.ever_used(state)
        ledger.add_run({"run_id": "r1", "started": "2026-01-01T00:00:00+00:00",
                        "finished": "2026-01-01T00:00:01+00:00", "settings": {"fps": 1}})
        assert Ledger.ever_used(state)
        assert [r["run_id"] for r in ledger.runs()] == ["r1"] and ledger.run_ids() == {"r1"}
    finally:
        ledger.close()


def test_claims_say_which_files_batchemo_may_delete(tmp_path):
    ledger = Ledger(tmp_path / "state")
    try:
        ledger.claim("parts", "part-r-000001")
        ledger.claim("parts", "part-r-000001")  # twice: one claim
        ledger.claim("summary", "part-r.parquet")
        assert ledger.claimed("parts") == {"part-r-000001"}
        assert ledger.claimed("summary") == {"part-r.parquet"}
        ledger.release("parts", "part-r-000001")
        assert ledger.claimed("parts") == set()
    finally:
        ledger.close()


def test_an_older_ledger_claims_its_live_parts_when_opened(tmp_path):
    # A ledger written before claims existed: its rows' parts are provably batchemo's.
    state = tmp_path / "state"
    Ledger(state).close()
    con = sqlite3.connect(state / "ledger.sqlite")
    con.execute("DROP TABLE owned")
    cols = ", ".join(FILE_COLUMNS)
    con.execute(f"INSERT INTO files ({cols}) VALUES ({', '.join('?' * len(FILE_COLUMNS))})",
                [getattr(row(part="part-old-000001"), c) for c in FILE_COLUMNS])
    con.commit()
    con.close()
    ledger = Ledger(state)
    try:
        assert ledger.claimed("parts") == {"part-old-000001"}
    finally:
        ledger.close()
