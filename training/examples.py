"""From one ring to one training example, and examples to a batch: the SPEC 3 and 5 rule.

One ring gives one example (SPEC 3, 5): the 4 canonical target views (azimuth 0/90/180/270, i.e.
indices 0, V/4, V/2, 3V/4), an image prompt drawn from the views with azimuth in [-90, 90], both
ends included (V/2 + 1 candidates, symmetric about the front; both index rules are
contract.cameras.target_views and prompt_candidates), the targets' network cameras, the
text (`caption_text`: caption + ", 3d asset"; an object without a caption gets the suffix alone,
as the authors' scripts send it), every RGBA view composited on one random grey level per
example and resized as training.prompt_image prepares a prompt for sampling, and prompt / text
dropout.

The stream that reads rings from shards, and resumes exactly, is training.data.

Shapes: B examples, V views in a ring, H x W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contract.cameras import CANONICAL_AZIMUTHS_DEG, network_camera, prompt_candidates
from contract.cameras import target_views as ring_target_views
from contract.schema import META_EXT, RingMeta, RingRecord, SchemaError, decode_sample
from training.config import DataConfig
from training.prompt_image import PromptImages, composite_on_grey, vae_input

NUM_TARGETS = len(CANONICAL_AZIMUTHS_DEG)  # azimuth 0, 90, 180, 270 (SPEC 3)


# ---------------------------------------------------------------------------------------------
# One example from one ring


def target_views(num_views: int) -> list[int]:
    """contract.cameras.target_views of a ring read from a shard: a ring without views at
    0/90/180/270 is bad data (SchemaError)."""
    try:
        return ring_target_views(num_views)
    except ValueError as exc:
        raise SchemaError(str(exc)) from exc


def caption_text(caption: str, suffix: str) -> str:
    """The text the model sees for a caption (SPEC 5: caption + ", 3d asset"). An object without
    a caption gets the suffix alone, as the authors' scripts send an empty text (`text +
    suffix`); a dropped text is the empty one. Evaluation sends the same."""
    return caption.strip() + suffix


@dataclass
class Example:
    """One training example; images in [-1, 1], channels first."""

    key: str
    targets: np.ndarray  # (4, 3, H, W) float32
    prompt: np.ndarray  # (3, H, W) float32: the VAE input of the prompt
    prompt_rgb: np.ndarray  # (H', W', 3) uint8: the composited prompt at the render's size
    cameras: np.ndarray  # (4, 16) float32, contract.cameras.network_camera
    caption: str
    prompt_view: int  # ring index the prompt came from (the image is unused when dropped)
    elevation_deg: float  # the ring's elevation (the targets' cameras)
    grey: float  # background level in [0, 1]
    prompt_dropped: bool
    text_dropped: bool


def to_network(rgba: np.ndarray, grey: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 4) uint8 renders -> their composites on `grey` (N, H, W, 3) uint8 and the
    network images (N, 3, size, size) in [-1, 1]: training.prompt_image's preparation, so the
    prompt frame is made exactly as sampling makes it (and the targets the same way)."""
    rgb = composite_on_grey(rgba, grey)  # (N, H, W, 3)
    pixels = np.stack([vae_input(im, size).numpy() for im in rgb])  # (N, 3, S, S)
    return rgb, pixels


class RingDropped(Exception):
    """A well-formed ring that a data setting leaves out (not bad data)."""


def make_example(sample: dict[str, Any], rng: np.random.Generator, cfg: DataConfig) -> Example:
    """Decode one raw WebDataset sample into an Example; raises SchemaError on bad data.

    The random draws happen in a fixed order (prompt view, grey, prompt dropout, text dropout),
    so an example is a pure function of the sample and the RNG's seed.
    """
    key = str(sample.get("__key__", "?"))
    if META_EXT not in sample:
        raise SchemaError(f"sample {key}: no {META_EXT} member")
    meta = RingMeta.from_json(sample[META_EXT], key)
    if cfg.max_border_fraction is not None and meta.border_fraction:
        worst = max(meta.border_fraction)
        if worst > cfg.max_border_fraction:
            raise RingDropped(
                f"border fraction {worst:.2f} > data.max_border_fraction={cfg.max_border_fraction}"
                " (the object fills the frame)"
            )
    num_views = len(meta.azimuths_deg)
    if cfg.views_per_ring is not None and num_views != cfg.views_per_ring:
        raise SchemaError(
            f"sample {key}: ring has {num_views} views, data.views_per_ring={cfg.views_per_ring}"
        )
    targets = target_views(num_views)
    candidates = prompt_candidates(meta.azimuths_deg)
    if not candidates:
        raise SchemaError(f"sample {key}: no view with azimuth in [-90, 90]")
    prompt_view = candidates[int(rng.integers(len(candidates)))]
    grey = float(rng.uniform(cfg.grey_min, cfg.grey_max))
    prompt_dropped = bool(rng.random() < cfg.prompt_dropout)
    # the text goes with a dropped prompt (SPEC 5); text dropout alone is its own setting
    text_dropped = bool(rng.random() < cfg.text_dropout) or prompt_dropped

    record: RingRecord = decode_sample(sample, views=[*targets, prompt_view])
    wanted = np.asarray(meta.azimuths_deg, dtype=np.float64)[targets]
    offset = (wanted - np.asarray(CANONICAL_AZIMUTHS_DEG) + 180.0) % 360.0 - 180.0
    if not np.allclose(offset, 0, atol=1e-3):
        raise SchemaError(f"sample {key}: target azimuths {wanted.tolist()} are not 0/90/180/270")
    rgb, pixels = to_network(record.images, grey, cfg.image_size)  # (5, H, W, 3), (5, 3, S, S)
    use_text = cfg.use_captions and not text_dropped
    caption = caption_text(meta.caption, cfg.caption_suffix) if use_text else ""
    return Example(
        key=key,
        targets=pixels[:NUM_TARGETS],
        prompt=pixels[NUM_TARGETS],
        prompt_rgb=rgb[NUM_TARGETS],
        cameras=network_camera(record.c2w[:NUM_TARGETS]),
        caption=caption,
        prompt_view=prompt_view,
        elevation_deg=float(meta.elevation_deg),
        grey=grey,
        prompt_dropped=prompt_dropped,
        text_dropped=text_dropped,
    )


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    """A micro-batch of examples: what the loss reads (targets, prompt, cameras, captions,
    prompt_dropped) and what the sample grids show beside it. The stream's bookkeeping travels
    apart (training.data.StreamProgress)."""

    targets: Tensor  # (B, 4, 3, H, W) in [-1, 1]
    prompt: PromptImages  # composites and VAE input; the CLIP input is made where it is read
    cameras: Tensor  # (B, 4, 16)
    captions: list[str]  # "" for a dropped text
    prompt_dropped: Tensor  # (B,) bool: the model gets the unconditional image input
    text_dropped: Tensor  # (B,) bool
    elevation_deg: list[float]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def collate(examples: Sequence[Example]) -> Batch:
    return Batch(
        targets=torch.from_numpy(np.stack([e.targets for e in examples])),
        prompt=PromptImages(
            rgb=[e.prompt_rgb for e in examples],
            vae=torch.from_numpy(np.stack([e.prompt for e in examples])),
            clip=None,
        ),
        cameras=torch.from_numpy(np.stack([e.cameras for e in examples])),
        captions=[e.caption for e in examples],
        prompt_dropped=torch.tensor([e.prompt_dropped for e in examples]),
        text_dropped=torch.tensor([e.text_dropped for e in examples]),
        elevation_deg=[e.elevation_deg for e in examples],
        keys=[e.key for e in examples],
    )
