"""Datasets in object storage: a folder given as a URL (file://, s3:// on a local S3 server) reads
as the local folder does, through its index, with the same refusals; failures are OSErrors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from contract import storage
from contract.dataset_index import INDEX_FILE, read_index, verify_dataset
from contract.schema import IncompleteDatasetError, SchemaError
from contract.shard_reader import expand_urls, list_shards, read_manifests, read_rings, verify_shard
from contract.synthetic_shards import write_synthetic_shards

FLAGS = ("allow_incomplete=True", "data.allow_incomplete=true", "allow_incomplete=true")


@pytest.fixture
def out(tmp_path) -> Path:
    """A render job's output folder: OUT/shards with 3 shards, their manifests and index.json."""
    write_synthetic_shards(tmp_path / "out" / "shards", num_shards=3, rings_per_shard=3)
    return tmp_path / "out"


def assert_same_rings(got, expected) -> None:
    got, expected = list(got), list(expected)
    assert [r.key for r in got] == [r.key for r in expected] and expected
    for a, b in zip(got, expected, strict=True):
        assert a.meta == b.meta and a.views == b.views
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.c2w, b.c2w)


def test_which_strings_are_urls():
    for url in ("s3://b/ds", "gs://b/ds", "file:///tmp/ds", "memory://ds"):
        assert storage.is_url(url), url
    # webdataset's own: curl, commands, file: with one slash; and plain paths
    for other in ("https://h/s.tar", "http://h/s.tar", "pipe:cat s.tar", "file:/tmp/s.tar",
                  "/tmp/ds", "out/shards", "C:\\data"):  # fmt: skip
        assert not storage.is_url(other), other


def test_file_urls_read_like_local_paths(out):
    local = out / "shards"
    url = f"file://{out}"  # OUT, holding shards/
    assert read_index(url) == read_index(out)
    assert list_shards(url) == [f"file://{p}" for p in list_shards(out)]
    assert_same_rings(read_rings(url, views=[0, 4]), read_rings(out, views=[0, 4]))
    for form in (f"file://{local}/shard-*.tar", f"file://{local}/shard-{{00000..00002}}.tar"):
        assert expand_urls(form) == list_shards(url), form
    assert read_manifests(url) == read_manifests(out)
    assert verify_shard(list_shards(url)[0]) == read_manifests(out)[0]
    with pytest.raises(FileNotFoundError, match="neither a shard folder"):
        expand_urls(f"file://{out}/nothing-here")


def test_remote_read_errors_are_oserrors_naming_the_url():
    class Broken:
        def read(self, n: int) -> bytes:
            raise RuntimeError("connection reset by peer")  # botocore's are not OSErrors

        def close(self) -> None:
            pass

    with pytest.raises(OSError, match=r"s3://b/shard-00000.tar: RuntimeError: connection reset"):
        storage._RemoteFile(Broken(), "s3://b/shard-00000.tar").read(10)


# ---------------------------------------------------------------------------------------------
# On an S3 server (moto, 127.0.0.1)


def test_s3_folder_reads_as_the_local_one(out, s3):
    url = s3.upload(out, "out")  # s3://bucket/<prefix>/out, holding shards/
    assert read_index(url) == read_index(out)
    shards = list_shards(url)
    assert shards == [f"{url}/shards/{Path(p).name}" for p in list_shards(out)]
    assert_same_rings(read_rings(url), read_rings(out))
    assert_same_rings(read_rings(f"{url}/shards/shard-*.tar", views=[0]), read_rings(out, [0]))
    assert_same_rings(read_rings(shards[1:], views=[2]), read_rings(list_shards(out)[1:], [2]))
    assert read_manifests(url) == read_manifests(out)
    assert verify_dataset(url) == read_index(out)  # every sha256, streamed
    assert verify_shard(shards[2]) == read_manifests(out)[2]


