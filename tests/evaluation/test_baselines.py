"""The baselines a model must beat and the learning check built on them."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.baselines import baseline_scores, learning_check, mean_training_view
from tests.evaluation.helpers import write_ring_shard


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
