"""Explicit builders: config -> modules (no `_target_` strings, no work at import time).

The denoiser's own builder, `build_denoiser`, sits beside `MultiViewUNet` in denoiser.py (the
class calls it); this module puts the whole model together around it."""

from __future__ import annotations

from typing import Any

from training.model.attention import init_image_projections_from_text
from training.model.config import ModelConfig, to_controller_config, to_model_config
from training.model.convert import denoiser_from_original
from training.model.denoiser import MultiViewUNet
from training.model.encoders import (
    ImageEncoder,
    build_image_encoder,
    build_text_encoder,
    build_tokenizer,
    build_vae,
)
from training.model.imagedream import ImageDream
from training.model.unet import load_sd21_unet


def build_encoders(
    cfg: ModelConfig,
    with_image_encoder: bool,
    sd21_path: str | None,
    image_encoder_path: str | None,
    open_clip_checkpoint: str | None,
) -> dict[str, Any]:
    """VAE, text encoder, tokenizer (from `sd21_path`'s vae/ text_encoder/ tokenizer/, or random)
    and, if needed, the image encoder; keyword arguments of ImageDream."""
    image_encoder: ImageEncoder | None = None
    if with_image_encoder:
        image_encoder = build_image_encoder(
            cfg.image_encoder, image_encoder_path, open_clip_checkpoint
        )
        widths = (image_encoder.embed_dim, image_encoder.token_dim)
        if widths != (cfg.image_encoder.projection_dim, cfg.image_encoder.hidden_size):
            raise ValueError(
                f"image encoder widths {widths} differ from model.image_encoder config"
            )
    return dict(
        vae=build_vae(cfg.vae, sd21_path),
        text_encoder=build_text_encoder(cfg.text_encoder, sd21_path),
        tokenizer=build_tokenizer(cfg.text_encoder, sd21_path),
        image_encoder=image_encoder,
    )


def build_imagedream(model_cfg: object, controller_cfg: object) -> ImageDream:
    """The full model from typed configs (or Hydra DictConfigs). Weights: SD 2.1-base folder
    first (if given), then an original MVDream/ImageDream checkpoint (if given)."""
    cfg = to_model_config(model_cfg)
    ctrl_cfg = to_controller_config(controller_cfg)
    w = cfg.weights
    if w.original_checkpoint is not None:  # streamed from the released file
        denoiser = denoiser_from_original(cfg, ctrl_cfg, w.original_checkpoint)
    else:
        denoiser = MultiViewUNet.from_configs(cfg, ctrl_cfg)
    if w.sd21_path is not None and w.original_checkpoint is None:
        load_sd21_unet(denoiser.unet, w.sd21_path, cfg.zero_init_camera)
        init_image_projections_from_text(denoiser.unet)
    encoders = build_encoders(
        cfg,
        denoiser.controller.needs.image_encoder,
        w.sd21_path,
        w.image_encoder_path,
        w.open_clip_checkpoint,
    )
    return ImageDream(cfg, denoiser=denoiser, **encoders)
