"""The training stream: undecodable samples and unreadable shards counted (never replaced), the
bad-data budget, the dataset index checks, and an exactly restorable position. The example rule
itself is tests/training/test_examples.py's."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest

from contract.synthetic_shards import synthetic_ring, write_synthetic_shards
from tests.training.helpers import RES, data_cfg
from training.config import DataConfig
from training.data import Loader, build_loader


def test_views_per_ring_not_multiple_of_four_is_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        DataConfig(shards="x", views_per_ring=30)


def _corrupt_shard(path, good: list[dict], bad_keys: list[str]) -> None:
    """A tar with good rings and rings whose first view is not a PNG."""
    with tarfile.open(path, "w") as tar:
        samples = list(good)
        for i, key in enumerate(bad_keys):  # interleaved with the good ones
            broken = dict(synthetic_ring(key, num_views=8, resolution=RES, seed=7))
            broken["view000.png"] = b"not a png"
            samples.insert(2 * i + 1, broken)
        for sample in samples:
            key = sample["__key__"]
            for name, data in sample.items():
                if name.startswith("__"):
                    continue
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_undecodable_samples_are_counted_not_replaced(tmp_path, caplog):
    good = [synthetic_ring(f"good{i}", num_views=8, resolution=RES, seed=i) for i in range(6)]
    shard = tmp_path / "shard-00000.tar"
    _corrupt_shard(shard, good, ["bad0", "bad1"])
    cfg = data_cfg(str(shard), sampling="epoch", shuffle_buffer=1, shuffle_initial=1)
    loader = build_loader(cfg, seed=0)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        batches = [
            loader.next_with_progress() for _ in range(3)
        ]  # exactly one pass over the 8 samples
    keys = [k for b, p in batches for k in b.keys]
    assert sorted(keys) == sorted(s["__key__"] for s in good), "each good ring once, nothing else"
    assert loader.state.bad_samples == 2
    assert sum(len(p.new_bad) for _, p in batches) == 2
    assert sum(" sample bad" in r.getMessage() for r in caplog.records) == 2
    # a second pass meets the same two again: still two distinct, logged once each
    with caplog.at_level(logging.WARNING, logger="training.data"):
        more = [next(loader) for _ in range(3)]
    assert sorted(k for b in more for k in b.keys) == sorted(keys)
    assert loader.state.bad_samples == 2 and loader.state.bad_events == [4]
    assert sum(" sample bad" in r.getMessage() for r in caplog.records) == 2


def test_truncated_shard_is_one_bad_record_and_its_good_samples_are_kept(tmp_path):
    from contract.shard_writer import write_shard

    good = [synthetic_ring(f"g{i}", num_views=8, resolution=RES, seed=i) for i in range(4)]
    damaged = [synthetic_ring(f"d{i}", num_views=8, resolution=RES, seed=10 + i) for i in range(4)]
    write_shard(tmp_path / "shard-00000.tar", good)
    path = tmp_path / "shard-00001.tar"
    write_shard(path, damaged)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size * 3 // 5)  # cut inside a later sample: the first ones are whole
    shards = f"{tmp_path / 'shard-00000.tar'}::{path}"
    cfg = data_cfg(shards, sampling="epoch", batch_size=1, shuffle_buffer=1, shuffle_initial=1)
    loader = build_loader(cfg, seed=0)
    batches = [loader.next_with_progress() for _ in range(12)]  # several passes over both shards
    keys = {k for b, p in batches for k in b.keys}
    assert {f"g{i}_r0" for i in range(4)} <= keys
    assert "d0_r0" in keys, "the samples before the damage are used"
    assert "d3_r0" not in keys, "nothing past the damage"
    assert loader.state.bad_samples == 1, "one damaged shard, counted once over every pass"
    assert loader.state.bad_events[0] >= 2
    [(record, reason)] = [nb for b, p in batches for nb in p.new_bad]
    assert record == str(path) and reason, (record, reason)


def test_a_stream_where_nothing_decodes_stops_at_once_naming_the_files(tmp_path):
    from training.data import BadDataError

    path = tmp_path / "shard-00000.tar"
    path.write_bytes(b"this is no tar file" * 100)
    cfg = data_cfg(str(path), bad_data_min_records=50)
    loader = build_loader(cfg, seed=0)
    with pytest.raises(BadDataError, match=r"data.max_bad_fraction") as err:
        next(loader)
    assert str(path) in str(err.value) and "50 of the 50 records" in str(err.value)


def test_bad_fraction_over_the_budget_stops_the_run(tmp_path):
    from training.data import BadDataError

    good = [synthetic_ring(f"good{i}", num_views=8, resolution=RES, seed=i) for i in range(6)]
    shard = tmp_path / "shard-00000.tar"
    _corrupt_shard(shard, good, ["bad0", "bad1"])  # 2 of every 8 records bad: 25 %
    # unshuffled, so the running share after 8 or more records is known: at most 4 of 12
    unshuffled = dict(sampling="epoch", shuffle_buffer=1, shuffle_initial=1)
    within = data_cfg(str(shard), bad_data_min_records=8, max_bad_fraction=0.4, **unshuffled)
    loader = build_loader(within, seed=0)
    assert len([next(loader) for _ in range(12)]) == 12  # it goes on
    over = data_cfg(str(shard), bad_data_min_records=8, max_bad_fraction=0.2, **unshuffled)
    loader = build_loader(over, seed=0)
    with pytest.raises(BadDataError, match="sample bad"):
        for _ in range(12):
            next(loader)


def _ring_with_views(uid: str, num_views: int) -> dict:
    return synthetic_ring(uid, num_views=num_views, resolution=RES, seed=1)


def test_ring_with_view_count_not_multiple_of_four_is_counted(tmp_path):
    from contract.dataset_index import write_index_from_manifests
    from contract.shard_writer import write_shard

    write_shard(
        tmp_path / "shard-00000.tar", [_ring_with_views("ok", 8), _ring_with_views("odd", 6)]
    )
    write_index_from_manifests(tmp_path)
    cfg = data_cfg(
        str(tmp_path), sampling="epoch", batch_size=1, shuffle_buffer=1, shuffle_initial=1
    )
    loader = build_loader(cfg, seed=0)
    batches = [next(loader), next(loader)]
    assert [b.keys for b in batches] == [["ok_r0"], ["ok_r0"]]
    # every raw sample read that did not become an example was met as bad (whatever the tar
    # order), and counted once: it is one ring
    assert loader.state.bad_events[0] == loader.state.consumed[0] - 2 >= 1
    assert loader.state.bad_samples == 1


def _take(loader: Loader, n: int):
    return [next(loader) for _ in range(n)]


def _take_with_progress(loader: Loader, n: int):
    return [loader.next_with_progress() for _ in range(n)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_position_restores_exactly(tmp_path, num_workers):
    write_synthetic_shards(tmp_path, num_shards=3, rings_per_shard=5, num_views=8, resolution=RES)
    cfg = data_cfg(
        str(tmp_path), num_workers=num_workers, prompt_dropout=0.5, text_dropout=0.5, batch_size=3
    )
    reference = _take(build_loader(cfg, seed=11), 9)

    first = build_loader(cfg, seed=11)
    _take(first, 5)  # odd: the next batch comes from the second worker
    state = first.state_dict()
    resumed = build_loader(cfg, seed=11)
    resumed.load_state_dict(state)
    for expected, got in zip(reference[5:], _take(resumed, 4), strict=True):
        assert got.keys == expected.keys
        assert got.captions == expected.captions
        np.testing.assert_array_equal(got.targets.numpy(), expected.targets.numpy())
        np.testing.assert_array_equal(got.prompt.vae.numpy(), expected.prompt.vae.numpy())
        np.testing.assert_array_equal(np.stack(got.prompt.rgb), np.stack(expected.prompt.rgb))


def test_restore_refuses_a_different_stream_layout(tmp_path):
    write_synthetic_shards(tmp_path, num_shards=1, rings_per_shard=4, num_views=8, resolution=RES)
    state = build_loader(data_cfg(str(tmp_path), num_workers=2), seed=0).state_dict()
    other = build_loader(data_cfg(str(tmp_path), num_workers=0), seed=0)
    with pytest.raises(ValueError, match="same layout"):
        other.load_state_dict(state)


def test_ranks_read_different_streams(tmp_path):
    write_synthetic_shards(tmp_path, num_shards=4, rings_per_shard=4, num_views=8, resolution=RES)
    cfg = data_cfg(str(tmp_path))
    keys = [
        [k for b in _take(build_loader(cfg, seed=0, rank=r, world_size=2), 4) for k in b.keys]
        for r in range(2)
    ]
    assert keys[0] != keys[1]


def test_epoch_sampling_needs_a_shard_per_stream(tmp_path):
    write_synthetic_shards(tmp_path, num_shards=1, rings_per_shard=2, num_views=8, resolution=RES)
    loader = build_loader(data_cfg(str(tmp_path), sampling="epoch"), seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="resampled"):
        next(loader)


def test_a_folder_without_a_complete_index_is_refused_unless_allowed(tmp_path):
    from contract.dataset_index import INDEX_FILE
    from contract.schema import IncompleteDatasetError

    write_synthetic_shards(tmp_path, num_shards=2, rings_per_shard=3, num_views=8, resolution=RES)
    (tmp_path / INDEX_FILE).unlink()  # as a job killed while rewriting the shards leaves it
    with pytest.raises(IncompleteDatasetError, match=r"data.allow_incomplete=true") as err:
        build_loader(data_cfg(str(tmp_path)), seed=0)
    assert str(tmp_path) in str(err.value)
    loader = build_loader(data_cfg(str(tmp_path), allow_incomplete=True), seed=0)
    assert len(next(loader)) == 2


def test_a_shard_that_differs_from_its_index_is_a_bad_record(tmp_path):
    paths = write_synthetic_shards(
        tmp_path, num_shards=2, rings_per_shard=3, num_views=8, resolution=RES
    )
    with open(paths[1], "ab") as f:
        f.write(b"\0" * 512)  # still a readable tar, but not the file the index lists
    cfg = data_cfg(str(tmp_path), sampling="epoch", batch_size=1)
    loader = build_loader(cfg, seed=0)
    batches = [loader.next_with_progress() for _ in range(9)]  # three passes
    assert all(k.startswith("obj000") for b, p in batches for k in b.keys), "shard 1 was not read"
    [(record, reason)] = [nb for b, p in batches for nb in p.new_bad]
    assert record == paths[1] and "bytes" in reason and "index.json" in reason, reason
    assert loader.state.bad_samples == 1

    # the sha256 check (off by default) catches a same-size change
    clean = tmp_path / "clean"
    paths = write_synthetic_shards(
        clean, num_shards=2, rings_per_shard=3, num_views=8, resolution=RES
    )
    shard = Path(paths[1])
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # in the tar's zero padding: the tar still reads, its hash differs
    shard.write_bytes(bytes(data))
    plain = build_loader(data_cfg(str(clean), sampling="epoch", batch_size=1), seed=0)
    assert {k[:6] for _ in range(6) for k in next(plain).keys} == {"obj000", "obj001"}
    strict = build_loader(
        data_cfg(str(clean), sampling="epoch", batch_size=1, verify_sha256=True), seed=0
    )
    batches = [strict.next_with_progress() for _ in range(6)]
    assert {k[:6] for b, p in batches for k in b.keys} == {"obj000"}
    [(record, reason)] = [nb for b, p in batches for nb in p.new_bad]
    assert record == paths[1] and "sha256" in reason, reason


def test_lost_shards_count_as_the_rings_they_held(tmp_path):
    """One good shard, three whose files the index describes but that are now empty: by records
    that would be 3 bad of 5 read; weighted by the rings the index lists, 12 of 16."""
    from training.data import BadDataError

    paths = write_synthetic_shards(
        tmp_path, num_shards=4, rings_per_shard=4, num_views=8, resolution=RES
    )
    for path in paths[1:]:
        Path(path).write_bytes(b"")
    cfg = data_cfg(str(tmp_path), batch_size=1, bad_data_min_records=16, max_bad_fraction=0.7)
    loader = build_loader(cfg, seed=0)
    with pytest.raises(BadDataError, match="a shard that failed counts as the rings") as err:
        for _ in range(100):
            next(loader)
    assert all(p in str(err.value) for p in paths[1:])


def test_a_missing_shard_is_reported_with_the_system_reason(tmp_path):
    paths = write_synthetic_shards(
        tmp_path, num_shards=2, rings_per_shard=3, num_views=8, resolution=RES
    )
    cfg = data_cfg(f"{paths[0]}::{paths[1]}", sampling="epoch", batch_size=1)
    loader = build_loader(cfg, seed=0)
    Path(paths[1]).unlink()  # gone after the run started (a mount that went away)
    batches = [loader.next_with_progress() for _ in range(4)]
    [(record, reason)] = [nb for b, p in batches for nb in p.new_bad]
    assert record == paths[1] and "No such file" in reason, reason


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact_with_bad_records_in_the_stream(tmp_path, num_workers, caplog):
    good = [synthetic_ring(f"good{i}", num_views=8, resolution=RES, seed=i) for i in range(6)]
    _corrupt_shard(tmp_path / "shard-00000.tar", good, ["bad0", "bad1"])
    from contract.shard_writer import write_shard

    damaged = tmp_path / "shard-00001.tar"
    write_shard(
        damaged,
        [synthetic_ring(f"d{i}", num_views=8, resolution=RES, seed=20 + i) for i in range(4)],
    )
    with open(damaged, "r+b") as f:
        f.truncate(damaged.stat().st_size // 2)
    shards = f"{tmp_path / 'shard-00000.tar'}::{damaged}"
    cfg = data_cfg(shards, num_workers=num_workers, batch_size=2, max_bad_fraction=1.0)
    reference = _take_with_progress(build_loader(cfg, seed=5), 10)

    first = build_loader(cfg, seed=5)
    _take(first, 5)
    state = first.state_dict()
    assert first.state.bad_samples >= 1
    resumed = build_loader(cfg, seed=5)
    resumed.load_state_dict(state)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.data"):
        got = _take_with_progress(resumed, 5)
    already = {i for ids in state["bad_ids"] for i in ids}
    relogged = [r for r in caplog.records if any(i in r.getMessage() for i in already)]
    for (expected, expected_progress), (batch, progress) in zip(reference[5:], got, strict=True):
        assert batch.keys == expected.keys
        np.testing.assert_array_equal(batch.targets.numpy(), expected.targets.numpy())
        assert (progress.bad_events, progress.records) == (
            expected_progress.bad_events,
            expected_progress.records,
        )
    uninterrupted = build_loader(cfg, seed=5)
    _take(uninterrupted, 10)
    assert resumed.state.distinct_bad == uninterrupted.state.distinct_bad
    # (worker processes log where caplog cannot see: num_workers=0 is the case that checks it)
    assert not relogged, "a bad record met before the resume was logged again"


def test_resume_reads_only_the_buffer_and_the_current_shard(tmp_path, monkeypatch):
    """Constant-time resume: after 60 batches (about 24 shards read) the resumed stream opens
    only the shards its shuffle buffer's records came from and the one it was reading."""
    import webdataset as wds  # the readers open every shard through wds.tarfile_samples

    write_synthetic_shards(tmp_path, num_shards=6, rings_per_shard=5, num_views=8, resolution=RES)
    cfg = data_cfg(str(tmp_path), batch_size=2, shuffle_buffer=6, shuffle_initial=3)
    reference = _take(build_loader(cfg, seed=3), 64)
    first = build_loader(cfg, seed=3)
    _take(first, 60)
    state = first.state_dict()
    position = state["positions"][0]
    assert position["shard"] >= 20, position["shard"]  # resampled: 24 or so shards visited

    opened: list[str] = []
    real = wds.tarfile_samples

    def counting(src, *args, **kwargs):
        src = list(src)
        opened.extend(s["url"] for s in src)
        return real(src, *args, **kwargs)

    monkeypatch.setattr(wds, "tarfile_samples", counting)
    resumed = build_loader(cfg, seed=3)
    resumed.load_state_dict(state)
    got = _take(resumed, 4)
    assert [b.keys for b in got] == [b.keys for b in reference[60:]]
    spanned = {k for k, _ in position["buffer"]} | {position["shard"]}
    # the buffer's shards and the current one, then what the 4 new batches read on
    assert len(opened) <= len(spanned) + 1 + 4, (len(opened), spanned)
    assert len(opened) < position["shard"] / 2


