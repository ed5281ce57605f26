"""The render workers' work folders (data_pipeline.job.locks): the folders of killed owners are
removed, live ones kept, whether their owner is another process or this one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from data_pipeline.job.locks import claim_work_dir, remove_stale_work_dirs

_KILLABLE_OWNER = """
import sys, time
from pathlib import Path
from data_pipeline.job.locks import claim_work_dir
folder, _ = claim_work_dir(Path(sys.argv[1]))
print(folder, flush=True)
time.sleep(3600)
"""


def test_work_folders_of_killed_owners_are_removed_and_live_ones_kept(tmp_path):
    work = tmp_path / "work"
    (work / "render-oldstyle").mkdir(parents=True)  # a killed run of before the locks
    (work / "logs").mkdir()
    killed = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_OWNER, str(work)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    assert killed.stdout is not None
    killed_dir = Path(killed.stdout.readline().decode().strip())
    live, lock = claim_work_dir(work)
    try:
        assert remove_stale_work_dirs(work) == [work / "render-oldstyle"]
        assert killed_dir.is_dir(), "a live owner's folder (another process) was removed"
        killed.kill()
        killed.wait()
        assert remove_stale_work_dirs(work) == [killed_dir]
        assert live.is_dir(), "a live owner's folder (this process) was removed"
        assert (work / "logs").is_dir()
    finally:
        killed.kill()
        killed.wait()
        os.close(lock)
    assert remove_stale_work_dirs(work) == [live]  # released: its owner is gone
    assert sorted(p.name for p in work.iterdir()) == ["logs"]
