"""One live job per folder: the local flock lease and the object-store lease object."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.lease import LOCAL_FILE, REMOTE_FILE, FolderBusy, Owner, acquire, folder_lease

REPO = Path(__file__).resolve().parents[2]


def _holder(folder: str, ttl_s: float, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A separate process that takes the folder's lease, says so, and then sleeps."""
    code = (
        "import sys, time; from contract.lease import acquire; "
        f"acquire({folder!r}, 'render job', ttl_s={ttl_s}); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


# -- local folders --------------------------------------------------------------------------------


def test_a_second_job_on_a_local_folder_stops_naming_the_first(tmp_path) -> None:
    busy = pytest.raises(FolderBusy, match=rf"training run \(pid {os.getpid()} on ")
    with folder_lease(tmp_path / "run", "training run"), busy:
        acquire(tmp_path / "run", "training run")
    lease = acquire(tmp_path / "run", "evaluation")  # released: free again
    assert Owner.parse((tmp_path / "run" / LOCAL_FILE).read_bytes()).what == "evaluation"
    lease.release()
    assert (tmp_path / "run" / LOCAL_FILE).read_bytes() == b""  # a folder at rest: empty


def test_the_lease_of_a_killed_local_job_is_free_at_once(tmp_path) -> None:
    proc = _holder(str(tmp_path), 60)
    with pytest.raises(FolderBusy, match=f"pid {proc.pid}"):
        acquire(tmp_path, "render job")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acquire(tmp_path, "render job").release()  # the kernel dropped the dead holder's lock


# -- object storage -------------------------------------------------------------------------------


def test_a_second_job_on_a_store_folder_stops_and_the_live_lease_is_renewed(s3) -> None:
    folder = f"{s3.url}/out"
    with folder_lease(folder, "render job", ttl_s=1.5) as lease:
        with pytest.raises(FolderBusy, match=rf"render job \(pid {os.getpid()}"):
            acquire(folder, "render job", ttl_s=1.5)
        time.sleep(2.5)  # past the first expiry: renewed, still ours
        with pytest.raises(FolderBusy):
            acquire(folder, "render job", ttl_s=1.5)
        assert not lease.lost
    assert not s3.fs.exists(f"{folder}/{REMOTE_FILE}")  # released: the object is gone
    acquire(folder, "render job", ttl_s=1.5).release()


def test_a_store_lease_of_another_host_is_taken_over_only_after_its_expiry(s3) -> None:
    folder = f"{s3.url}/out"
    other = Owner(
        "render job", "another-host", 4242, "2026-01-01T00:00:00+00:00", "feed", time.time() + 2.0
    )
    s3.fs.pipe_file(f"{folder}/{REMOTE_FILE}", other.to_bytes())
    with pytest.raises(FolderBusy, match="pid 4242 on another-host"):
        acquire(folder, "render job", ttl_s=5)
    time.sleep(2.2)
    with folder_lease(folder, "render job", ttl_s=5) as lease:
        stored = json.loads(s3.fs.cat_file(f"{folder}/{REMOTE_FILE}"))
        assert stored["nonce"] == lease.owner.nonce and stored["host"] == socket.gethostname()


def test_a_store_lease_of_a_killed_job_on_this_host_is_taken_over_without_waiting(s3) -> None:
    folder = f"{s3.url}/out"
    proc = _holder(folder, 600, env=dict(os.environ))  # would hold for ten minutes
    with pytest.raises(FolderBusy, match=f"pid {proc.pid}"):
        acquire(folder, "render job", ttl_s=600)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acquire(folder, "render job", ttl_s=600).release()  # its pid is gone on this host


def test_a_lease_taken_over_behind_the_owners_back_is_marked_lost(s3) -> None:
    folder = f"{s3.url}/out"
    lease = acquire(folder, "render job", ttl_s=0.9)
    intruder = Owner(
        "render job", "another-host", 1, "2026-01-01T00:00:00+00:00", "beef", time.time() + 60
    )
    s3.fs.pipe_file(f"{folder}/{REMOTE_FILE}", intruder.to_bytes())
    time.sleep(1.0)  # a renewal tick finds the ETag changed
    assert lease.lost
    lease.release()
    assert json.loads(s3.fs.cat_file(f"{folder}/{REMOTE_FILE}"))["nonce"] == "beef"  # left alone
