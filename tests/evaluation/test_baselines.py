"""The baselines a model must beat and the learning check built on them."""

from __future__ import annotations

import numpy as np
import pytest

from contract.dataset_index import write_index_from_manifests
from contract.schema import encode_png, encode_sample
from contract.shard_writer import write_shard
from evaluation.baselines import baseline_scores, learning_check, mean_training_view
from tests.evaluation.helpers import ring_meta, write_ring_shard


def test_copy_baseline_scores_the_prompt_at_every_novel_view() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    same = baseline_scores(gt[0], gt, None)
    assert same["psnr_copy"][0] == float("inf") and np.isfinite(same["psnr_copy"][1:]).all()
    assert "psnr_mean_view" not in same
    with_mean = baseline_scores(gt[0], gt, gt.mean(0).round().astype(np.uint8))
    assert len(with_mean["psnr_mean_view"]) == 3


def test_mean_training_view_is_the_pixel_mean_on_any_grey(tmp_path) -> None:
    """On each grey, the mean view equals the mean of the views composited on that grey (as
    the prompt and its true views are), up to rounding."""
    from PIL import Image

    from contract.shard_reader import read_rings
    from training.prompt_image import composite_on_grey

    shard = write_ring_shard(tmp_path / "shards" / "shard-00000.tar", ["a", "b"])
    mean = mean_training_view([str(shard.parent)], 16)
    assert mean is not None
    views = [v for rec in read_rings([str(shard.parent)]) for v in rec.images]
    for level in (0.0, 0.3, 1.0):
        on = mean.on(level)
        assert on.shape == (16, 16, 3) and on.dtype == np.uint8
        expected = np.mean(
            [np.asarray(Image.fromarray(composite_on_grey(v, level)).resize((16, 16), Image.BOX))
             for v in views], axis=0,
        )  # fmt: skip
        assert np.abs(on.astype(float) - expected).max() <= 1.0
    assert not np.array_equal(mean.on(0.0), mean.on(1.0))  # the background shows
    assert mean_training_view([], 16) is None


def test_mean_training_view_is_the_mean_of_known_views(tmp_path) -> None:
    """Two 8-view rings of uniform views: ring "a" opaque, view i the colour (30 i, 100, 0); ring
    "b" transparent over a magenta that must not show. Over the 16 views, on black: R = 30 (0 +
    ... + 7) / 16 = 52.5, G = 8 x 100 / 16 = 50, B = 0; on white ring "b" is white: R = (840 +
    8 x 255) / 16 = 180, G = (800 + 2040) / 16 = 177.5, B = 2040 / 16 = 127.5. The first view,
    or zeros, or one ring alone would give other numbers. Uniform views resize to themselves,
    so any size gives the same means."""
    res = 16
    opaque = np.zeros((8, res, res, 4), dtype=np.uint8)
    for i in range(8):
        opaque[i] = (30 * i, 100, 0, 255)
    transparent = np.zeros((8, res, res, 4), dtype=np.uint8)
    transparent[...] = (255, 0, 255, 0)
    shard = tmp_path / "shards" / "shard-00000.tar"
    write_shard(
        shard,
        [
            encode_sample(ring_meta(uid, res=res), [encode_png(v) for v in views])
            for uid, views in (("a", opaque), ("b", transparent))
        ],
    )
    write_index_from_manifests(shard.parent)
    for size in (res, 4):
        mean = mean_training_view([str(shard.parent)], size)
        assert mean is not None
        np.testing.assert_array_equal(mean.on_black, np.full((size, size, 3), (52.5, 50.0, 0.0)))
        np.testing.assert_array_equal(
            mean.on_white, np.full((size, size, 3), (180.0, 177.5, 127.5))
        )
        # halfway: (116.25, 113.75, 63.75), rounded
        np.testing.assert_array_equal(mean.on(0.5), np.full((size, size, 3), (116, 114, 64)))


def test_learning_check_margin_is_over_the_better_baseline() -> None:
    scores = [
        {"psnr": [20.0, 22.0], "psnr_copy": [15.0, 15.0], "psnr_mean_view": [17.0, 19.0]},
        {"psnr": [24.0], "psnr_copy": [16.0], "psnr_mean_view": [18.0]},
        {"qis": [1.0]},  # no ground truth: not counted
    ]
    check = learning_check(scores, bar=3.0)
    assert check is not None and check.n_prompts == 2
    assert check.model_psnr == pytest.approx(22.0) and check.mean_view_psnr == pytest.approx(18.0)
    assert check.margin == pytest.approx(4.0) and check.passed
    assert not learning_check(scores, bar=5.0).passed
    assert "PASS" in check.line() and learning_check([{"qis": [1.0]}], 3.0) is None
