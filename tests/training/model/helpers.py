"""Helpers of the model tests: configs composed from conf/ exactly as training does, tiny models
and inputs."""

from __future__ import annotations

import torch

from training.model import ImageDream, build_imagedream
from training.model import compose_model_configs as compose_configs


def tiny_model(controller: str, seed: int = 0) -> ImageDream:
    torch.manual_seed(seed)
    return build_imagedream(*compose_configs("tiny", controller))


def tiny_batch(model: ImageDream, views: int = 4, batch: int = 2, seed: int = 1) -> dict:
    """Random inputs of the right shapes: latents of 16 px images, text context, cameras."""
    g = torch.Generator().manual_seed(seed)
    size = model.cfg.unet.sample_size
    c = model.cfg.unet.latent_channels
    return dict(
        noisy=torch.randn(batch, views, c, size, size, generator=g),
        timesteps=torch.randint(0, 1000, (batch,), generator=g),
        text_context=model.encode_text(["a red chair", "a toy robot, 3d asset"][:batch]),
        cameras=torch.randn(batch, views, 16, generator=g),
        prompt=torch.rand(batch, 3, 2 * size, 2 * size, generator=g),  # tiny VAE factor 2
    )
