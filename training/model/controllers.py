"""Image-prompt controllers (SPEC 4): a registry of classes, one typed config each.

Shape legend: B batch, E image-encoder width (1280), M image-encoder tokens (257),
G global embedding width (1024), N image tokens, D context width (1024), C latent channels,
h x w latent size.

A controller turns `ImagePromptFeatures` into a `Conditioning` for the UNet: image tokens for
the decoupled cross-attention and/or an extra clean frame for the 3D self-attention. The UNet
only ever reads those named fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from training.model.config import (
    CONTROLLER_CONFIGS,
    ControllerConfig,
    GlobalControllerConfig,
    LocalControllerConfig,
    LocalPixelControllerConfig,
    NoneControllerConfig,
    PixelControllerConfig,
)
from training.model.resampler import Resampler


@dataclass
class ImagePromptFeatures:
    """Encoded image prompt; a field is None when the controller does not need it."""

    global_embed: Tensor | None = None  # (B, G), L2-normalised CLIP embedding
    local_tokens: Tensor | None = None  # (B, M, E), CLIP penultimate hidden states
    latent: Tensor | None = None  # (B, C, h, w), scaled clean VAE latent

    def where(self, mask: Tensor, other: ImagePromptFeatures) -> ImagePromptFeatures:
        """Rows of `other` where mask (B,) is True, rows of self elsewhere."""
        parts: list[Tensor | None] = []
        for name in ("global_embed", "local_tokens", "latent"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if (mine is None) != (theirs is None):
                raise ValueError(f"{name} is set in one set of features only")
            if mine is None:
                parts.append(None)
                continue
            m = mask.reshape(-1, *([1] * (mine.dim() - 1)))
            parts.append(torch.where(m, theirs.to(mine.dtype), mine))
        return ImagePromptFeatures(*parts)


@dataclass
class Conditioning:
    """What a controller hands the UNet."""

    image_tokens: Tensor | None = None  # (B, N, D) for the decoupled cross-attention
    extra_frame: Tensor | None = None  # (B, C, h, w) clean latent appended as the last frame
    ip_scale: float = 1.0  # lambda of the decoupled cross-attention

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch (e.g. [cond, uncond] for one CFG forward pass)."""
        if len({p.ip_scale for p in parts}) != 1:
            raise ValueError("cannot batch conditionings with different ip_scale")
        fields = []
        for name in ("image_tokens", "extra_frame"):
            values = [getattr(p, name) for p in parts]
            if any(v is None for v in values) and not all(v is None for v in values):
                raise ValueError(f"{name} is set in some conditionings only")
            fields.append(None if values[0] is None else torch.cat(values, dim=0))
        return Conditioning(fields[0], fields[1], parts[0].ip_scale)


@dataclass(frozen=True)
class FeatureNeeds:
    global_embed: bool = False
    local_tokens: bool = False
    latent: bool = False

    @property
    def image_encoder(self) -> bool:
        return self.global_embed or self.local_tokens


class Controller(nn.Module):
    """Base class. A subclass is registered with `register_controller(ItsConfig)`, sets the other
    class attributes and, for token controllers, builds the projector in __init__ and overrides
    `image_tokens`."""

    # set by register_controller: the config the class is built from, and that config's `name`
    name: ClassVar[str]
    config_class: ClassVar[type[ControllerConfig]]
    needs: ClassVar[FeatureNeeds] = FeatureNeeds()
    uses_pixel_frame: ClassVar[bool] = False
    train_unet_default: ClassVar[bool] = True  # SPEC 5: pixel variants train the whole UNet

    def __init__(
        self, cfg: ControllerConfig, context_dim: int, image_embed_dim: int, image_token_dim: int
    ) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}"
            )
        self.cfg = cfg

    @property
    def uses_image_tokens(self) -> bool:
        return self.needs.image_encoder

    @property
    def train_unet(self) -> bool:
        return self.train_unet_default if self.cfg.train_unet is None else self.cfg.train_unet

    def image_tokens(self, features: ImagePromptFeatures) -> Tensor | None:
        return None

    def forward(self, features: ImagePromptFeatures) -> Conditioning:
        extra = None
        if self.uses_pixel_frame:
            if features.latent is None:
                raise ValueError(f"controller {self.name!r} needs the prompt latent")
            extra = features.latent
        return Conditioning(self.image_tokens(features), extra, self.cfg.ip_scale)


