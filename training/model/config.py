"""Typed configuration of the ImageDream network (SPEC 4).

`ModelConfig` describes the denoiser and its frozen encoders; one `ControllerConfig` subclass per
image-prompt controller, registered here (`CONTROLLER_CONFIGS`; the implementations, in
`controllers.py`, are registered against them). Defaults are the full-size SD 2.1-base
numbers; `conf/model/tiny.yaml` shrinks every size but runs the same classes.
Nothing here builds a module: see `build.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

# SPEC 2: the network camera's width, owned by the camera convention; the model reads it here
from contract.cameras import CAMERA_DIM as CAMERA_DIM

# SPEC 4: VAE latents are scaled by this constant before the UNet sees them (SD 2.x).
VAE_SCALE_FACTOR = 0.18215
# SPEC 5 / 6: what a dropped image prompt becomes and what the CFG branch feeds (defined in
# training.diffusion.unconditional_features): "zeros" = zero CLIP image features + zero pixel
# latent (the authors' released inference), "grey_image" = the encodings of a uniform grey image.
UNCONDITIONAL_MODES = ("zeros", "grey_image")
# SPEC 6: the pixel controller's prompt latent: "sample" = one draw of the VAE posterior (the
# authors' inference), "mean" = the posterior mean (deterministic)
PIXEL_LATENTS = ("sample", "mean")
# SPEC 4 / OpenCLIP ViT-H-14: image preprocessing of the image encoder.
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class UNetConfig:
    """SD 2.1-base UNet (SPEC 4): 320/640/1280/1280, 2 res-blocks, attention at 3 levels."""

    block_out_channels: list[int] = field(default_factory=lambda: [320, 640, 1280, 1280])
    # which levels (down order) carry a transformer block; the deepest SD level has none
    attention_levels: list[bool] = field(default_factory=lambda: [True, True, True, False])
    layers_per_block: int = 2
    head_dim: int = 64
    cross_attention_dim: int = 1024  # text context width (OpenCLIP ViT-H text tower)
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 32  # 256 px / VAE factor 8

    def __post_init__(self) -> None:
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError(
                f"attention_levels {self.attention_levels} must have one entry per level of "
                f"block_out_channels {self.block_out_channels}"
            )
        for c in self.block_out_channels:
            if c % self.head_dim or c % self.norm_num_groups:
                raise ValueError(
                    f"channel width {c} must be divisible by head_dim {self.head_dim} and "
                    f"norm_num_groups {self.norm_num_groups}"
                )


VAE_KINDS = ("kl", "pixel_unshuffle")


@dataclass
class VAEConfig:
    """The first stage. "kl": SD 2.1's AutoencoderKL (factor 8 at full size; the sizes below).
    "pixel_unshuffle": training.model.autoencoder.PixelUnshuffleAutoencoder, parameter-free,
    latents = the pixels folded by `factor` (3 factor^2 channels), for small pixel-space models."""

    kind: str = "kl"
    factor: int = 2  # pixel_unshuffle only
    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 256
    scaling_factor: float = VAE_SCALE_FACTOR


@dataclass
class TextEncoderConfig:
    """OpenCLIP ViT-H-14 text tower as diffusers ships it for SD 2.1: 23 of its 24 layers, so
    the last hidden state (after the final LayerNorm) is SD2's "penultimate" output."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 23
    num_attention_heads: int = 16
    max_length: int = 77
    vocab_size: int = 49408
    projection_dim: int = 512
    hidden_act: str = "gelu"


@dataclass
class ImageEncoderConfig:
    """OpenCLIP ViT-H-14 image tower (SPEC 4): 1024-d projected embedding, 257 x 1280 tokens."""

    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_hidden_layers: int = 32
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    projection_dim: int = 1024
    hidden_act: str = "gelu"

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass
class WeightsConfig:
    """Local weight paths; all None = random init (tests, benchmarks). Never downloads."""

    # diffusers-format SD 2.1-base folder with unet/, vae/, text_encoder/, tokenizer/
    sd21_path: str | None = None
    # HF-format CLIP ViT-H-14 folder (CLIPModel or CLIPVisionModelWithProjection)
    image_encoder_path: str | None = None
    # open_clip checkpoint file of ViT-H-14 (alternative to image_encoder_path)
    open_clip_checkpoint: str | None = None
    # original MVDream / ImageDream checkpoint (.pt / .ckpt / .safetensors), converted on load
    original_checkpoint: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "sd21_path",
            "image_encoder_path",
            "open_clip_checkpoint",
            "original_checkpoint",
        ):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise FileNotFoundError(f"model.weights.{name} = {value!r} does not exist")
        if self.image_encoder_path is not None and self.open_clip_checkpoint is not None:
            raise ValueError("set at most one of image_encoder_path and open_clip_checkpoint")


