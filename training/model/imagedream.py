"""`ImageDream`: the multi-view denoiser, its controller and its frozen encoders (SPEC 4).

Shape legend: B objects, V target views (4), F = V (+1 pixel frame), C latent channels (4),
h x w latent size (32 at 256 px), T text tokens (77), D context width (1024).

The model predicts epsilon; it knows nothing of the noise schedule (training/diffusion.py) nor
of cameras beyond their (B, V, 16) network form (contract.cameras.network_camera).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from transformers import CLIPTokenizer

from training.model.config import CAMERA_DIM, ModelConfig
from training.model.controllers import Conditioning, Controller, ImagePromptFeatures
from training.model.denoiser import MultiViewUNet
from training.model.encoders import ImageEncoder
from training.model.unet import multiview_forward

if TYPE_CHECKING:
    from training.prompt_image import PromptImages


class ImageDream(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        denoiser: MultiViewUNet,  # the multi-view UNet and its controller
        vae: Any,  # diffusers AutoencoderKL
        text_encoder: Any,  # transformers CLIPTextModel
        tokenizer: CLIPTokenizer,
        image_encoder: ImageEncoder | None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.denoiser = denoiser
        self.vae: Any = vae
        self.text_encoder: Any = text_encoder
        self.tokenizer = tokenizer
        self.image_encoder = image_encoder
        self.set_trainable()

    # ------------------------------------------------------------------ identity / training

    @property
    def unet(self) -> Any:
        """The diffusers UNet2DConditionModel with the multi-view processors."""
        return self.denoiser.unet

    @property
    def controller(self) -> Controller:
        return self.denoiser.controller

    @property
    def controller_name(self) -> str:
        return self.controller.name

    @property
    def uses_pixel_frame(self) -> bool:
        return self.controller.uses_pixel_frame

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    def set_trainable(self) -> None:
        """SPEC 5: global/local train only the adapters (projector + to_k_ip/to_v_ip); none and
        pixel variants train the whole UNet (controller.train_unet, overridable in config)."""
        for module in (self.vae, self.text_encoder, self.image_encoder):
            if module is not None:
                module.requires_grad_(False)
        train_unet = self.controller.train_unet
        for name, p in self.unet.named_parameters():
            p.requires_grad_(train_unet or "to_k_ip" in name or "to_v_ip" in name)
        self.controller.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def denoiser_state_dict(self) -> dict[str, Tensor]:
        """What a checkpoint stores (`unet.*`, `controller.*`; the encoders are frozen and loaded
        from their own files)."""
        return dict(self.denoiser.state_dict())

    def train(self, mode: bool = True) -> ImageDream:
        super().train(mode)
        for module in (self.vae, self.text_encoder, self.image_encoder):
            if module is not None:
                module.eval()  # frozen encoders never switch to training behaviour
        return self

    # ------------------------------------------------------------------------------ encoders

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> Tensor:
        """-> (B, 77, D): SD2's penultimate-layer text features (see TextEncoderConfig)."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids)[0]  # (B, T, D)

    @torch.no_grad()
    def encode_latents(
        self, images: Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """(..., 3, H, W) in [-1, 1] -> (..., C, H/8, W/8) scaled latents (posterior sample, or
        its mean with sample=False)."""
        lead = images.shape[:-3]
        x = images.reshape(-1, *images.shape[-3:]).to(self.device)  # (N, 3, H, W)
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        z = z * self.latent_scale  # (N, C, h, w)
        return z.reshape(*lead, *z.shape[1:])

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """(..., C, h, w) scaled latents -> (..., 3, H, W) images in [-1, 1]."""
        lead = latents.shape[:-3]
        # times the reciprocal, as the authors' decode_first_stage scales (not a division)
        z = (1.0 / self.latent_scale) * latents.reshape(-1, *latents.shape[-3:])
        z = z.to(self.vae.dtype)
        x = self.vae.decode(z).sample.clamp(-1, 1)  # (N, 3, H, W)
        return x.reshape(*lead, *x.shape[1:])

    @torch.no_grad()
    def encode_image_prompt(
        self, prompts: PromptImages, latent_noise: Tensor | None = None
    ) -> ImagePromptFeatures:
        """Prepared prompts (training.prompt_image) -> what this controller needs. The pixel
        latent is `mean + std * latent_noise` of the VAE posterior (B, C, h, w): a posterior
        sample when noise is given (the authors' inference draws one), the mean without it."""
        needs = self.controller.needs
        features = ImagePromptFeatures()
        if needs.image_encoder:
            assert self.image_encoder is not None
            if prompts.clip is None:
                raise ValueError("this controller needs the CLIP input of its prompts")
            features.global_embed, features.local_tokens = self.image_encoder(
                prompts.clip.to(self.device),
                want_global=needs.global_embed,
                want_tokens=needs.local_tokens,
            )
        if needs.latent:
            features.latent = self.encode_prompt_latent(prompts.vae, latent_noise)  # (B, C, h, w)
        return features

    @torch.no_grad()
    def encode_prompt_latent(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, C, h, w) scaled latent: the posterior mean plus std x
        `noise` (B, C, h, w), as diffusers' and the authors' posterior `sample()` compute it,
        with the noise drawn by the caller (so its place in the caller's random stream is
        fixed). A deterministic first stage (the pixel-unshuffle one) ignores the noise."""
        dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        if noise is None or not hasattr(dist, "std"):
            z = dist.mode()
        else:
            z = dist.mean + dist.std * noise.to(dist.mean.device, dist.mean.dtype)
        return z * self.latent_scale

    def condition(self, features: ImagePromptFeatures) -> Conditioning:
        """The controller's conditioning; the unconditional input is defined in one place,
        training.diffusion.unconditional_features."""
        return self.controller(features)

    # ------------------------------------------------------------------------------ denoiser

    def forward(
        self,
        noisy: Tensor,  # (B, V, C, h, w)
        timesteps: Tensor,  # (B,)
        text_context: Tensor,  # (B, T, D)
        cameras: Tensor,  # (B, V, 16)
        cond: Conditioning,
    ) -> Tensor:
        """Predicted noise for the V target views, (B, V, C, h, w)."""
        b, v = noisy.shape[:2]
        if cameras.shape != (b, v, CAMERA_DIM):
            raise ValueError(
                f"cameras must be (B, V, 16) = {(b, v, CAMERA_DIM)}, got {tuple(cameras.shape)}"
            )
        if (cond.extra_frame is not None) != self.uses_pixel_frame:
            raise ValueError(
                f"controller {self.controller_name!r}: extra_frame given = {cond.extra_frame is not None}"
            )
        x, cams = noisy, cameras
        if cond.extra_frame is not None:
            # SPEC 4 pixel controller: the clean prompt latent is the last frame, never noised,
            # with the zero camera and the targets' timestep; its prediction is dropped below
            x = torch.cat(
                [noisy, cond.extra_frame[:, None].to(noisy.dtype)], dim=1
            )  # (B, V+1, C, h, w)
            cams = torch.cat([cameras, cameras.new_zeros(b, 1, CAMERA_DIM)], dim=1)  # (B, V+1, 16)
        eps = multiview_forward(
            self.unet, x, timesteps, text_context, cams, cond.image_tokens, cond.ip_scale
        )
        return eps[:, :v]  # (B, V, C, h, w)