# The registry of implementations, filled by `register_controller`, one line per controller:
# name -> class. The name is that of the class's config, which config.py registered (in
# CONTROLLER_CONFIGS), so a class is found under the same name as its config.
CONTROLLERS: dict[str, type[Controller]] = {}

C = TypeVar("C", bound=type[Controller])


def register_controller(config_class: type[ControllerConfig]) -> Callable[[C], C]:
    """Class decorator: the decorated controller is built from `config_class`, a config
    registered in config.py (`@register_controller_config`)."""
    name = config_class.name
    if CONTROLLER_CONFIGS.get(name) is not config_class:
        raise KeyError(
            f"{config_class.__name__} is not the registered config {name!r}; register it in "
            "training/model/config.py with @register_controller_config"
        )

    def register(cls: C) -> C:
        if name in CONTROLLERS:
            raise KeyError(f"controller {name!r} registered twice")
        cls.name, cls.config_class = name, config_class
        CONTROLLERS[name] = cls
        return cls

    return register


def build_controller(
    cfg: ControllerConfig, context_dim: int, image_embed_dim: int, image_token_dim: int
) -> Controller:
    if cfg.name not in CONTROLLERS:
        raise KeyError(f"unknown controller {cfg.name!r}; registered: {sorted(CONTROLLERS)}")
    return CONTROLLERS[cfg.name](cfg, context_dim, image_embed_dim, image_token_dim)


@register_controller(NoneControllerConfig)
class NoController(Controller):
    """MVDream: text only (fine-tunes the whole UNet by default)."""


class GlobalProjection(nn.Module):
    """(B, G) -> Linear(G, K x D) -> (B, K, D) -> LayerNorm (SPEC 4, global controller)."""

    def __init__(self, embed_dim: int, context_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.proj = nn.Linear(embed_dim, num_tokens * context_dim)
        self.norm = nn.LayerNorm(context_dim)

    def forward(self, embed: Tensor) -> Tensor:
        tokens = self.proj(embed).reshape(embed.shape[0], self.num_tokens, -1)  # (B, K, D)
        return self.norm(tokens)


@register_controller(GlobalControllerConfig)
class GlobalController(Controller):
    needs = FeatureNeeds(global_embed=True)
    train_unet_default = False  # SPEC 5: only the adapters train

    def __init__(
        self,
        cfg: GlobalControllerConfig,
        context_dim: int,
        image_embed_dim: int,
        image_token_dim: int,
    ) -> None:
        super().__init__(cfg, context_dim, image_embed_dim, image_token_dim)
        self.projection = GlobalProjection(image_embed_dim, context_dim, cfg.num_tokens)

    def image_tokens(self, features: ImagePromptFeatures) -> Tensor:
        if features.global_embed is None:
            raise ValueError("global controller needs the CLIP image embedding")
        return self.projection(features.global_embed)  # (B, 4, D)


@register_controller(LocalControllerConfig)
class LocalController(Controller):
    needs = FeatureNeeds(local_tokens=True)
    train_unet_default = False  # SPEC 5: only the adapters train

    def __init__(
        self,
        cfg: LocalControllerConfig,
        context_dim: int,
        image_embed_dim: int,
        image_token_dim: int,
    ) -> None:
        super().__init__(cfg, context_dim, image_embed_dim, image_token_dim)
        # resampler width = context width (1024 at full size, as released)
        self.resampler = Resampler(
            input_dim=image_token_dim,
            dim=context_dim,
            output_dim=context_dim,
            num_queries=cfg.num_queries,
            depth=cfg.depth,
            heads=cfg.heads,
            head_dim=cfg.head_dim,
            ff_mult=cfg.ff_mult,
        )

    def image_tokens(self, features: ImagePromptFeatures) -> Tensor:
        if features.local_tokens is None:
            raise ValueError("local controller needs the CLIP penultimate tokens")
        return self.resampler(features.local_tokens)  # (B, 16, D)


@register_controller(PixelControllerConfig)
class PixelController(Controller):
    needs = FeatureNeeds(latent=True)
    uses_pixel_frame = True


@register_controller(LocalPixelControllerConfig)
class LocalPixelController(LocalController):
    """ImageDream-P, the released model: local tokens + pixel frame."""

    needs = FeatureNeeds(local_tokens=True, latent=True)
    uses_pixel_frame = True
    train_unet_default = True
