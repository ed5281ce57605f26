"""The dataset index: a shard folder is complete or visibly not. Every test damages a copy made
in tmp_path; the render job runs without Ray here (every object is already staged, so only the
shard rewrite runs)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from contract import shard_writer as shards_module
from contract.dataset_index import (
    INDEX_FILE,
    DatasetIndex,
    check_shard,
    read_index,
    verify_dataset,
    write_index,
    write_index_from_manifests,
)
from contract.schema import SCHEMA_VERSION, IncompleteDatasetError, SchemaError, encode_sample
from contract.shard_reader import list_shards, read_manifests, read_rings
from contract.shard_writer import tar_bytes, write_shard
from data_pipeline.job.ledger import stage_object
from data_pipeline.job.run import run_job
from data_pipeline.sources import LocalSource, LocalSourceConfig
from tests.data_pipeline.fakes import fake_ring, job_config, make_assets

NAMES = [f"obj{i}" for i in range(8)]
FLAGS = ("allow_incomplete=True", "data.allow_incomplete=true", "allow_incomplete=true")


def staged_job(tmp_path: Path, num_shards: int = 3):
    """An OUT whose every source object is staged (2 rings each): run_job only rewrites shards."""
    root = make_assets(tmp_path / "assets", dict.fromkeys(NAMES, "fine"))
    out = tmp_path / "out"
    for i, spec in enumerate(LocalSource(LocalSourceConfig(root=str(root))).list_objects()):
        rings = [encode_sample(*fake_ring(spec.uid, r, seed=i)) for r in range(2)]
        stage_object(out, spec.uid, tar_bytes(rings))
    cfg = job_config(out, root)
    cfg.num_shards = num_shards
    return cfg, out


@pytest.fixture(scope="module")
def job_output(tmp_path_factory) -> Path:
    """An OUT the job completed, once per module (a job starts Ray: seconds)."""
    cfg, out = staged_job(tmp_path_factory.mktemp("job"))
    run_job(cfg)
    return out


@pytest.fixture
def dataset(tmp_path, job_output) -> Path:
    """A complete OUT/shards written by the job: this test's own copy, to damage at will."""
    out = tmp_path / "out"
    shutil.copytree(job_output, out)
    return out / "shards"


def test_job_writes_an_index_that_read_index_accepts(dataset):
    index = read_index(dataset)
    manifests = read_manifests(dataset)
    assert index.complete and index.schema_version == SCHEMA_VERSION
    assert [e.name for e in index.shards] == [m.shard for m in manifests]
    assert (index.num_shards, index.num_rings, index.num_objects) == (
        len(manifests),
        2 * len(NAMES),
        len(NAMES),
    )
    for entry, manifest in zip(index.shards, manifests, strict=True):
        assert (entry.bytes, entry.sha256) == (manifest.tar_bytes, manifest.tar_sha256)
        assert (entry.rings, entry.objects) == (len(manifest.entries), len(manifest.uids))
    assert verify_dataset(dataset.parent) == index  # OUT works as well as OUT/shards
    assert list_shards(dataset) == [str(dataset / e.name) for e in index.shards]
    assert DatasetIndex.from_json(index.to_json()) == index


def test_folder_caught_mid_rewrite_is_refused_naming_the_override(tmp_path, monkeypatch, caplog):
    cfg, out = staged_job(tmp_path, num_shards=3)
    run_job(cfg)
    assert (out / "shards" / INDEX_FILE).is_file()

    # Another shard count rewrites every shard; the job dies after the first new one.
    real_write_shard, written = shards_module.write_shard, []

    def dies_after_one(path, samples):
        if written:
            raise KeyboardInterrupt("killed mid-rewrite")
        written.append(path)
        return real_write_shard(path, samples)

    monkeypatch.setattr(shards_module, "write_shard", dies_after_one)
    cfg.num_shards = 5
    cfg.shard_workers = 0  # shards written in this process, where the patch can kill the job
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg)
    folder = out / "shards"
    assert not (folder / INDEX_FILE).exists(), "the stale index must go before shards change"
    # one new shard, and old ones whose names the new layout reuses: a mix of two datasets
    assert 1 < len(list(folder.glob("shard-*.tar"))) < 5
    for read in (read_index, list_shards, lambda d: list(read_rings(d)), read_manifests):
        with pytest.raises(IncompleteDatasetError, match=f"no {INDEX_FILE}") as info:
            read(folder)
        assert str(folder) in str(info.value)
        assert all(flag in str(info.value) for flag in FLAGS)
    with pytest.raises(IncompleteDatasetError):  # OUT itself is a folder too
        list(read_rings(str(out)))

    with caplog.at_level(logging.WARNING, logger="contract.shard_reader"):
        rings = list(read_rings(folder, views=[0], allow_incomplete=True))
    assert 0 < len(rings) < 2 * len(NAMES)
    assert "incomplete" in caplog.text

    monkeypatch.setattr(shards_module, "write_shard", real_write_shard)
    run_job(cfg)  # running the job again finishes the folder
    assert read_index(folder).num_rings == 2 * len(NAMES)


