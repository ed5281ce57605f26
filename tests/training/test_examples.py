"""One ring -> one training example (SPEC 3, 5): canonical targets, a front-half prompt, one grey
background per example, dropout rates."""

from __future__ import annotations

import numpy as np
import pytest

from contract.cameras import network_camera, prompt_candidates, ring_azimuths, ring_c2w
from contract.schema import RingMeta, SchemaError
from contract.synthetic_shards import synthetic_ring
from tests.training.helpers import RES, data_cfg
from training.examples import make_example, target_views


def view_index(image: np.ndarray, num_views: int) -> int:
    """The synthetic rings encode view i as red = 4 i inside the disc (contract.synthetic_shards)."""
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
        # composited as the authors do (training.prompt_image): 255 x grey, truncated to uint8
        assert (corner[0, 0] + 1) / 2 == pytest.approx(int(255 * ex.grey) / 255, abs=1e-6)
        assert (ex.prompt_rgb[0, 0] == int(255 * ex.grey)).all()
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
