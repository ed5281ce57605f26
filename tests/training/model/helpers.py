"""Helpers of the model tests: configs composed from conf/ exactly as training does, tiny models
and inputs."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from training.model import ImageDream, build_imagedream, register_configs
from training.model.config import (
    ControllerConfig,
    ModelConfig,
    to_controller_config,
    to_model_config,
)

CONF = Path(__file__).resolve().parents[3] / "conf"


def compose_configs(model: str, controller: str) -> tuple[ModelConfig, ControllerConfig]:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(overrides=[f"+model={model}", f"+controller={controller}"])
    return to_model_config(cfg.model), to_controller_config(cfg.controller)


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
