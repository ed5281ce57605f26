"""The staging area's bookkeeping (data_pipeline.job.ledger): the quarantine ledger and the render
timings, on a local folder and in object storage (a local S3-compatible server, moto,
tests/conftest.py)."""

from __future__ import annotations

from data_pipeline.job.ledger import (
    LEDGER_FILE,
    RENDERED_FILE,
    LedgerEntry,
    append_ledger,
    append_rendered,
    compact_records,
    read_ledger,
    read_rendered,
    rewrite_ledger,
)


def test_torn_ledger_line_is_dropped_and_not_glued_to_new_entries(tmp_path, capsys):
    good = LedgerEntry(uid="a", path="/a", reason="no_faces", detail="d", attempts=1)
    (tmp_path / "quarantine.jsonl").write_text(good.to_line() + '{"uid": "b", "pa')
    ledger = read_ledger(tmp_path)
    assert list(ledger) == ["a"] and "torn" in capsys.readouterr().err
    rewrite_ledger(tmp_path, ledger.values())
    append_ledger(
        tmp_path, LedgerEntry(uid="c", path="/c", reason="timeout", detail="", attempts=2)
    )
    assert sorted(read_ledger(tmp_path)) == ["a", "c"]


def test_ledger_records_in_object_storage_survive_a_kill_and_fold_into_one_file(s3):
    out = f"{s3.url}/out"
    entry = LedgerEntry(uid="a", path="s3://x/a.glb", reason="no_faces", detail="d", attempts=1)
    append_ledger(out, entry)
    append_rendered(out, {"uid": "b", "wall_seconds": 1.0})
    # a killed job left only the parts: readers see them
    assert s3.fs.exists(f"{out}/{LEDGER_FILE}.d/a.json")
    assert read_ledger(out) == {"a": entry}
    assert read_rendered(out) == [{"uid": "b", "wall_seconds": 1.0}]
    # the next run rewrites the ledger (dropping what it retries) and folds the timings
    rewrite_ledger(out, [])
    compact_records(out, RENDERED_FILE)
    assert read_ledger(out) == {}
    assert read_rendered(out) == [{"uid": "b", "wall_seconds": 1.0}]
    assert not s3.fs.exists(f"{out}/{LEDGER_FILE}.d")
    assert not s3.fs.exists(f"{out}/{RENDERED_FILE}.d")
