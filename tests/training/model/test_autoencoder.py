"""The pixel-unshuffle first stage: exact round trip, the AutoencoderKL interface the model
uses, and a pipeline component that saves and loads (conf/model/demo.yaml)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.model.autoencoder import PixelUnshuffleAutoencoder
from training.model.config import ModelConfig, UNetConfig, VAEConfig
from training.pipeline import ImageDreamPipeline


def test_round_trip_is_exact_and_folds_pixels_into_channels() -> None:
    ae = PixelUnshuffleAutoencoder(factor=2, sample_size=32)
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    z = ae.encode(x).latent_dist.sample()
    assert z.shape == (5, 12, 16, 16) and ae.latent_channels == 12
    assert torch.equal(ae.encode(x).latent_dist.mode(), z)
    assert torch.equal(ae.decode(z).sample, x)
    assert torch.equal(z[:, :4, 0, 0].reshape(5, 4), x[:, 0, :2, :2].reshape(5, 4))  # one 2x2 block


def test_model_config_checks_the_sizes_fit() -> None:
    vae = VAEConfig(kind="pixel_unshuffle", factor=2, latent_channels=12, sample_size=32)
    unet = UNetConfig(block_out_channels=[32, 64], attention_levels=[True, False],
                      head_dim=16, cross_attention_dim=1024, latent_channels=12,
                      norm_num_groups=8, sample_size=16)  # fmt: skip
    ModelConfig(unet=unet, vae=vae)
    with pytest.raises(ValueError, match="3 x factor"):
        ModelConfig(unet=unet, vae=VAEConfig(kind="pixel_unshuffle", latent_channels=4))
    with pytest.raises(ValueError, match="sample_size"):
        ModelConfig(unet=UNetConfig(**{**unet.__dict__, "sample_size": 8}), vae=vae)


def test_demo_model_samples_and_round_trips_as_a_pipeline(tmp_path) -> None:
    from training.model import build_imagedream, compose_model_configs

    torch.manual_seed(0)
    model = build_imagedream(*compose_model_configs("demo", "pixel"))
    assert isinstance(model.vae, PixelUnshuffleAutoencoder)
    pipe = ImageDreamPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    out = pipe(
        image, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(1)
    )
    assert out.images.shape == (1, 4, 32, 32, 3)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = ImageDreamPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(loaded.vae, PixelUnshuffleAutoencoder)
    again = loaded(
        image, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(1)
    )
    np.testing.assert_array_equal(again.images, out.images)