@dataclass
class ModelConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    # zero-init the camera MLP's last layer when starting from plain SD weights, so step 0 is SD
    zero_init_camera: bool = True
    # the image prompt of a dropped training example and of the CFG branch (SPEC 5, 6):
    # "zeros" (zero image features + zero pixel latent, the authors' released inference) or
    # "grey_image" (the encodings of a uniform grey image); see training.diffusion
    unconditional: str = "zeros"
    # the pixel latent of an image prompt, in training and sampling alike (PIXEL_LATENTS)
    pixel_latent: str = "sample"

    def __post_init__(self) -> None:
        if self.pixel_latent not in PIXEL_LATENTS:
            raise ValueError(
                f"model.pixel_latent={self.pixel_latent!r}; expected one of {PIXEL_LATENTS}"
            )
        if self.unconditional not in UNCONDITIONAL_MODES:
            raise ValueError(
                f"model.unconditional={self.unconditional!r}; expected one of {UNCONDITIONAL_MODES}"
            )
        if self.vae.kind not in VAE_KINDS:
            raise ValueError(f"model.vae.kind={self.vae.kind!r}; expected one of {VAE_KINDS}")
        if self.vae.kind == "pixel_unshuffle":
            f = self.vae.factor
            if self.vae.latent_channels != 3 * f * f:
                raise ValueError(
                    f"model.vae.latent_channels must be 3 x factor^2 = {3 * f * f} for "
                    f"pixel_unshuffle with factor {f}, got {self.vae.latent_channels}"
                )
            if self.unet.sample_size * f != self.vae.sample_size:
                raise ValueError(
                    f"model.unet.sample_size x vae.factor = {self.unet.sample_size * f} must "
                    f"equal model.vae.sample_size {self.vae.sample_size}"
                )
        if self.vae.latent_channels != self.unet.latent_channels:
            raise ValueError(
                f"vae.latent_channels {self.vae.latent_channels} != unet.latent_channels "
                f"{self.unet.latent_channels}"
            )
        if self.text_encoder.hidden_size != self.unet.cross_attention_dim:
            raise ValueError(
                f"text_encoder.hidden_size {self.text_encoder.hidden_size} must equal "
                f"unet.cross_attention_dim {self.unet.cross_attention_dim}"
            )


# ---------------------------------------------------------------------------------------------
# Controllers (SPEC 4, "Variants"). One config class per controller, registered here with
# `@register_controller_config` under its `name` default: the key conf/controller/*.yaml and
# every checkpoint's config hold. The implementation in controllers.py is registered against its
# config (`@register_controller(ItsConfig)`), so this module never imports the implementations.
# Sizes that follow the backbone (context width, CLIP widths) are read from ModelConfig, so the
# same YAML works for tiny and full size.


@dataclass
class ControllerConfig:
    name: str = "none"
    # lambda of the decoupled cross-attention (SPEC 4), used by token controllers
    ip_scale: float = 1.0
    # None = the paper's choice for this controller (whole UNet for none/pixel variants,
    # adapters only for global/local); True/False overrides it
    train_unet: bool | None = None


# The registry of controller configs, name -> config class, one decorator per class below.
CONTROLLER_CONFIGS: dict[str, type[ControllerConfig]] = {}

CC = TypeVar("CC", bound=type[ControllerConfig])


def register_controller_config(config_class: CC) -> CC:
    """Class decorator: registers a controller config under its `name` default."""
    name = config_class.name
    if name in CONTROLLER_CONFIGS:
        raise KeyError(f"controller config {name!r} registered twice")
    CONTROLLER_CONFIGS[name] = config_class
    return config_class


@register_controller_config
@dataclass
class NoneControllerConfig(ControllerConfig):
    """MVDream: text only."""

    name: str = "none"


@register_controller_config
@dataclass
class GlobalControllerConfig(ControllerConfig):
    """CLIP image embedding -> Linear(1024, 4 x 1024) -> LayerNorm -> 4 tokens."""

    name: str = "global"
    num_tokens: int = 4


@register_controller_config
@dataclass
class LocalControllerConfig(ControllerConfig):
    """CLIP penultimate tokens -> Perceiver resampler (16 queries, depth 4, 12 x 64 heads)."""

    name: str = "local"
    num_queries: int = 16
    depth: int = 4
    heads: int = 12
    head_dim: int = 64
    ff_mult: int = 4


@register_controller_config
@dataclass
class PixelControllerConfig(ControllerConfig):
    """Clean prompt latent as an extra (last) frame of the 3D self-attention."""

    name: str = "pixel"


@register_controller_config
@dataclass
class LocalPixelControllerConfig(LocalControllerConfig):
    """The paper's final model (ImageDream-P): local tokens + pixel frame."""

    name: str = "local_pixel"


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore: `model/schema` and `controller/<name>_schema`
    (YAML files in conf/ name them in their defaults list)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="model", name="schema", node=ModelConfig)
    for name, cls in CONTROLLER_CONFIGS.items():
        cs.store(group="controller", name=f"{name}_schema", node=cls)


def to_model_config(cfg: object) -> ModelConfig:
    """A ModelConfig from itself, a Hydra DictConfig or a plain dict."""
    from contract.hydra_compose import to_dataclass

    return to_dataclass(ModelConfig, cfg)


def to_controller_config(cfg: object) -> ControllerConfig:
    """The typed controller config from itself, a Hydra DictConfig or a dict with `name`."""
    if isinstance(cfg, ControllerConfig):
        return cfg
    from collections.abc import Mapping

    from omegaconf import DictConfig

    from contract.hydra_compose import to_dataclass

    name = cfg.get("name") if isinstance(cfg, Mapping | DictConfig) else None
    if name not in CONTROLLER_CONFIGS:
        raise KeyError(f"unknown controller {name!r}; registered: {sorted(CONTROLLER_CONFIGS)}")
    return to_dataclass(CONTROLLER_CONFIGS[name], cfg)


def compose_model_configs(model: str, controller: str) -> tuple[ModelConfig, ControllerConfig]:
    """conf/model/<model>.yaml and conf/controller/<controller>.yaml as Hydra composes them onto
    their schemas (what `model=` / `controller=` give a training run), typed and checked."""
    from contract.hydra_compose import compose

    register_configs()
    cfg = compose(None, [f"+model={model}", f"+controller={controller}"])
    return to_model_config(cfg.model), to_controller_config(cfg.controller)