def test_an_extra_or_missing_shard_is_refused_naming_it(dataset):
    extra = dataset / "shard-00099.tar"
    shutil.copy(dataset / "shard-00000.tar", extra)
    with pytest.raises(IncompleteDatasetError, match=r"not in index\.json .*shard-00099\.tar"):
        list_shards(dataset)
    extra.unlink()
    missing = read_index(dataset).shards[-1].name
    (dataset / missing).unlink()
    with pytest.raises(IncompleteDatasetError, match=rf"missing: \['{missing}'\]") as info:
        list(read_rings(dataset))
    assert all(flag in str(info.value) for flag in FLAGS)


def test_a_shard_of_another_size_is_refused_naming_it(dataset):
    path = dataset / "shard-00001.tar"
    path.write_bytes(path.read_bytes() + b"\0" * 512)
    with pytest.raises(SchemaError, match=r"shard-00001\.tar: \d+ bytes, index\.json says"):
        check_shard(path, read_index(dataset).entry(path.name), verify_sha256=False)
    with pytest.raises(IncompleteDatasetError, match=r"shard-00001\.tar"):
        list_shards(dataset)


def test_a_shard_with_another_sha256_is_refused_when_hashes_are_verified(dataset):
    path = dataset / "shard-00002.tar"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    entry = read_index(dataset).entry(path.name)
    assert entry is not None
    check_shard(path, entry, verify_sha256=False)  # sizes only: a cheap check for every read
    with pytest.raises(SchemaError, match=r"shard-00002\.tar: sha256 .* != index\.json"):
        check_shard(path, entry, verify_sha256=True)
    with pytest.raises(SchemaError, match=r"shard-00002\.tar: sha256"):
        verify_dataset(dataset)


def test_a_torn_or_incomplete_index_is_refused(dataset):
    index_path = dataset / INDEX_FILE
    raw = index_path.read_bytes()
    index_path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IncompleteDatasetError, match="unreadable") as info:
        list_shards(dataset)
    assert str(index_path) in str(info.value)
    with pytest.raises(SchemaError, match=r"index\.json is not JSON"):
        DatasetIndex.from_json(raw[:-5], str(index_path))

    index = DatasetIndex.from_json(raw)
    index.complete = False
    index_path.write_bytes(index.to_json())
    with pytest.raises(IncompleteDatasetError, match="marks it incomplete"):
        read_index(dataset)
    assert len(list_shards(dataset, allow_incomplete=True)) == index.num_shards


def test_explicit_tar_paths_need_no_index(dataset):
    tars = sorted(str(p) for p in dataset.glob("shard-*.tar"))
    (dataset / INDEX_FILE).unlink()
    assert len(list(read_rings(tars, views=[0]))) == 2 * len(NAMES)
    assert len(list(read_rings(str(dataset / "shard-*.tar"), views=[0]))) == 2 * len(NAMES)


def test_write_index_refuses_a_folder_that_disagrees_with_the_manifests(dataset):
    manifests = read_manifests(dataset)
    with pytest.raises(SchemaError, match="shards without a manifest"):
        write_index(dataset, manifests[1:])


def test_a_folder_written_shard_by_shard_can_be_indexed_from_its_manifests(tmp_path):
    for sid in range(2):
        write_shard(tmp_path / f"shard-{sid:05d}.tar", [encode_sample(*fake_ring(f"u{sid}"))])
    with pytest.raises(IncompleteDatasetError):
        list_shards(tmp_path)
    index = write_index_from_manifests(tmp_path)
    assert (index.num_shards, index.num_rings, index.num_objects) == (2, 2, 2)
    assert len(list_shards(tmp_path)) == 2
