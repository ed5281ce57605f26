"""Helpers of the model tests: configs composed from conf/ exactly as training does, tiny models
and inputs."""

from __future__ import annotations

import numpy as np
import torch

from training.model import ImageDream, build_imagedream
from training.model import compose_model_configs as compose_configs
from training.prompt_image import PromptImages, prepare_prompts


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
        prompt=tiny_prompts(model, batch, seed),
    )


def tiny_prompts(model: ImageDream, batch: int = 2, seed: int = 1, size: int = 40) -> PromptImages:
    """`batch` random RGB prompts (size x size), prepared as the pipeline prepares them."""
    rng = np.random.default_rng(seed)
    rgb = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    clip = None if model.image_encoder is None else model.image_encoder.image_size
    return prepare_prompts(rgb, int(model.cfg.vae.sample_size), clip)
