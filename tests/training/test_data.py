"""The training stream: canonical targets, front-half prompt, grey background, dropout rates,
undecodable samples counted (never replaced), and an exactly restorable position."""

from __future__ import annotations

import io
import logging
import tarfile

import numpy as np
import pytest

from data_pipeline.cameras import network_camera, ring_azimuths, ring_c2w
from data_pipeline.schema import RingMeta, SchemaError
from training.bench import synthetic_ring, write_synthetic_shards
from training.config import DataConfig
from training.data import (
    Loader,
    build_loader,
    make_example,
    prompt_candidates,
    target_views,
)

RES = 16


def data_cfg(shards: str, **overrides) -> DataConfig:
    values = dict(
        shards=shards,
        batch_size=2,
        num_workers=0,
        image_size=RES,
        shuffle_buffer=8,
        shuffle_initial=2,
        prompt_dropout=0.0,
        text_dropout=0.0,
    )
    values.update(overrides)
    return DataConfig(**values)


def view_index(image: np.ndarray, num_views: int) -> int:
    """The synthetic rings encode view i as red = 4 i inside the disc (training.bench)."""
    red = (image[0] + 1) / 2 * 255  # (H, W) of a (3, H, W) image in [-1, 1]
    centre = red[RES // 2, :]  # the disc crosses the middle row
    values = [v for v in np.round(centre).astype(int) if v % 4 == 0 and v // 4 < num_views]
    counts = np.bincount(values)
    return int(np.argmax(counts)) // 4


@pytest.fixture
def sample32():
    return synthetic_ring("objA", num_views=32, resolution=RES, seed=3)


def test_target_and_prompt_indices():
    assert target_views(32) == [0, 8, 16, 24]
    assert target_views(8) == [0, 2, 4, 6]
    with pytest.raises(SchemaError, match="multiple of 4"):
        target_views(30)
    cands = prompt_candidates(ring_azimuths(32))
    assert len(cands) == 17  # SPEC 3: azimuth in [-90, 90], both ends, symmetric about 0
    assert cands == [*range(0, 9), *range(24, 32)]
    assert prompt_candidates(ring_azimuths(8)) == [0, 1, 2, 6, 7]


def test_example_targets_are_canonical_views(sample32):
    ex = make_example(sample32, np.random.default_rng(0), data_cfg("unused"))
    assert ex.targets.shape == (4, 3, RES, RES) and ex.prompt.shape == (3, RES, RES)
    assert [view_index(t, 32) for t in ex.targets] == [0, 8, 16, 24]
    meta = RingMeta.from_json(sample32["meta.json"])
    expected = network_camera(
        ring_c2w(np.array([0.0, 90.0, 180.0, 270.0]), meta.elevation_deg, meta.distance)
    )
    np.testing.assert_allclose(ex.cameras, expected, atol=1e-5)
    assert ex.caption == meta.caption + ", 3d asset"


def test_prompt_comes_from_front_half_and_covers_it(sample32):
    cfg = data_cfg("unused")
    seen = set()
    for seed in range(300):
        ex = make_example(sample32, np.random.default_rng(seed), cfg)
        assert view_index(ex.prompt, 32) == ex.prompt_view
        seen.add(ex.prompt_view)
    assert seen == set(prompt_candidates(ring_azimuths(32)))


def test_background_is_one_grey_level_per_sample(sample32):
    cfg = data_cfg("unused")
    greys = []
    for seed in range(20):
        ex = make_example(sample32, np.random.default_rng(seed), cfg)
        frames = np.concatenate([ex.targets, ex.prompt[None]])  # (5, 3, H, W)
        corner = frames[:, :, 0, 0]  # alpha is 0 in the corners of the synthetic views
        assert np.allclose(corner, corner[0, 0], atol=1e-6), "R=G=B and the same grey in all frames"
        assert np.isclose((corner[0, 0] + 1) / 2, ex.grey, atol=1e-6)
        greys.append(ex.grey)
    assert np.std(greys) > 0.1, "the grey level is random per sample"


def test_dropout_rates_match_config(sample32):
    cfg = data_cfg("unused", prompt_dropout=0.3, text_dropout=0.2)
    n = 1500
    prompt_drops = text_drops = 0
    for seed in range(n):
        ex = make_example(sample32, np.random.default_rng(seed), cfg)
        prompt_drops += ex.prompt_dropped
        text_drops += ex.text_dropped
        # the image stays the ring's view: the model replaces a dropped prompt by
        # training.diffusion.unconditional_features, the sampler's CFG input
        assert view_index(ex.prompt, 32) == ex.prompt_view
        if ex.prompt_dropped:  # the text is dropped together with the image (SPEC 5)
            assert ex.text_dropped
        if ex.text_dropped:
            assert ex.caption == ""
    # text dropout is independent of prompt dropout: 1 - (1 - 0.3)(1 - 0.2) = 0.44 in all
    for count, p in ((prompt_drops, 0.3), (text_drops, 0.44)):
        sigma = np.sqrt(n * p * (1 - p))
        assert abs(count - n * p) < 4 * sigma, (count, n * p)


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
        batches = [next(loader) for _ in range(3)]  # exactly one pass over the 8 samples
    keys = [k for b in batches for k in b.keys]
    assert sorted(keys) == sorted(s["__key__"] for s in good), "each good ring once, nothing else"
    assert loader.state.bad_samples == 2
    assert batches[-1].bad_samples == 2
    assert sum("undecodable sample bad" in r.getMessage() for r in caplog.records) == 2


def _ring_with_views(uid: str, num_views: int) -> dict:
    return synthetic_ring(uid, num_views=num_views, resolution=RES, seed=1)


def test_ring_with_view_count_not_multiple_of_four_is_counted(tmp_path):
    from data_pipeline.shards import write_shard

    write_shard(
        tmp_path / "shard-00000.tar", [_ring_with_views("ok", 8), _ring_with_views("odd", 6)]
    )
    cfg = data_cfg(
        str(tmp_path), sampling="epoch", batch_size=1, shuffle_buffer=1, shuffle_initial=1
    )
    loader = build_loader(cfg, seed=0)
    batches = [next(loader), next(loader)]
    assert [b.keys for b in batches] == [["ok_r0"], ["ok_r0"]]
    # every raw sample read that did not become an example was counted (whatever the tar order)
    assert loader.state.bad_samples == loader.state.consumed[0] - 2 >= 1


def _take(loader: Loader, n: int):
    return [next(loader) for _ in range(n)]


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
        np.testing.assert_array_equal(got.prompt.numpy(), expected.prompt.numpy())


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
