"""Datasets in object storage: a folder given as a URL (file://, s3:// on a local S3 server) reads
as the local folder does, through its index, with the same refusals; failures are OSErrors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from contract import retry_policy, storage
from contract.dataset_index import INDEX_FILE, read_index, verify_dataset
from contract.schema import IncompleteDatasetError, SchemaError
from contract.shard_reader import expand_urls, list_shards, read_manifests, read_rings, verify_shard
from contract.synthetic_shards import write_synthetic_shards
from tests.s3_env import TEST_STORE_ATTEMPTS

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
    # an explicit shard needs no index: reading it fails, naming the shard, as the local file
    # does (locally contract.shard_reader.local_shard_samples finds the missing end of the
    # archive; the stream from the store goes through webdataset, whose cut sample is refused)
    local.write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError, match="no end-of-archive") as local_error:
        list(read_rings(str(local)))
    with pytest.raises(SchemaError) as remote_error:
        list(read_rings(f"{url}/shard-00001.tar"))
    assert str(local_error.value).startswith(f"shard {local}: ")
    assert str(remote_error.value).startswith(f"shard {url}/shard-00001.tar: ")

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
    # the user's retry setting wins over the module's (max_attempts: retries after the first)
    dead = {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 1}}}
    monkeypatch.setitem(fsspec.config.conf, "s3", dead)
    retries = storage.store_retries()
    with pytest.raises(OSError, match="EndpointConnectionError") as info:  # not botocore's own
        storage.size(f"{url}/{INDEX_FILE}")  # nothing listens there
    assert f"{url}/{INDEX_FILE}" in str(info.value) and "127.0.0.1:9" in str(info.value)
    assert storage.store_retries() - retries == 1


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


# ---------------------------------------------------------------------------------------------
# Transient failures of the store (the server injects them: tests/s3_env.py S3Faults)


def test_s3_retry_settings_merge_with_the_users(s3, monkeypatch):
    import fsspec

    config_kwargs = retry_policy.s3_config_kwargs  # botocore's Config, before botocore reads it
    ours = {"mode": "standard", "total_max_attempts": TEST_STORE_ATTEMPTS}
    assert config_kwargs() == {"connect_timeout": 5, "read_timeout": 15, "retries": ours}
    theirs = {"config_kwargs": {"read_timeout": 60, "retries": {"max_attempts": 1}}}
    monkeypatch.setitem(fsspec.config.conf, "s3", theirs)
    assert config_kwargs() == {"connect_timeout": 5, "read_timeout": 60,
                               "retries": {"mode": "standard", "max_attempts": 1}}  # fmt: skip
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    assert config_kwargs()["retries"] == {"total_max_attempts": TEST_STORE_ATTEMPTS}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")  # botocore reads both itself
    assert config_kwargs()["retries"] == {}
    monkeypatch.setenv(retry_policy.STORE_ATTEMPTS_ENV, "zero")
    with pytest.raises(ValueError, match=retry_policy.STORE_ATTEMPTS_ENV):
        storage._fs(f"{s3.url}/x")


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "SlowDown")])
def test_transient_s3_errors_are_retried_and_counted(s3, s3_faults, status, code):
    failures = TEST_STORE_ATTEMPTS - 1  # the most one request can meet and still succeed
    key = f"{s3.url.removeprefix('s3://')}/objs/a.bin"

    def retried(call, match: str, method: str):
        s3_faults.fail(match, failures, status=status, code=code, method=method)
        before = storage.store_retries()
        result = call()
        assert storage.store_retries() - before >= failures
        assert s3_faults.requests(match, method) >= failures + 1
        return result

    retried(lambda: storage.write_bytes(f"s3://{key}", b"abc" * 100), key, "PUT")
    assert retried(lambda: storage.read_bytes(f"s3://{key}"), key, "GET") == b"abc" * 100
    assert retried(lambda: storage.size(f"s3://{key}"), key, "HEAD") == 300
    with storage.open_binary(f"s3://{key}") as f:  # streamed: range requests
        assert retried(f.read, key, "GET") == b"abc" * 100
    storage.forget(f"{s3.url}/objs")
    prefix = key.removesuffix("/a.bin").split("/", 1)[1]
    listed = retried(lambda: storage.find(f"{s3.url}/objs"), f"prefix={prefix}", "GET")
    assert listed == [f"s3://{key}"]


def test_a_timed_out_s3_request_is_retried(s3, s3_faults, monkeypatch):
    """A server that answers too late: the client gives up after its read timeout (here the
    user's, from fsspec's configuration) and asks again."""
    import fsspec

    key = f"{s3.url}/slow.bin".removeprefix("s3://")
    storage.write_bytes(f"s3://{key}", b"late")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"read_timeout": 1}})
    s3_faults.delay(key, 3, method="GET")
    before = storage.store_retries()
    assert storage.read_bytes(f"s3://{key}") == b"late"
    assert storage.store_retries() - before >= 1
    assert s3_faults.requests(key, "GET") == 2


@pytest.mark.parametrize(
    "read", ["read_bytes", "read_many", "size", "open_binary", "find", "write_bytes"]
)
def test_a_permanent_s3_failure_is_an_oserror_naming_the_url_after_bounded_tries(
    read, s3, s3_faults
):
    folder = f"{s3.url}/broken"
    storage.write_bytes(f"{folder}/obj.bin", b"x" * 1000)
    storage.write_bytes(f"{folder}/ok.bin", b"fine")
    url, match = f"{folder}/obj.bin", f"{folder}/obj.bin".removeprefix("s3://")
    if read == "find":  # the folder's listing: ListObjectsV2 ?prefix=<key of the folder>
        url, match = folder, f"prefix={folder.split('/', 3)[3]}"
    storage.forget(folder)
    s3_faults.fail(match, times=None)  # every request, whatever its method
    before, seen = storage.store_retries(), s3_faults.requests(match)
    do = {
        "read_bytes": storage.read_bytes,
        "read_many": lambda u: storage.read_many([f"{folder}/ok.bin", u]),  # names the one
        "size": storage.size,
        "open_binary": lambda u: storage.open_binary(u).read(),
        "find": storage.find,
        "write_bytes": lambda u: storage.write_bytes(u, b"y"),
    }[read]
    with pytest.raises(OSError, match="Internal") as info:
        do(url)
    assert url in str(info.value), info.value
    # retried, but boundedly: a 500 costs the attempts of one request (s3fs does not run the
    # call again: only botocore retries it)
    assert s3_faults.requests(match) - seen == TEST_STORE_ATTEMPTS
    assert storage.store_retries() - before == TEST_STORE_ATTEMPTS - 1


@pytest.mark.slow
def test_a_store_that_never_answers_in_time_costs_a_bounded_number_of_requests(
    s3, s3_faults, monkeypatch
):
    """Every GET answered after the read timeout: botocore's attempts, each inside s3fs's two
    nested tries of a GET (module docstring), then an OSError naming the URL."""
    import fsspec

    url = f"{s3.url}/never.bin"
    storage.write_bytes(url, b"late")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"read_timeout": 0.3}})
    s3_faults.delay(url.removeprefix("s3://"), 0.6, times=None, method="GET")
    with pytest.raises(OSError, match="Read timeout") as info:
        storage.read_bytes(url)
    assert url in str(info.value), info.value
    seen = s3_faults.requests(url.removeprefix("s3://"), "GET")
    assert TEST_STORE_ATTEMPTS < seen <= TEST_STORE_ATTEMPTS * retry_policy.S3FS_TRIES**2, seen
