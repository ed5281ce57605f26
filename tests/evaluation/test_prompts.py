"""Prompt preprocessing (authors' tips) and held-out rings with ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluation import make_default_prompts
from evaluation.evaluate import DEFAULT_PROMPTS
from evaluation.prompts import (
    PromptConfig,
    composite,
    load_heldout_rings,
    load_prompt_folder,
    preprocess,
    recenter,
    target_view_indices,
)
from tests.evaluation.conftest import ring_views, write_ring_shard


def _rgba_object(size=100, box=(10, 30, 40, 50), colour=(200, 20, 20)) -> np.ndarray:
    """A transparent image with an opaque rectangle at box = (top, left, height, width)."""
    img = np.zeros((size, size, 4), dtype=np.uint8)
    top, left, h, w = box
    img[top : top + h, left : left + w] = [*colour, 255]
    img[:, :, :3][img[:, :, 3] == 0] = (0, 255, 0)  # garbage colour under alpha 0
    return img


def test_recenter_fills_the_fraction_and_centres() -> None:
    out = recenter(_rgba_object(), size=64, fill_fraction=0.8)
    ys, xs = np.nonzero(out[..., 3] > 127)
    assert max(ys.ptp() + 1, xs.ptp() + 1) == pytest.approx(0.8 * 64, abs=1.5)
    assert (ys.min() + ys.max()) / 2 == pytest.approx(31.5, abs=1.0)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(31.5, abs=1.0)


def test_background_removed_without_colour_bleed() -> None:
    cfg = PromptConfig(size=64, background=1.0, fill_fraction=0.8)
    out = preprocess(Image.fromarray(_rgba_object(), "RGBA"), cfg)
    assert out.shape == (64, 64, 3)
    assert (out[0, 0] == 255).all() and (out[32, 32] == (200, 20, 20)).all()
    green = (out[..., 1] > 150) & (out[..., 0] < 100)  # no halo of the colour under alpha 0
    assert not green.any()
    grey = composite(_rgba_object(), 0.5)
    assert (grey[0, 0] == 128).all()


def test_rgb_prompts_are_cropped_square_and_kept() -> None:
    rgb = np.zeros((40, 80, 3), dtype=np.uint8)
    rgb[:, 20:60] = 255
    out = preprocess(Image.fromarray(rgb, "RGB"), PromptConfig(size=32))
    assert out.shape == (32, 32, 3) and (out > 250).all()


def test_folder_prompts_with_captions_and_ids(tmp_path) -> None:
    Image.fromarray(_rgba_object(), "RGBA").save(tmp_path / "b_chair.png")
    (tmp_path / "b_chair.txt").write_text("a red chair\n")
    (tmp_path / "b_chair.json").write_text('{"uid": "chair01", "asset_sha256": "ab"}')
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a_plain.jpg")
    prompts = load_prompt_folder(tmp_path, PromptConfig(size=32))
    assert [p.name for p in prompts] == ["a_plain", "b_chair"]
    assert prompts[0].text is None and prompts[1].text == "a red chair"
    assert prompts[1].uid == "chair01" and prompts[1].asset_sha256 == "ab"


def test_shipped_default_prompts_are_what_the_script_draws() -> None:
    prompts = load_prompt_folder(DEFAULT_PROMPTS, PromptConfig())
    assert len(prompts) == len(make_default_prompts.PROMPTS) and all(p.text for p in prompts)
    for name in make_default_prompts.PROMPTS:
        with Image.open(DEFAULT_PROMPTS / f"{name}.png") as img:
            np.testing.assert_array_equal(
                np.asarray(img), np.asarray(make_default_prompts.draw(name))
            )
    total = sum(p.stat().st_size for p in DEFAULT_PROMPTS.iterdir())
    assert total < 200_000


def test_target_views_of_a_ring() -> None:
    assert target_view_indices(32, [0, 90, 180, 270]) == [0, 8, 16, 24]
    assert target_view_indices(8, [0, 90, 180, 270]) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="no view at azimuth"):
        target_view_indices(6, [0, 90, 180, 270])


def test_heldout_rings_give_prompt_ground_truth_and_cameras(tmp_path) -> None:
    shard = write_ring_shard(tmp_path / "shards" / "shard-00000.tar", ["duck", "fox"])
    cfg = PromptConfig(size=32, background=0.5)
    prompts = load_heldout_rings(shard.parent, cfg, [0, 90, 180, 270])
    assert [p.name for p in prompts] == ["duck_r0", "fox_r0"]
    duck = prompts[0]
    assert duck.gt_views.shape == (4, 32, 32, 3)
    views = ring_views(8, seed=0)
    for k, index in enumerate([0, 2, 4, 6]):  # azimuth 0/90/180/270 of an 8-view ring
        np.testing.assert_array_equal(duck.gt_views[k], composite(views[index], 0.5))
    np.testing.assert_array_equal(duck.image, duck.gt_views[0])  # front view, same framing
    assert (duck.elevation_deg, duck.fov_deg) == (12.0, 40.0)
    assert duck.uid == "duck" and duck.text == "a toy duck"
    assert len(load_heldout_rings(shard.parent, cfg, [0, 90, 180, 270], limit=1)) == 1
