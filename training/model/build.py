"""Explicit builders: config -> modules (no `_target_` strings, no work at import time)."""

from __future__ import annotations

from diffusers import UNet2DConditionModel

from training.model.attention import init_image_projections_from_text
from training.model.config import (
    ControllerConfig,
    ModelConfig,
    to_controller_config,
    to_model_config,
)
from training.model.controllers import Controller, build_controller
from training.model.encoders import (
    ImageEncoder,
    build_image_encoder,
    build_text_encoder,
    build_tokenizer,
    build_vae,
)
from training.model.imagedream import ImageDream
from training.model.unet import build_multiview_unet, load_sd21_unet


def build_denoiser(
    model_cfg: ModelConfig, controller_cfg: ControllerConfig
) -> tuple[UNet2DConditionModel, Controller]:
    """Random-init multi-view UNet + controller (works under `torch.device("meta")`)."""
    context_dim = model_cfg.unet.cross_attention_dim
    image = model_cfg.image_encoder
    controller = build_controller(
        controller_cfg, context_dim, image.projection_dim, image.hidden_size
    )
    unet = build_multiview_unet(
        model_cfg.unet, context_dim if controller.uses_image_tokens else None
    )
    return unet, controller


def build_imagedream(model_cfg: object, controller_cfg: object) -> ImageDream:
    """The full model from typed configs (or Hydra DictConfigs). Weights: SD 2.1-base folder
    first (if given), then an original MVDream/ImageDream checkpoint (if given)."""
    cfg = to_model_config(model_cfg)
    ctrl_cfg = to_controller_config(controller_cfg)
    weights = cfg.weights
    unet, controller = build_denoiser(cfg, ctrl_cfg)
    if weights.sd21_path is not None:
        load_sd21_unet(unet, weights.sd21_path, cfg.zero_init_camera)
        init_image_projections_from_text(unet)
    image_encoder: ImageEncoder | None = None
    if controller.needs.image_encoder:
        image_encoder = build_image_encoder(
            cfg.image_encoder, weights.image_encoder_path, weights.open_clip_checkpoint
        )
        if (image_encoder.embed_dim, image_encoder.token_dim) != (
            cfg.image_encoder.projection_dim,
            cfg.image_encoder.hidden_size,
        ):
            raise ValueError("loaded image encoder widths differ from model.image_encoder config")
    model = ImageDream(
        cfg,
        unet=unet,
        controller=controller,
        vae=build_vae(cfg.vae, weights.sd21_path),
        text_encoder=build_text_encoder(cfg.text_encoder, weights.sd21_path),
        tokenizer=build_tokenizer(cfg.text_encoder, weights.sd21_path),
        image_encoder=image_encoder,
    )
    if weights.original_checkpoint is not None:
        from training.model.convert import load_original_checkpoint

        load_original_checkpoint(model, weights.original_checkpoint)
    return model
