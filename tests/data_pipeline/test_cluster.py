"""The render job on a Ray cluster of two nodes, started as separate `ray start` processes on this
machine, each with its own Ray temp dir and its own local scratch (TMPDIR), writing to an
S3-compatible server on loopback (moto, tests/conftest.py): killed mid-job and resumed, it ends
with every object in the shards exactly once, and every object was read from object storage into
the scratch of the node that rendered it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from contract.dataset_index import read_index
from contract.shard_reader import read_rings
from data_pipeline.job.ledger import LEDGER_FILE, read_ledger
from tests.data_pipeline.fakes import kill_when, make_assets

REPO = Path(__file__).resolve().parents[2]

_DRIVER = """
import sys
from data_pipeline.job.config import RayConfig
from data_pipeline.job.run import run_job
from tests.data_pipeline.fakes import FAKE, job_config
out, src, address = sys.argv[1:4]
cfg = job_config(out, src, ray=RayConfig(address=address, workers=2, cpus_per_worker=1))
summary = run_job(cfg, renderer=FAKE)
print("RESUMED", summary["resumed"]["already_staged"])
"""

_WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < 2:
    assert time.monotonic() < deadline, ray.nodes()
    time.sleep(0.5)
"""


def staged(s3, out: str) -> set[str]:
    s3.fs.invalidate_cache()  # s3fs caches listings
    return {p.rsplit("/", 1)[1].removesuffix(".tar") for p in s3.fs.glob(f"{out}/staging/*.tar")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """One `ray start --block` process: its own Ray temp dir and its own TMPDIR (scratch)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], scratch: Path):
        # Ray's socket paths live under its temp dir and must stay short: /tmp, not tmp_path
        self.ray_tmp = Path(tempfile.mkdtemp(prefix=f"ray{name}-", dir="/tmp"))
        self.scratch = scratch
        scratch.mkdir(parents=True)
        self.log = open(scratch.parent / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [ray, "start", "--block", *args, "--num-cpus=1", f"--temp-dir={self.ray_tmp}"]
        cmd += ["--disable-usage-stats"]
        self.proc = subprocess.Popen(
            cmd,
            env={**env, "TMPDIR": str(scratch)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # --block: stops this node's Ray processes
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_two_node_cluster_job_to_object_storage_killed_and_resumed(tmp_path, s3):
    pytest.importorskip("ray")
    names = [f"obj{i}" for i in range(10)]
    assets = make_assets(tmp_path / "a", dict.fromkeys(names, "fine sleep=1.5"))
    (assets / "bad.glb").write_text("refuse")
    src = s3.upload(assets, "src")
    out = f"{s3.url}/out"
    # s3 has put the S3 environment in os.environ; the nodes and the driver inherit it
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[Node] = []
    try:
        head = ["--head", f"--port={port}", "--include-dashboard=false"]
        nodes.append(Node("head", head, env, tmp_path / "head" / "tmp"))
        time.sleep(3)
        nodes.append(Node("node", [f"--address={address}"], env, tmp_path / "node" / "tmp"))
        subprocess.run(
            [sys.executable, "-c", _WAIT_FOR_NODES, address], env=env, check=True, timeout=180
        )

        kill_when(
            [sys.executable, "-c", _DRIVER, out, src, address],
            env,
            lambda: len(staged(s3, out)) >= 3,
            timeout=240,
        )
        staged_before = len(staged(s3, out))
        assert 3 <= staged_before < len(names), "the kill came too late to test resumption"
        assert not s3.fs.exists(f"{out}/shards/index.json")

        resumed = subprocess.run(
            [sys.executable, "-c", _DRIVER, out, src, address],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"RESUMED {staged_before}" in resumed.stdout
    finally:
        for node in reversed(nodes):
            node.stop()

    rings = list(read_rings(f"{out}/shards", views=[0]))
    keys = Counter(r.key for r in rings)
    assert set(keys.values()) == {1}, "an object is in the shards twice"
    assert {r.meta.uid for r in rings} == staged(s3, out)
    assert len(keys) == 2 * len(names) == read_index(f"{out}/shards").num_rings
    assert [e.reason for e in read_ledger(out).values()] == ["no_faces"]
    assert not s3.fs.exists(f"{out}/{LEDGER_FILE}.d")
    # every object was downloaded into the scratch of the node that rendered it, and both nodes
    # rendered: nothing was read from a path only one node sees
    where = Counter()
    for ring in rings:
        owner = [n for n in nodes if Path(ring.meta.asset_path).is_relative_to(n.scratch)]
        assert len(owner) == 1, ring.meta.asset_path
        where[owner[0].scratch] += 1
    assert len(where) == 2, where
    # the killed run's work folders were removed by the resumed run's actors on each node
    for node in nodes:
        work = node.scratch / "imagedream-render"
        assert list((work / "logs").glob("render-*.log"))
        assert not list(work.glob("render-*")), f"work folders left in {work}"
