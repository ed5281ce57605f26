"""One render job per output folder (its lease), and a finished job that does nothing when it is
run again (no Ray, no file changed)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from contract.lease import LOCAL_FILE, acquire
from data_pipeline.job.ledger import RENDERED_FILE, read_ledger, read_rendered
from data_pipeline.job.run import JobError, run_job
from data_pipeline.sources.builtin import BuiltinSourceConfig, build_builtin_source
from tests.data_pipeline.fakes import FAKE, job_config, make_assets


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder` but the lease: its sha256 and modification time."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCAL_FILE
    }


def test_two_render_jobs_on_one_folder_one_renders_the_other_stops(tmp_path, ray_cluster) -> None:
    root = make_assets(tmp_path / "a", {"one": "sleep=3", "two": "fine"})
    out = tmp_path / "out"
    first: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: first.update(summary=run_job(job_config(out, root), renderer=FAKE))
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not (out / LOCAL_FILE).is_file() or not (out / LOCAL_FILE).read_bytes():
        assert runner.is_alive() and time.monotonic() < deadline, "the first job never started"
        time.sleep(0.05)
    with pytest.raises(JobError, match=rf"in use by another render job \(pid {os.getpid()} on "):
        run_job(job_config(out, root), renderer=FAKE)
    runner.join()
    assert first["summary"]["this_run"]["rendered"] == 2  # type: ignore[index]
    lines = (out / RENDERED_FILE).read_text().splitlines()
    assert len(lines) == len(read_rendered(out)) == 2  # each object rendered once, by the first
    assert (out / LOCAL_FILE).read_bytes() == b""


def test_a_job_whose_folder_is_held_writes_nothing(tmp_path) -> None:
    root = make_assets(tmp_path / "a", {"one": "fine"})
    out = tmp_path / "out"
    lease = acquire(out, "render job")
    try:
        with pytest.raises(JobError, match="Only one job may write a folder at a time"):
            run_job(job_config(out, root), renderer=FAKE)  # stops before Ray: no cluster needed
    finally:
        lease.release()
    assert sorted(p.name for p in out.iterdir()) == [LOCAL_FILE]
    assert not read_ledger(out)


def test_a_finished_job_run_again_starts_no_ray_and_changes_no_file(
    tmp_path, ray_cluster, monkeypatch, capsys
) -> None:
    root = make_assets(tmp_path / "a", {"one": "fine", "two": "fine", "bad": "refuse"})
    out = tmp_path / "out"
    summary = run_job(job_config(out, root), renderer=FAKE)
    before = snapshot(out)
    assert "shards/index.json" in before and "quarantine.jsonl" in before

    def no_ray(cfg):
        raise AssertionError("a finished job started Ray")

    monkeypatch.setattr("data_pipeline.job.run.start_ray", no_ray)
    capsys.readouterr()
    again = run_job(job_config(out, root), renderer=FAKE)
    assert snapshot(out) == before
    assert again["resumed"] == {"already_staged": 2, "already_quarantined": 1}
    assert again["this_run"]["rendered"] == 0 and again["total"] == summary["total"]
    assert "is complete: 2 objects staged, 1 quarantined, " in capsys.readouterr().out

    # and the check can fail: a shard gone means work to do (Ray for sharding, files written)
    (out / "shards" / summary["shards"][0]).unlink()
    with pytest.raises(AssertionError, match="started Ray"):
        run_job(job_config(out, root), renderer=FAKE)


def test_builtin_assets_already_in_place_are_not_written_again(tmp_path) -> None:
    build_builtin_source(BuiltinSourceConfig(), tmp_path)
    before = snapshot(tmp_path)
    assert len(before) == 6  # three objects, a GLB and a caption each
    build_builtin_source(BuiltinSourceConfig(), tmp_path)
    assert snapshot(tmp_path) == before