def test_s3_folder_without_an_index_is_refused_naming_it_and_the_flag(out, s3, caplog):
    url = s3.upload(out / "shards", "ds")
    s3.fs.rm(f"{url}/{INDEX_FILE}")  # as a job killed while rewriting the shards leaves it
    for read in (read_index, list_shards, lambda d: list(read_rings(d)), read_manifests):
        with pytest.raises(IncompleteDatasetError, match=f"no {INDEX_FILE}") as info:
            read(url)
        assert f"dataset {url} is incomplete" in str(info.value)
        assert all(flag in str(info.value) for flag in FLAGS)
    with caplog.at_level(logging.WARNING, logger="contract.shard_reader"):
        rings = list(read_rings(url, views=[0], allow_incomplete=True))
    assert_same_rings(rings, read_rings(out, views=[0]))
    assert "incomplete" in caplog.text


def test_s3_shards_that_differ_from_the_index_are_refused(out, s3):
    url = s3.upload(out / "shards", "ds")
    local = out / "shards" / "shard-00001.tar"
    data = local.read_bytes()
    s3.fs.pipe_file(f"{url}/shard-00001.tar", data[: len(data) // 2])  # truncated copy
    with pytest.raises(IncompleteDatasetError, match="the shard changed") as info:
        list_shards(url)
    assert f"shard {url}/shard-00001.tar: {len(data) // 2} bytes" in str(info.value)
    # an explicit shard needs no index: reading it fails as the same local file fails
    local.write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError) as local_error:
        list(read_rings(str(local)))
    with pytest.raises(SchemaError) as remote_error:
        list(read_rings(f"{url}/shard-00001.tar"))
    expected = str(local_error.value).replace(str(local), f"{url}/shard-00001.tar")
    assert str(remote_error.value) == expected

    flipped = bytearray(data)
    flipped[-1] ^= 0xFF  # same size, in the tar's zero padding: only the hash tells
    s3.fs.pipe_file(f"{url}/shard-00001.tar", bytes(flipped))
    assert len(list_shards(url)) == 3
    with pytest.raises(SchemaError, match=f"shard {url}/shard-00001.tar: sha256"):
        verify_dataset(url)


def test_s3_options_from_fsspec_config(out, s3, monkeypatch, s3_server):
    """The other documented way: fsspec's configuration (FSSPEC_S3_ENDPOINT_URL, or a JSON file
    in ~/.config/fsspec) instead of AWS_ENDPOINT_URL."""
    import fsspec

    url = s3.upload(out / "shards", "ds")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_server})
    assert read_index(url) == read_index(out)
    dead = {"endpoint_url": "http://127.0.0.1:9", "retries": 1,
            "config_kwargs": {"retries": {"max_attempts": 1}}}  # fmt: skip
    monkeypatch.setitem(fsspec.config.conf, "s3", dead)
    with pytest.raises(OSError):  # nothing listens there: an OSError, not botocore's own
        storage.size(f"{url}/{INDEX_FILE}")


@pytest.mark.parametrize("where", ["local", "file-url", "s3", "s3-multipart"])
def test_a_failed_write_leaves_nothing_under_the_name(where, tmp_path, s3):
    target = {
        "local": str(tmp_path / "f.tar"),
        "file-url": f"file://{tmp_path}/f.tar",
        "s3": f"{s3.url}/f.tar",
        "s3-multipart": f"{s3.url}/f.tar",
    }[where]
    size = 12 << 20 if where == "s3-multipart" else 1000  # s3fs uploads parts from 5 MiB on
    with pytest.raises(RuntimeError), storage.open_write(target) as f:
        f.write(b"x" * size)
        raise RuntimeError("writer died")
    assert not storage.exists(target)
    if where.startswith("s3"):
        assert s3.fs.find(s3.url) == []
    else:
        assert list(tmp_path.iterdir()) == []  # no temporary left either
    storage.write_bytes(target, b"whole")
    assert storage.read_bytes(target) == b"whole"


def test_folder_marker_objects_are_not_files(s3):
    """Consoles and sync tools make zero-byte objects named like folders ("prefix/")."""
    s3.fs.pipe_file(f"{s3.url}/objs/", b"")
    s3.fs.pipe_file(f"{s3.url}/objs/sub/", b"")
    s3.fs.pipe_file(f"{s3.url}/objs/sub/a.glb", b"glb")
    s3.fs.invalidate_cache()
    assert storage.find(f"{s3.url}/objs") == [f"{s3.url}/objs/sub/a.glb"]
    assert storage.names(f"{s3.url}/objs/sub", "*") == ["a.glb"]
