"""Multi-view sampling (SPEC 6): DDIM, 50 steps, eta 0, one CFG scale over text and image.

Shape legend: B prompts, V target views (4), C latent channels, h x w latent size, H x W pixels,
T text tokens, D context width.

The classifier-free guidance branch is the paper's: negative text, zero image features and a zero
latent for the pixel frame (`ImageDream.unconditional`). Both branches run in one batched forward
pass. Cameras are the canonical ones: azimuth 0/90/180/270 at one elevation, the camera distance
following the prompt's FoV (data_pipeline.cameras). The pixel frame of pixel variants is added
and dropped inside the model, so the sampler only ever sees the V target views.

Each prompt gets its own seeded generator for its initial noise, so a prompt's result does not
depend on the batch it was sampled in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from data_pipeline.cameras import distance_for_fov, network_camera, ring_c2w
from training.diffusion import build_sampling_scheduler
from training.model import Conditioning, ImageDream


@dataclass
class SamplerConfig:
    num_steps: int = 50  # SPEC 6
    cfg_scale: float = 5.0  # SPEC 6: one scale over text and image
    eta: float = 0.0  # SPEC 6: deterministic DDIM
    azimuths_deg: list[float] = field(default_factory=lambda: [0.0, 90.0, 180.0, 270.0])
    elevation_deg: float = 5.0  # SPEC 6; held-out rings use their own elevation
    # FoV of folder prompts (held-out rings use their own). The network sees only the unit
    # camera direction, so the FoV fixes the camera distance recorded with the views.
    fov_deg: float = 45.0
    framing: str = "mvdream"  # distance rule of data_pipeline.cameras.distance_for_fov
    negative_prompt: str = ""
    text_suffix: str = ", 3d asset"  # SPEC 5: captions are trained with this suffix
    batch_size: int = 2
    seed: int = 0  # prompt i uses seed + i

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"sampler.num_steps must be >= 1, got {self.num_steps}")
        if self.batch_size < 1:
            raise ValueError(f"sampler.batch_size must be >= 1, got {self.batch_size}")
        if len(self.azimuths_deg) < 1:
            raise ValueError("sampler.azimuths_deg is empty")


@dataclass
class MultiViewSamples:
    """What the sampler returns for B prompts."""

    views: np.ndarray  # (B, V, H, W, 3) uint8, the target views only
    latents: Tensor  # (B, V, C, h, w) final scaled latents
    cameras: np.ndarray  # (B, V, 16) network cameras
    c2w: np.ndarray  # (B, V, 4, 4) camera-to-world
    azimuths_deg: np.ndarray  # (V,)
    elevation_deg: np.ndarray  # (B,)
    fov_deg: np.ndarray  # (B,)
    seeds: list[int]


class MultiViewSampler:
    def __init__(self, model: ImageDream, cfg: SamplerConfig | None = None) -> None:
        self.model = model.eval()
        self.cfg = cfg or SamplerConfig()

    @property
    def resolution(self) -> int:
        """Pixel size of the model's views (the VAE's sample size)."""
        return int(self.model.cfg.vae.sample_size)

    def cameras(self, elevation_deg: float, fov_deg: float) -> np.ndarray:
        """(V, 4, 4) c2w of the sampling cameras for one prompt."""
        distance = distance_for_fov(fov_deg, self.cfg.framing)
        return ring_c2w(np.asarray(self.cfg.azimuths_deg, float), elevation_deg, distance)

    def sample(
        self,
        images: np.ndarray,
        texts: Sequence[str],
        seeds: Sequence[int] | None = None,
        elevations_deg: Sequence[float] | None = None,
        fovs_deg: Sequence[float] | None = None,
    ) -> MultiViewSamples:
        """Views of B prompts. images (B, H', W', 3) uint8 (any size: resized to the model's),
        texts: B captions (the suffix is added here)."""
        n = len(images)
        if len(texts) != n:
            raise ValueError(f"{n} images but {len(texts)} texts")
        seeds = [self.cfg.seed + i for i in range(n)] if seeds is None else list(seeds)
        elevs = [self.cfg.elevation_deg] * n if elevations_deg is None else list(elevations_deg)
        fovs = [self.cfg.fov_deg] * n if fovs_deg is None else list(fovs_deg)
        c2w = np.stack([self.cameras(e, f) for e, f in zip(elevs, fovs, strict=True)])
        cams = network_camera(c2w)  # (B, V, 16)
        views, latents = [], []
        for start in range(0, n, self.cfg.batch_size):
            sl = slice(start, start + self.cfg.batch_size)
            v, z = self._sample_batch(images[sl], list(texts[sl]), seeds[sl], cams[sl])
            views.append(v)
            latents.append(z)
        return MultiViewSamples(
            views=np.concatenate(views),
            latents=torch.cat(latents),
            cameras=cams,
            c2w=c2w,
            azimuths_deg=np.asarray(self.cfg.azimuths_deg, float),
            elevation_deg=np.asarray(elevs, float),
            fov_deg=np.asarray(fovs, float),
            seeds=seeds,
        )

    # ------------------------------------------------------------------ one batch

    def prompt_tensor(self, images: np.ndarray) -> Tensor:
        """(B, H', W', 3) uint8 -> (B, 3, H, W) in [0, 1] at the model's resolution."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        size = self.resolution
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            ).clamp(0, 1)
        return x

    def initial_noise(self, seeds: Sequence[int]) -> Tensor:
        """(B, V, C, h, w) standard normal noise, one generator per prompt."""
        unet = self.model.cfg.unet
        shape = (
            len(self.cfg.azimuths_deg),
            unet.latent_channels,
            unet.sample_size,
            unet.sample_size,
        )
        return torch.stack(
            [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        )

    @torch.no_grad()
    def _sample_batch(
        self, images: np.ndarray, texts: list[str], seeds: Sequence[int], cams: np.ndarray
    ) -> tuple[np.ndarray, Tensor]:
        model, cfg = self.model, self.cfg
        device = model.device
        b = len(images)
        features = model.encode_image_prompt(self.prompt_tensor(images).to(device))
        cond = model.condition(features)
        uncond = model.unconditional(features)  # SPEC 6: zero image features, zero latent
        text = model.encode_text([t + cfg.text_suffix for t in texts])  # (B, T, D)
        negative = model.encode_text([cfg.negative_prompt] * b)  # (B, T, D)

        # both CFG branches in one pass: first half conditional, second half unconditional
        both = Conditioning.cat([cond, uncond])  # (2B, ...): one CFG forward pass
        context = torch.cat([text, negative])  # (2B, T, D)
        cameras = torch.from_numpy(cams).to(device).repeat(2, 1, 1)  # (2B, V, 16)

        scheduler: Any = build_sampling_scheduler()  # diffusers' mixin attributes are untyped
        scheduler.set_timesteps(cfg.num_steps)
        latents = (
            self.initial_noise(seeds).to(device) * scheduler.init_noise_sigma
        )  # (B, V, C, h, w)
        generator = torch.Generator().manual_seed(int(seeds[0]))  # only used when eta > 0
        for t in scheduler.timesteps:
            timesteps = torch.full((2 * b,), int(t), device=device, dtype=torch.long)
            eps = model(latents.repeat(2, 1, 1, 1, 1), timesteps, context, cameras, both)
            eps_cond, eps_uncond = eps.chunk(2)  # (B, V, C, h, w) each
            eps = eps_uncond + cfg.cfg_scale * (eps_cond - eps_uncond)
            latents = scheduler.step(eps, t, latents, eta=cfg.eta, generator=generator).prev_sample
        images01 = (model.decode_latents(latents) + 1.0) / 2.0  # (B, V, 3, H, W)
        views = (images01.clamp(0, 1) * 255.0).round().to(torch.uint8)
        return views.permute(0, 1, 3, 4, 2).cpu().numpy(), latents.cpu()  # (B, V, H, W, 3)
