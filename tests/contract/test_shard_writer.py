"""Shard writer: deterministic assignment, atomic files, manifests, rewrite from staging."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from contract import storage
from contract.dataset_index import write_index
from contract.schema import SchemaError, encode_sample
from contract.shard_reader import read_manifests, read_rings, verify_shard
from contract.shard_writer import (
    assign_shards,
    shard_id_for,
    shard_name,
    tar_bytes,
    write_shard,
    write_shards_from_staging,
)
from tests.data_pipeline.fakes import fake_ring

UIDS = [f"object-{i:03d}" for i in range(40)]


def test_shard_assignment_is_stable_across_processes():
    # Python's hash() is salted per process; our assignment must not be.
    code = (
        "from contract.shard_writer import shard_id_for;"
        f"print([shard_id_for(u, 7) for u in {UIDS!r}])"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout
        for seed in (1, 2)
    }
    assert len(runs) == 1
    assert json.loads(runs.pop()) == [shard_id_for(u, 7) for u in UIDS]
    # pinned values: a changed hash would silently reshuffle every existing dataset
    assert [shard_id_for(u, 1000) for u in ("a", "b", "obj")] == [
        int.from_bytes(hashlib.sha1(u.encode()).digest()[:8], "big") % 1000
        for u in ("a", "b", "obj")
    ]


def test_assignment_covers_every_uid_once():
    shards = assign_shards(UIDS, 4)
    flat = [u for uids in shards.values() for u in uids]
    assert sorted(flat) == sorted(UIDS)
    assert all(0 <= sid < 4 for sid in shards)
    assert len(shards) > 1  # 40 uids do not all land in one of 4 shards


def test_manifest_lists_members_with_sizes_and_hashes(tmp_path):
    samples = [encode_sample(*fake_ring("m1", r, seed=r)) for r in range(2)]
    manifest = write_shard(tmp_path / "shard-00000.tar", samples)
    assert manifest.uids == {"m1"}
    assert [e.key for e in manifest.entries] == ["m1_r0", "m1_r1"]
    entry = manifest.entries[0]
    assert set(entry.members) == {"m1_r0.meta.json"} | {f"m1_r0.view{i:03d}.png" for i in range(8)}
    png = samples[0]["view003.png"]
    assert entry.members["m1_r0.view003.png"] == {
        "bytes": len(png),
        "sha256": hashlib.sha256(png).hexdigest(),
    }
    assert verify_shard(tmp_path / "shard-00000.tar") == manifest
    write_index(tmp_path, [manifest])
    assert read_manifests(tmp_path) == [manifest]


def test_tampered_shard_fails_verification(tmp_path):
    path = tmp_path / "shard-00000.tar"
    write_shard(path, [encode_sample(*fake_ring("t"))])
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SchemaError, match="sha256"):
        verify_shard(path)


def test_tars_are_byte_reproducible():
    samples = [encode_sample(*fake_ring(u)) for u in ("b", "a")]
    assert tar_bytes(samples) == tar_bytes(list(reversed(samples)))


def test_duplicate_keys_are_refused(tmp_path):
    sample = encode_sample(*fake_ring("dup"))
    with pytest.raises(SchemaError, match="duplicate"):
        write_shard(tmp_path / "shard-00000.tar", [sample, sample])


def _stage(tmp_path, uids):
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    out = {}
    for i, uid in enumerate(uids):
        path = staging / f"{uid}.tar"
        path.write_bytes(tar_bytes([encode_sample(*fake_ring(uid, r, seed=i)) for r in range(2)]))
        out[uid] = path
    return out


def test_rewrite_from_staging_has_each_object_once(tmp_path):
    staged = _stage(tmp_path, UIDS[:10])
    shards = tmp_path / "shards"
    first = write_shards_from_staging(staged, shards, num_shards=3)
    assert sorted(u for m in first for u in m.uids) == sorted(UIDS[:10])
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}

    # same input: nothing rewritten
    write_shards_from_staging(staged, shards, num_shards=3)
    assert {p.name: p.stat().st_mtime_ns for p in shards.iterdir()} == mtimes

    # written again from scratch: the same bytes (reproducible shards)
    for p in shards.iterdir():
        p.unlink()
    again = write_shards_from_staging(staged, shards, num_shards=3)
    assert [m.tar_sha256 for m in again] == [m.tar_sha256 for m in first]

    # more objects and another shard count: stale shards go, still each object once
    staged = _stage(tmp_path, UIDS[:14])
    write_index(shards, write_shards_from_staging(staged, shards, num_shards=5))
    keys = [r.key for r in read_rings(str(shards), views=[0])]
    assert sorted(keys) == sorted(f"{u}_r{r}" for u in UIDS[:14] for r in range(2))
    for m in read_manifests(shards):
        verify_shard(shards / m.shard)


def _refuse(what):
    def refused(*args, **_kwargs):
        raise AssertionError(f"{what} {args[0]}")

    return refused


def test_rerun_keeps_intact_shards_and_hashes_only_local_ones(tmp_path, s3, monkeypatch):
    """An intact shard is kept on a rerun. On local disk its sha256 is checked (a same-size
    edit is rewritten); in object storage its size only, so no shard is downloaded again."""
    import contract.shard_writer as shards_module

    staged = _stage(tmp_path, UIDS[:8])
    local, remote = tmp_path / "shards", f"{s3.url}/shards"
    first = write_shards_from_staging(staged, local, num_shards=2)
    assert write_shards_from_staging(staged, remote, num_shards=2) == first

    with monkeypatch.context() as m:  # rerun into object storage: nothing hashed or rewritten
        m.setattr(storage, "sha256", _refuse("hashed"))
        m.setattr(shards_module, "write_shard", _refuse("rewrote"))
        assert write_shards_from_staging(staged, remote, num_shards=2) == first

    # a shard object of another size is written again
    name = shard_name(min(assign_shards(staged, 2)))
    s3.fs.pipe(f"{remote}/{name}", s3.fs.cat(f"{remote}/{name}")[:-512])
    assert write_shards_from_staging(staged, remote, num_shards=2) == first
    verify_shard(f"{remote}/{name}")

    # on local disk a same-size edit is caught by its sha256 and the shard is written again
    data = bytearray((local / name).read_bytes())
    data[700] ^= 0xFF
    (local / name).write_bytes(bytes(data))
    with pytest.raises(SchemaError, match="sha256"):
        verify_shard(local / name)
    assert write_shards_from_staging(staged, local, num_shards=2) == first
    verify_shard(local / name)


def test_parallel_sharding_tasks_give_the_same_shards_and_the_driver_reads_no_object(
    tmp_path, monkeypatch
):
    """The job builds each shard in a Ray task; the driver plans and collects manifests only."""
    import ray

    import contract.shard_writer as shards_module
    from data_pipeline.job.config import RenderJobConfig
    from data_pipeline.job.run import write_shards

    staged = _stage(tmp_path, UIDS[:12])
    reference = write_shards_from_staging(staged, tmp_path / "reference", num_shards=4)

    def no_reading(*_a, **_k):
        raise AssertionError("the driver read a staged object")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        monkeypatch.setattr(shards_module, "read_tar_samples", no_reading)  # this process only
        cfg = RenderJobConfig(source={}, num_shards=4, shard_workers=2)
        got = write_shards(cfg, staged, tmp_path / "parallel").manifests
    finally:
        ray.shutdown()
    assert [m.shard for m in got] == [m.shard for m in reference]
    assert [m.tar_sha256 for m in got] == [m.tar_sha256 for m in reference]  # byte-identical
