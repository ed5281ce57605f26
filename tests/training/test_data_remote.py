"""Training from a dataset in object storage (a local S3 server): the same batches as from the
local copy, the same refusals and bad records, and exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.dataset_index import INDEX_FILE
from contract.schema import IncompleteDatasetError
from contract.synthetic_shards import synthetic_ring, write_synthetic_shards
from tests.s3_env import TEST_STORE_ATTEMPTS
from tests.training.helpers import RES, data_cfg
from training.data import BadDataError, Loader, StreamProgress, build_loader
from training.examples import Batch


@pytest.fixture
def dataset(tmp_path, s3) -> tuple[Path, str]:
    """3 shards of 5 rings, local and uploaded (shards, manifests, index.json)."""
    local = tmp_path / "ds"
    write_synthetic_shards(local, num_shards=3, rings_per_shard=5, num_views=8, resolution=RES)
    return local, s3.upload(local, "ds")


def take(loader: Loader, n: int) -> list[tuple[Batch, StreamProgress]]:
    return [loader.next_with_progress() for _ in range(n)]


def assert_same_batches(
    got: list[tuple[Batch, StreamProgress]], expected: list[tuple[Batch, StreamProgress]]
) -> None:
    assert len(got) == len(expected)
    for (a, a_progress), (b, b_progress) in zip(got, expected, strict=True):
        assert a.keys == b.keys and a.captions == b.captions
        assert a_progress.role == b_progress.role
        for name in ("targets", "cameras", "prompt_dropped", "text_dropped"):
            np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy())
        np.testing.assert_array_equal(a.prompt.vae.numpy(), b.prompt.vae.numpy())
        np.testing.assert_array_equal(np.stack(a.prompt.rgb), np.stack(b.prompt.rgb))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_from_s3_equal_those_from_the_local_copy(dataset, num_workers):
    local, url = dataset
    opts = dict(num_workers=num_workers, sampling="epoch", batch_size=3, prompt_dropout=0.5)
    remote_loader = build_loader(data_cfg(url, **opts), seed=7)
    assert remote_loader.urls == [f"{url}/shard-{i:05d}.tar" for i in range(3)]
    assert set(remote_loader.shards.entries) == set(remote_loader.urls)  # each checked on read
    got = take(remote_loader, 10)  # two epochs
    assert_same_batches(got, take(build_loader(data_cfg(str(local), **opts), seed=7), 10))
    assert not any(p.new_bad for _, p in got)
    keys = {k for b, _ in got for k in b.keys}
    assert keys == {f"obj{s:03d}x{i:04d}_r0" for s in range(3) for i in range(5)}


def test_an_s3_folder_without_an_index_is_refused_unless_allowed(dataset, s3):
    _, url = dataset
    s3.fs.rm(f"{url}/{INDEX_FILE}")
    with pytest.raises(IncompleteDatasetError, match=r"data.allow_incomplete=true") as err:
        build_loader(data_cfg(url), seed=0)
    assert f"dataset {url} is incomplete: no {INDEX_FILE}" in str(err.value)
    loader = build_loader(data_cfg(url, allow_incomplete=True), seed=0)
    assert len(next(loader)) == 2 and not loader.shards.entries


def test_a_truncated_s3_shard_is_one_bad_record_naming_its_url(dataset, s3):
    local, url = dataset
    data = (local / "shard-00001.tar").read_bytes()
    s3.fs.pipe_file(f"{url}/shard-00001.tar", data[: len(data) * 3 // 5])  # the index says more
    # the index still lists it, so the loader starts; the stream checks its size before reading
    cfg = data_cfg(url, sampling="epoch", batch_size=1, shuffle_buffer=1, shuffle_initial=1)
    loader = build_loader(cfg, seed=0)
    batches = take(loader, 20)  # two passes over the 10 good rings
    assert {k[:6] for b, p in batches for k in b.keys} == {"obj000", "obj002"}
    [(record, reason)] = [nb for b, p in batches for nb in p.new_bad]
    assert record == f"{url}/shard-00001.tar", record
    assert f"{len(data) * 3 // 5} bytes, {INDEX_FILE} says {len(data)}" in reason, reason
    assert loader.state.bad_samples == 1 and loader.state.bad_events[0] >= 5  # its 5 rings


def test_a_damaged_s3_shard_without_an_index_keeps_its_good_samples(tmp_path, s3):
    """No index to check against: the tar breaks while it streams; the rings before the damage
    are used, the shard is one bad record, named by its URL."""
    from contract.shard_writer import write_shard

    good = [synthetic_ring(f"g{i}", num_views=8, resolution=RES, seed=i) for i in range(4)]
    damaged = [synthetic_ring(f"d{i}", num_views=8, resolution=RES, seed=10 + i) for i in range(4)]
    write_shard(tmp_path / "shard-00000.tar", good)
    write_shard(tmp_path / "shard-00001.tar", damaged)
    data = (tmp_path / "shard-00001.tar").read_bytes()
    url = f"{s3.url}/loose"
    s3.fs.put_file(str(tmp_path / "shard-00000.tar"), f"{url}/shard-00000.tar")
    s3.fs.pipe_file(f"{url}/shard-00001.tar", data[: len(data) * 3 // 5])  # cut mid-sample
    shards = f"{url}/shard-00000.tar::{url}/shard-00001.tar"
    cfg = data_cfg(shards, sampling="epoch", batch_size=1, shuffle_buffer=1, shuffle_initial=1)
    loader = build_loader(cfg, seed=0)
    assert not loader.shards.entries
    batches = take(loader, 12)
    keys = {k for b, p in batches for k in b.keys}
    assert {f"g{i}_r0" for i in range(4)} <= keys and "d0_r0" in keys and "d3_r0" not in keys
    [(record, reason)] = [nb for b, p in batches for nb in p.new_bad]
    assert record == f"{url}/shard-00001.tar" and reason, (record, reason)
    assert loader.state.bad_samples == 1

    s3.fs.rm(f"{url}/shard-00000.tar")  # gone after the run started: the system's reason
    missing = build_loader(data_cfg(f"{url}/shard-00000.tar", bad_data_min_records=5), seed=0)
    with pytest.raises(BadDataError, match=r"data.max_bad_fraction") as err:
        next(missing)
    assert f"{url}/shard-00000.tar: FileNotFoundError" in str(err.value)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_an_s3_dataset_is_exact(dataset, num_workers):
    _, url = dataset
    cfg = data_cfg(url, num_workers=num_workers, batch_size=3, prompt_dropout=0.5)
    reference = take(build_loader(cfg, seed=11), 9)
    first = build_loader(cfg, seed=11)
    take(first, 5)  # odd: with 2 workers the next batch comes from the second
    state = first.state_dict()
    resumed = build_loader(cfg, seed=11)
    resumed.load_state_dict(state)
    assert_same_batches(take(resumed, 4), reference[5:])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_transient_s3_errors_are_retried_not_bad_records(dataset, s3_faults, num_workers):
    """A shard whose first reads fail with 500s gives the batches it gives without failures;
    the stream counts the retries (in the DataLoader worker that met them, with 2 workers)."""
    local, url = dataset
    opts = dict(num_workers=num_workers, sampling="epoch", batch_size=3, prompt_dropout=0.5)
    shard = f"{url}/shard-00001.tar".removeprefix("s3://")
    s3_faults.fail(shard, TEST_STORE_ATTEMPTS - 1, method="GET")  # each request gets through
    loader = build_loader(data_cfg(url, **opts), seed=7)
    got = take(loader, 10)  # two epochs
    assert_same_batches(got, take(build_loader(data_cfg(str(local), **opts), seed=7), 10))
    assert not any(p.new_bad for _, p in got) and loader.state.bad_samples == 0
    assert s3_faults.requests(shard, "GET") > TEST_STORE_ATTEMPTS - 1  # the faults were met
    retries = sum(p.new_store_retries for _, p in got)
    assert retries >= TEST_STORE_ATTEMPTS - 1 and sum(loader.state.store_retries) == retries

    state = loader.state_dict()  # the count travels in the checkpoint; older ones load
    resumed = build_loader(data_cfg(url, **opts), seed=7)
    resumed.load_state_dict(state)
    assert resumed.state.store_retries == loader.state.store_retries
    del state["store_retries"]
    resumed = build_loader(data_cfg(url, **opts), seed=7)
    resumed.load_state_dict(state)
    assert resumed.state.store_retries == [0] * max(1, num_workers)


def test_an_s3_shard_that_keeps_failing_is_one_bad_record_naming_its_url(dataset, s3_faults):
    """Only an error that survives its retries makes the shard a bad record."""
    _, url = dataset
    shard = f"{url}/shard-00001.tar"
    s3_faults.fail(shard.removeprefix("s3://"), times=None, method="GET")  # its HEAD answers
    cfg = data_cfg(url, sampling="epoch", batch_size=1, shuffle_buffer=1, shuffle_initial=1)
    loader = build_loader(cfg, seed=0)
    batches = take(loader, 20)  # two passes over the 10 good rings
    assert {k[:6] for b, p in batches for k in b.keys} == {"obj000", "obj002"}
    [(record, reason)] = [nb for b, p in batches for nb in p.new_bad]
    assert record == shard and "injected by the test (InternalError)" in reason, reason
    assert loader.state.bad_samples == 1 and loader.state.bad_events[0] >= 5  # its 5 rings
    # each visit of the shard retried its request TEST_STORE_ATTEMPTS - 1 times, no more
    visits = loader.state.bad_events[0] // 5
    assert sum(loader.state.store_retries) == visits * (TEST_STORE_ATTEMPTS - 1)
    assert s3_faults.requests(shard.removeprefix("s3://"), "GET") == visits * TEST_STORE_ATTEMPTS


def test_the_store_retries_are_logged_summed_over_ranks():
    """log_metrics logs data/store_retries: this rank's streams' count, summed over the ranks."""
    from types import SimpleNamespace

    from training.data import DataState
    from training.train import log_metrics

    class Engine:  # two ranks, the other having met 5 retries
        dist = SimpleNamespace(world_size=2)

        def mean_over_ranks(self, value: float) -> float:
            return (value + 5) / 2

        def distinct_over_ranks(self, items: set[str]) -> int:
            return len(items)

        def peak_memory_gib(self) -> float:
            return 0.0

    logged: list[dict[str, float]] = []
    tracker = SimpleNamespace(advance=lambda: None, log=lambda m, step: logged.append(m))
    state = DataState(rank=0, world_size=2, num_workers=2, store_retries=[1, 2])
    cfg = SimpleNamespace(
        trainer=SimpleNamespace(log_every=1, max_steps=10),
        data=SimpleNamespace(batch_size=1),
        engine=SimpleNamespace(grad_accum=1),
    )
    loader = SimpleNamespace(state=state)
    log_metrics(tracker, Engine(), loader, {"train/loss": 1.0}, 1, cfg)
    assert logged[0]["data/store_retries"] == 8.0