def test_frame_filling_rings_are_left_out_and_counted_once(tmp_path, caplog):
    import json

    from contract.shard_writer import write_shard

    rings = [synthetic_ring(f"r{i}", num_views=8, resolution=RES, seed=i) for i in range(4)]
    meta = json.loads(rings[2]["meta.json"])
    meta["border_fraction"][3] = 0.54  # the object covers half the border of one view
    rings[2]["meta.json"] = json.dumps(meta).encode()
    write_shard(tmp_path / "shard-00000.tar", rings)
    shard = str(tmp_path / "shard-00000.tar")
    cfg = data_cfg(shard, sampling="epoch", batch_size=1, max_border_fraction=0.5)
    loader = build_loader(cfg, seed=0)
    with caplog.at_level(logging.INFO, logger="training.data"):
        keys = [k for _ in range(9) for k in next(loader).keys]  # three passes
    assert set(keys) == {"r0_r0", "r1_r0", "r3_r0"}
    assert set().union(*loader.state.dropped) == {f"{shard} sample r2_r0"}
    assert loader.state.bad_samples == 0, "a ring left out is not bad data"
    assert sum("border fraction 0.54" in r.getMessage() for r in caplog.records) == 1
    everything = build_loader(data_cfg(shard, sampling="epoch", batch_size=1), seed=0)
    assert "r2_r0" in {k for _ in range(4) for k in next(everything).keys}


