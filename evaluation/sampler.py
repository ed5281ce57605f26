"""Multi-view sampling for evaluation: batches of prompts through `ImageDreamPipeline` (SPEC 6).

Shape legend: B prompts, V views (4), C latent channels, h x w latent size, H x W pixels.

Each batch goes through training.pipeline.sample_views, the call the training sample grids make
too; the diffusion itself (DDIM, one CFG scale over text and image, the unconditional branch) is
training.diffusion's, run by the pipeline, and so is the prompt preparation
(training.prompt_image). The defaults are the model's, as its export records them (its family's,
SPEC 6); `SamplerConfig` overrides them (`training.sampling_settings.SamplingConfig`, None = the
model's) and adds what only evaluation needs: how prompts are batched and seeded, whether
captions are sent, and the FoV / framing recorded with the views (the network sees only the
camera direction). Each prompt i draws its random numbers from a generator seeded with seed + i,
so a prompt's result does not depend on the batch it was sampled in, and equals what the
training sample grids show for the same image, text and seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from contract.cameras import (
    CANONICAL_AZIMUTHS_DEG,
    canonical_order,
    distance_for_fov,
    ring_c2w,
)
from training.examples import caption_text
from training.pipeline import ImageDreamPipeline, sample_views, to_uint8
from training.sampling_settings import SamplingConfig, SamplingSettings


@dataclass
class SamplerConfig(SamplingConfig):
    # FoV of folder prompts (held-out rings use their own); with `framing` it fixes the camera
    # distance recorded with the views
    fov_deg: float = 45.0
    framing: str = "mvdream"  # distance rule of contract.cameras.distance_for_fov
    # SPEC 5 / 6: the suffix appended to each caption (training.examples.caption_text; a prompt with
    # no caption is sent the suffix alone, as the authors' scripts do); None = the model's
    text_suffix: str | None = None
    # False: the model is sent the empty text for every prompt (for models trained with
    # data.use_captions=false); CLIP(TX) still scores against the caption
    use_captions: bool = True
    batch_size: int = 2
    seed: int = 0  # prompt i uses seed + i

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ValueError(f"sampler.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class MultiViewSamples:
    """What the sampler returns for B prompts, views in the canonical order (front first)."""

    views: np.ndarray  # (B, V, H, W, 3) uint8
    latents: Tensor  # (B, V, C, h, w) final scaled latents
    cameras: np.ndarray  # (B, V, 16) network cameras
    c2w: np.ndarray  # (B, V, 4, 4) camera-to-world
    azimuths_deg: np.ndarray  # (V,)
    prompt_images: list[np.ndarray]  # B (H, W, 3) uint8: each prompt as the model saw it
    background: np.ndarray  # (B,) grey each RGBA prompt was composited on (NaN: an RGB prompt)
    settings: SamplingSettings  # what was sampled with (the model's, overridden)
    elevation_deg: np.ndarray  # (B,)
    fov_deg: np.ndarray  # (B,)
    texts: list[str]  # what the model was sent
    seeds: list[int]


class MultiViewSampler:
    def __init__(self, pipe: ImageDreamPipeline, cfg: SamplerConfig | None = None) -> None:
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.cfg = cfg or SamplerConfig()

    @property
    def resolution(self) -> int:
        return self.pipe.resolution

    @property
    def settings(self) -> SamplingSettings:
        """The model's sampling settings with this config's overrides."""
        return self.cfg.resolve(self.pipe.sampling_settings)

    def cameras(self, elevation_deg: float, fov_deg: float) -> np.ndarray:
        """(V, 4, 4) c2w of the sampling cameras for one prompt (the model's view azimuths)."""
        distance = distance_for_fov(fov_deg, self.cfg.framing)
        azimuths = self.pipe.view_azimuths(self.settings.azimuth_start_deg)
        return ring_c2w(azimuths, elevation_deg, distance)

    def texts(self, captions: Sequence[str | None]) -> list[str]:
        if not self.cfg.use_captions:
            return [""] * len(captions)
        suffix = self.cfg.text_suffix
        suffix = self.settings.text_suffix if suffix is None else suffix
        return [caption_text(c or "", suffix) for c in captions]

    def sample(
        self,
        images: Sequence[np.ndarray],
        captions: Sequence[str | None],
        seeds: Sequence[int] | None = None,
        elevations_deg: Sequence[float | None] | None = None,
        fovs_deg: Sequence[float | None] | None = None,
        background: float | None = None,
    ) -> MultiViewSamples:
        """Views of B prompts. images: B (H', W', 4) RGBA or (H', W', 3) RGB uint8 arrays (any
        size: the pipeline prepares them), captions: B captions or None (the suffix is added
        here, see `texts`); per-prompt elevations and FoVs, None (all or one) for the
        settings' elevation and `cfg.fov_deg`; background: a fixed grey for RGBA prompts
        (None: the model's)."""
        n, cfg, settings = len(images), self.cfg, self.settings
        if len(captions) != n:
            raise ValueError(f"{n} images but {len(captions)} captions")
        seeds = [cfg.seed + i for i in range(n)] if seeds is None else list(seeds)
        elevs = _each(elevations_deg, n, settings.elevation_deg)
        fovs = _each(fovs_deg, n, cfg.fov_deg)
        texts = self.texts(captions)
        # evaluation's views are front first (azimuth 0/90/180/270), as the true renders and the
        # report's columns are; a family whose first view is elsewhere (MVDream: 90) is reordered
        order = canonical_order(self.pipe.view_azimuths(settings.azimuth_start_deg))
        views, latents, cams, shown, levels = [], [], [], [], []
        for start in range(0, n, cfg.batch_size):
            sl = slice(start, start + cfg.batch_size)
            out = sample_views(
                self.pipe, list(images[sl]), texts[sl], seeds[sl], cfg, elevs[sl], background
            )
            views.append(to_uint8(out.images))  # (b, V, H, W, 3)
            latents.append(out.latents.cpu())
            cams.append(out.cameras)
            shown += out.prompt_images
            levels.append(out.background)
        c2w = np.stack([self.cameras(e, f) for e, f in zip(elevs, fovs, strict=True)])
        return MultiViewSamples(
            views=np.concatenate(views)[:, order],
            latents=torch.cat(latents)[:, order],
            cameras=np.concatenate(cams)[:, order],
            c2w=c2w[:, order],
            azimuths_deg=np.asarray(CANONICAL_AZIMUTHS_DEG, float),
            prompt_images=shown,
            background=np.concatenate(levels),
            settings=settings,
            elevation_deg=np.asarray(elevs, float),
            fov_deg=np.asarray(fovs, float),
            texts=texts,
            seeds=seeds,
        )


def _each(values: Sequence[float | None] | None, n: int, default: float) -> list[float]:
    """n per-prompt values, the default where one is None."""
    given = [None] * n if values is None else list(values)
    if len(given) != n:
        raise ValueError(f"{len(given)} values for {n} prompts")
    return [default if v is None else float(v) for v in given]
