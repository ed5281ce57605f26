"""`PixelUnshuffleAutoencoder`: a parameter-free first stage for small pixel-space models.

Shape legend: N images, f the factor, H x W pixels, C = 3 f^2 latent channels.

It folds every f x f block of pixels into channels (`pixel_unshuffle`) and back, so a 32 px
image becomes a (12, 16, 16) "latent" that holds exactly its pixels: nothing to train, nothing to
download, no reconstruction error. With it the same multi-view UNet, controllers, trainer,
pipeline and sampler learn in minutes on a CPU (conf/model/demo.yaml), where a random KL VAE
would only let them learn noise. It speaks the part of diffusers' `AutoencoderKL` interface the
project uses (`encode(x).latent_dist.sample() / .mode()`, `decode(z).sample`,
`config.scaling_factor`) and saves as a pipeline component like any diffusers model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor


@dataclass
class _Latents:
    """A point mass: what `latent_dist` returns for a deterministic encoder."""

    value: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return self.value

    def mode(self) -> Tensor:
        return self.value


@dataclass
class _EncoderOutput:
    latent_dist: _Latents


@dataclass
class _DecoderOutput:
    sample: Tensor


class PixelUnshuffleAutoencoder(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        factor: int = 2,
        in_channels: int = 3,
        sample_size: int = 32,
        scaling_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if factor < 1 or sample_size % factor:
            raise ValueError(f"factor {factor} must be >= 1 and divide sample_size {sample_size}")
        self.factor = factor
        # one buffer, so the model has a dtype and device (and a non-empty weights file)
        self.register_buffer("unit", torch.ones(()))

    @property
    def latent_channels(self) -> int:
        return 3 * self.factor**2

    def encode(self, x: Tensor) -> _EncoderOutput:
        """(N, 3, H, W) in [-1, 1] -> latent_dist of (N, 3 f^2, H/f, W/f)."""
        z = F.pixel_unshuffle(x * self.unit, self.factor)
        return _EncoderOutput(_Latents(z))

    def decode(self, z: Tensor) -> _DecoderOutput:
        """(N, 3 f^2, h, w) -> (N, 3, h f, w f)."""
        return _DecoderOutput(F.pixel_shuffle(z * self.unit, self.factor))
