"""One prompt, three ways in: training's prompt frame (training.data + the loss's CLIP input),
the training sample grid (training.pipeline.sample_views) and `make eval` (held-out ring ->
MultiViewSampler) prepare it into identical tensors, through training.prompt_image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.prompts import PromptConfig, load_heldout_rings
from evaluation.sampler import MultiViewSampler, SamplerConfig
from tests.evaluation.helpers import write_ring_shard
from training.diffusion import with_clip_input
from training.examples import to_network
from training.pipeline import ImageDreamPipeline, sample_views
from training.prompt_image import PromptImages, composite_on_grey
from training.sampling_settings import SamplingConfig

GREY = 0.42


def _capture(model) -> list[PromptImages]:
    seen: list[PromptImages] = []
    original = model.encode_image_prompt

    def spy(prompts, latent_noise=None):
        seen.append(prompts)
        return original(prompts, latent_noise)

    model.encode_image_prompt = spy
    return seen


def _assert_same(a: PromptImages, b: PromptImages) -> None:
    np.testing.assert_array_equal(np.stack(a.rgb), np.stack(b.rgb))
    torch.testing.assert_close(a.vae, b.vae, rtol=0, atol=0)
    assert a.clip is not None and b.clip is not None
    torch.testing.assert_close(a.clip, b.clip, rtol=0, atol=0)


def test_training_the_sample_grid_and_eval_prepare_a_prompt_identically(
    tmp_path, tiny_local_pixel
) -> None:
    model = tiny_local_pixel
    shard = write_ring_shard(tmp_path / "shards" / "shard-00000.tar", ["duck"])
    (ring,) = load_heldout_rings(shard.parent, PromptConfig(size=32), [0, 90, 180, 270])
    rgba = ring.image  # the front view, RGBA, at the render's size
    size = int(model.cfg.vae.sample_size)

    # training: the data stream composites and resizes; the loss adds the CLIP input
    rgb, pixels = to_network(rgba[None], GREY, size)
    trained = with_clip_input(
        model, PromptImages(rgb=[rgb[0]], vae=torch.from_numpy(pixels), clip=None)
    )

    pipe = ImageDreamPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    seen = _capture(model)
    try:
        # the sample grid: the training composite, through the pipeline
        sample_views(pipe, [rgb[0]], [""], [0], SamplingConfig(num_inference_steps=1), [5.0])
        # make eval: the RGBA ring view, composited by the pipeline on the same grey
        cfg = SamplerConfig(num_inference_steps=1, use_captions=False)
        MultiViewSampler(pipe, cfg).sample([rgba], [None], background=GREY)
    finally:
        del model.encode_image_prompt
    grid, evaluated = seen
    _assert_same(grid, trained)
    _assert_same(evaluated, trained)
    # and the comparison can fail: another grey is another prompt
    other = composite_on_grey(rgba, 0.9)
    assert not np.array_equal(other, trained.rgb[0])


def test_the_export_records_the_grey_training_composited_on(tmp_path, tiny_local_pixel) -> None:
    """An RGBA prompt sampled with the model's defaults goes on the grey its training used."""
    from training.prompt_image import PromptImageConfig

    pipe = ImageDreamPipeline.from_model(
        tiny_local_pixel, prompt_image=PromptImageConfig(background_min=0.5, background_max=0.5)
    )
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = ImageDreamPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.prompt_image_config.fixed_background == 0.5
    rgba = np.zeros((20, 20, 4), np.uint8)
    out = loaded(rgba, num_inference_steps=1, output_type="latent")
    assert out.background.tolist() == [0.5]
    assert (out.prompt_images[0] == int(0.5 * 255)).all()
    # a random range is drawn from the caller's generator: reproducible, and not constant
    ranged = ImageDreamPipeline.from_model(tiny_local_pixel)  # default: uniform in [0, 1]
    ranged.set_progress_bar_config(disable=True)
    levels = [
        float(
            ranged(
                rgba,
                num_inference_steps=1,
                output_type="latent",
                generator=torch.Generator().manual_seed(s),
            ).background[0]
        )
        for s in (1, 1, 2)
    ]
    assert levels[0] == levels[1] != levels[2]
    with pytest.raises(ValueError, match="background_min"):
        PromptImageConfig(background_min=0.8, background_max=0.2)
