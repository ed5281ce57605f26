"""Reader: URL forms, manifests, and loud failures (never substitution)."""

from __future__ import annotations

import tarfile

import pytest

from contract.dataset_index import write_index
from contract.schema import SchemaError, encode_sample
from contract.shard_reader import (
    expand_urls,
    list_shards,
    local_shard_samples,
    read_manifests,
    read_rings,
)
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


def _wds_samples(path):
    import webdataset as wds

    return list(wds.tarfile_samples([{"url": str(path)}]))


def test_local_shards_are_read_into_the_same_samples_as_webdataset_reads_them(tmp_path):
    """local_shard_samples (one seek and read per member) replaces webdataset's stream reader
    for local files: same keys, same members, same bytes, same order; a directory member, a
    webdataset __meta__ member and upper-case extensions are handled as webdataset does."""
    import io

    path = tmp_path / "shard-00000.tar"
    write_shard(path, [encode_sample(*fake_ring(f"o{j}", seed=j)) for j in range(3)])
    with tarfile.open(path, "a") as tar:  # extras webdataset skips or lower-cases
        info = tarfile.TarInfo("dir")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        extras = (
            ("__meta__", b"m"),
            ("__x__.json", b"x"),
            ("__m__/a.png", b"a"),
            (".h.png", b"h"),
            ("extra.TXT", b"upper"),
        )
        for name, data in extras:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ours, theirs = list(local_shard_samples(str(path))), _wds_samples(path)
    assert [s["__key__"] for s in ours] == ["o0_r0", "o1_r0", "o2_r0", "__x__", "extra"]
    assert ours == theirs


def test_a_local_shard_damaged_in_the_middle_is_an_error_not_a_short_shard(tmp_path):
    """tarfile takes an unreadable header as the end of the archive; webdataset's reader then
    ends the shard early without a word. Ours raises; the sample it was collecting when the
    damage appeared (o0, whole here, which it cannot know) is not yielded."""
    path = tmp_path / "shard-00000.tar"
    write_shard(path, [encode_sample(*fake_ring(f"o{j}", seed=j)) for j in range(3)])
    raw = bytearray(path.read_bytes())
    second_key_at = raw.index(b"o1_r0.meta.json")  # the header of o1's first member
    raw[second_key_at : second_key_at + 100] = b"\x7f" * 100
    path.write_bytes(bytes(raw))
    assert [s["__key__"] for s in _wds_samples(path)] == ["o0_r0"]  # silently short
    seen = []
    with pytest.raises(tarfile.ReadError, match="no tar header and no end-of-archive at byte"):
        for sample in local_shard_samples(str(path)):
            seen.append(sample["__key__"])
    assert seen == []
    with pytest.raises(SchemaError, match=r"shard-00000\.tar: unreadable"):
        list(read_rings(str(path)))


def test_a_local_shard_cut_inside_a_member_raises(tmp_path):
    """A member that is not the last one, cut short (its bytes overwritten by zeros from there):
    the read comes back short, which only the length check catches."""
    path = tmp_path / "shard-00000.tar"
    write_shard(path, [encode_sample(*fake_ring(f"o{j}", seed=j)) for j in range(2)])
    raw = path.read_bytes()
    start = raw.index(b"o0_r0.view003.png") + 512 + 20  # 20 bytes into o0's view 3
    path.write_bytes(raw[:start])
    with pytest.raises(EOFError, match=r"o0_r0\.view003\.png: \d+ of \d+ bytes"):
        list(local_shard_samples(str(path)))


def test_a_local_shard_cut_at_a_member_boundary_is_an_error_not_a_short_shard(tmp_path):
    """Cut right after a member: tarfile sees no further header and ends the archive quietly;
    without the end-of-archive blocks that is damage, not the end of the shard."""
    path = tmp_path / "shard-00000.tar"
    write_shard(path, [encode_sample(*fake_ring(f"o{j}", seed=j)) for j in range(2)])
    raw = path.read_bytes()
    boundary = raw.index(b"o1_r0.meta.json")  # o1's first header: o0 ends right before it
    assert boundary % 512 == 0
    path.write_bytes(raw[:boundary])
    with pytest.raises(tarfile.ReadError, match="no end-of-archive"):
        list(local_shard_samples(str(path)))
    with pytest.raises(SchemaError, match=r"shard-00000\.tar: unreadable"):
        list(read_rings(str(path)))
