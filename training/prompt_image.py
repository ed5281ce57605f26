"""Image-prompt preparation, in one place (SPEC 6, "Prompt preparation").

    RGBA prompt -> composite on a uniform grey (`composite_on_grey`)
                -> CLIP input: open_clip's own evaluation transform of the full-resolution
                   composite (short side to the CLIP size, bicubic, centre crop, OpenAI mean/std)
                -> VAE input: the composite resized to the model's resolution (bilinear), [-1, 1]

`ImageDreamPipeline` (and through it `make eval` and the training sample grids) and training's
own prompt frame (`training.data`) all call `prepare_prompts`, so one prompt becomes the same
tensors wherever it goes. This is the authors' demo (their scripts/demo.py and ldm/util.py):
their `add_random_background` composites in float32 and truncates to uint8, their CLIP embedder
runs open_clip's transform on the PIL image, and their VAE input is torchvision's
Resize((S, S)) -> ToTensor -> Normalize(0.5, 0.5) of the same image. Nothing here recentres the
object: that is an evaluation-protocol setting (evaluation.prompts), named in the report.

Which grey is `PromptImageConfig`, recorded in an exported pipeline (what its model was trained
with: data.grey_min / grey_max) and overridable per call. Whether the pixel latent is a posterior
sample is the model's `pixel_latent` setting (training.model.config.ModelConfig).

Shape legend: B prompts, H x W an image's own size, S the model's resolution, s the CLIP size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from training.model.config import CLIP_IMAGE_MEAN, CLIP_IMAGE_STD


@dataclass
class PromptImageConfig:
    """Which grey an RGBA prompt is composited on (recorded in an exported pipeline).

    The background grey is drawn uniformly from [background_min, background_max] (0 black,
    1 white) for each prompt, from the caller's generator; equal bounds give a fixed level. The
    default is the authors' demo and our training default (SPEC 5): uniform in [0, 1]."""

    background_min: float = 0.0
    background_max: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.background_min <= self.background_max <= 1.0:
            raise ValueError(
                f"background_min={self.background_min}, background_max={self.background_max}: "
                "need 0 <= min <= max <= 1"
            )

    @property
    def fixed_background(self) -> float | None:
        return self.background_min if self.background_min == self.background_max else None

    def with_background(self, level: float | None) -> PromptImageConfig:
        """The same settings with a fixed grey level (None: unchanged)."""
        if level is None:
            return self
        return PromptImageConfig(float(level), float(level))

    def draw_background(self, generator: torch.Generator | None) -> float:
        """One grey level from the caller's generator (no draw for a fixed level)."""
        fixed = self.fixed_background
        if fixed is not None:
            return fixed
        device = generator.device if generator is not None else torch.device("cpu")
        u = float(torch.rand((), generator=generator, device=device, dtype=torch.float64))
        return self.background_min + (self.background_max - self.background_min) * u


def composite_on_grey(rgba: np.ndarray, level: float) -> np.ndarray:
    """(..., H, W, 4) uint8 straight alpha over a uniform grey `level` in [0, 1]
    -> (..., H, W, 3) uint8. In float32, `rgb * a + 255 level (1 - a)`, then truncated (not
    rounded) to uint8, as the authors' add_random_background does, so that the same RGBA and
    level give their exact bytes."""
    if rgba.dtype != np.uint8 or rgba.shape[-1] != 4:
        raise ValueError(f"expected (..., H, W, 4) uint8 RGBA, got {rgba.dtype} {rgba.shape}")
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    out = rgba[..., :3] * alpha + np.float32(level * 255.0) * (1.0 - alpha)
    return out.astype(np.uint8)


def as_uint8_image(image: Any) -> np.ndarray:
    """A PIL image or an (H, W, 3|4) uint8 array -> (H, W, 3) RGB or (H, W, 4) RGBA uint8.
    A PIL image with any transparency (RGBA, LA, PA, a palette's transparent index) is RGBA."""
    if isinstance(image, Image.Image):
        transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if transparent else "RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise TypeError(
            f"image arrays must be (H, W, 3) or (H, W, 4) uint8, got {array.dtype} {array.shape}"
        )
    return array


@dataclass
class PromptImages:
    """B prepared prompts: what the model's encoders take."""

    rgb: list[np.ndarray]  # B composites (H, W, 3) uint8 at their own size: what was shown
    vae: Tensor  # (B, 3, S, S) in [-1, 1]
    clip: Tensor | None  # (B, 3, s, s) normalised CLIP input; None when no CLIP size was asked

    def __len__(self) -> int:
        return len(self.rgb)


def clip_input(rgb: np.ndarray, size: int) -> Tensor:
    """(H, W, 3) uint8 -> (3, s, s): open_clip's evaluation transform of the whole image."""
    import open_clip

    transform = open_clip.image_transform(
        size, is_train=False, mean=CLIP_IMAGE_MEAN, std=CLIP_IMAGE_STD
    )
    out: Tensor = transform(Image.fromarray(rgb))
    return out


def vae_input(rgb: np.ndarray, size: int) -> Tensor:
    """(H, W, 3) uint8 -> (3, S, S) in [-1, 1]: torchvision's Resize((S, S)) (bilinear, on the
    PIL image), ToTensor, Normalize(0.5, 0.5)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = Image.fromarray(rgb)
    if image.size != (size, size):
        image = TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR)
    x = TF.to_tensor(image)  # (3, S, S) in [0, 1]
    return TF.normalize(x, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def composite_prompts(images: Sequence[np.ndarray], levels: Sequence[float]) -> list[np.ndarray]:
    """RGBA images composited on their grey level; RGB images pass unchanged (level unused)."""
    if len(images) != len(levels):
        raise ValueError(f"{len(images)} images but {len(levels)} background levels")
    return [
        composite_on_grey(im, lv) if im.shape[-1] == 4 else im
        for im, lv in zip(images, levels, strict=True)
    ]


def prepare_prompts(
    rgb: Sequence[np.ndarray], resolution: int, clip_size: int | None
) -> PromptImages:
    """Composited (H, W, 3) uint8 prompts -> the VAE input at `resolution` and, when
    `clip_size` is given, the CLIP input."""
    for im in rgb:
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
            raise ValueError(f"prepare_prompts takes (H, W, 3) uint8, got {im.dtype} {im.shape}")
    vae = torch.stack([vae_input(im, resolution) for im in rgb])  # (B, 3, S, S)
    clip = None
    if clip_size is not None:
        clip = torch.stack([clip_input(im, clip_size) for im in rgb])  # (B, 3, s, s)
    return PromptImages(rgb=list(rgb), vae=vae, clip=clip)