def test_no_shuffle_buffer_at_all_reads_in_order(tmp_path):
    write_synthetic_shards(tmp_path, num_shards=1, rings_per_shard=4, num_views=8, resolution=RES)
    cfg = data_cfg(
        str(tmp_path), sampling="epoch", batch_size=1, shuffle_buffer=0, shuffle_initial=0
    )
    loader = build_loader(cfg, seed=0)
    keys = [next(loader).keys[0] for _ in range(4)]
    assert keys == [f"obj000x{i:04d}_r0" for i in range(4)]


def test_resume_refuses_a_shard_that_gives_fewer_records_than_were_read(tmp_path):
    paths = write_synthetic_shards(
        tmp_path, num_shards=1, rings_per_shard=6, num_views=8, resolution=RES
    )
    cfg = data_cfg(paths[0], sampling="epoch", batch_size=1, shuffle_buffer=1, shuffle_initial=1)
    first = build_loader(cfg, seed=0)
    _take(first, 4)
    state = first.state_dict()
    from contract.shard_writer import read_tar_samples, write_shard

    (tmp_path / "index.json").unlink()  # an explicit path needs no index: no size check
    write_shard(paths[0], read_tar_samples(paths[0])[:2])  # the shard now holds 2 rings
    resumed = build_loader(cfg, seed=0)
    resumed.load_state_dict(state)
    with pytest.raises(RuntimeError, match="gave 2 records, the checkpoint had read 4"):
        next(resumed)
