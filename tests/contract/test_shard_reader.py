"""Reader: URL forms, manifests, and loud failures (never substitution)."""

from __future__ import annotations

import pytest

from contract.dataset_index import write_index
from contract.schema import SchemaError, encode_sample
from contract.shard_reader import expand_urls, list_shards, read_manifests, read_rings
from contract.shard_writer import write_shard
from tests.data_pipeline.fakes import fake_ring


@pytest.fixture
def shard_dir(tmp_path):
    manifests = []
    for sid in range(3):
        samples = [encode_sample(*fake_ring(f"s{sid}-o{j}", seed=j)) for j in range(2)]
        manifests.append(write_shard(tmp_path / f"shard-{sid:05d}.tar", samples))
    write_index(tmp_path, manifests)
    return tmp_path


def test_paths_globs_braces_and_folders_agree(shard_dir):
    expected = [f"s{s}-o{j}_r0" for s in range(3) for j in range(2)]
    forms = [
        str(shard_dir),
        str(shard_dir / "shard-*.tar"),
        str(shard_dir / "shard-{00000..00002}.tar"),
        list_shards(shard_dir),
        [f"file:{p}" for p in list_shards(shard_dir)],
    ]
    for form in forms:
        assert [r.key for r in read_rings(form, views=[0])] == expected, form


def test_missing_shard_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        expand_urls(str(tmp_path / "nope.tar"))
    with pytest.raises(FileNotFoundError):
        expand_urls(str(tmp_path / "shard-*.tar"))


def test_truncated_shard_raises_schema_error(shard_dir):
    path = shard_dir / "shard-00001.tar"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(SchemaError, match=r"shard .*shard-00001\.tar"):
        list(read_rings(str(shard_dir)))  # the index's size check
    with pytest.raises(SchemaError, match=r"shard .*shard-00001\.tar"):
        list(read_rings(str(path)))  # reading the tar itself


def test_manifest_missing_is_reported(shard_dir):
    (shard_dir / "shard-00002.tar.manifest.json").unlink()
    with pytest.raises(SchemaError, match="no manifest"):
        read_manifests(shard_dir)


def test_manifests_give_uids_and_asset_hashes(shard_dir):
    manifests = read_manifests(shard_dir)
    assert [m.shard for m in manifests] == [f"shard-{i:05d}.tar" for i in range(3)]
    assert set().union(*(m.uids for m in manifests)) == {
        f"s{s}-o{j}" for s in range(3) for j in range(2)
    }
    assert manifests[0].asset_hashes == {f"{0:064x}", f"{1:064x}"}
