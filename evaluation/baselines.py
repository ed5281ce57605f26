"""Baselines a multi-view model must beat on ground truth, and the learning check built on them.

Two trivial "models" that use no network (issue: the demo must learn from the image prompt):
- copy: the prompt image itself, repeated at every novel view;
- mean view: the per-pixel mean of every view of the training rings, composited on the grey
  each prompt was composited on (what a model that ignores its prompt converges to).

Scored like the model's novel views (azimuth 90, 180, 270) against the true renders; the
learning check is the model's mean novel-view PSNR minus the better baseline's.

Shapes: V views, H x W pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from evaluation.metrics import psnr
from training.prompt_image import composite_on_grey

log = logging.getLogger(__name__)


@dataclass
class MeanView:
    """The mean training view on any grey: compositing is linear in the grey level, so the means
    of the views composited on black and on white give it at every level."""

    on_black: np.ndarray  # (H, W, 3) float64
    on_white: np.ndarray  # (H, W, 3) float64

    def on(self, level: float) -> np.ndarray:
        """(H, W, 3) uint8 on the grey `level` in [0, 1] (NaN, an RGB prompt's: mid-grey, as
        `evaluation.prompts.as_sampled` composites such a prompt's true views)."""
        level = 0.5 if np.isnan(level) else level
        mean = self.on_black + level * (self.on_white - self.on_black)
        return np.clip(np.round(mean), 0, 255).astype(np.uint8)


def mean_training_view(
    shards: Sequence[str],
    size: int,
    limit: int = 2000,
    allow_incomplete: bool = False,
) -> MeanView | None:
    """The mean of up to `limit` training rings' views at (size, size); None without training
    shards."""
    if not shards:
        return None
    from contract.shard_reader import read_rings

    totals = [np.zeros((size, size, 3), dtype=np.float64) for _ in range(2)]
    count = 0
    for i, rec in enumerate(read_rings(list(shards), allow_incomplete=allow_incomplete)):
        if i >= limit:
            log.info("mean training view: the first %d rings of %s (limit reached)", limit, shards)
            break
        for rgba in rec.images:
            for total, level in zip(totals, (0.0, 1.0), strict=True):
                rgb = composite_on_grey(rgba, level)
                if rgb.shape[:2] != (size, size):
                    resized = Image.fromarray(rgb).resize((size, size), Image.Resampling.BOX)
                    rgb = np.asarray(resized)
                total += rgb
            count += 1
    if count == 0:
        return None
    return MeanView(totals[0] / count, totals[1] / count)


def baseline_scores(
    prompt_image: np.ndarray, gt_novel: np.ndarray, mean_view: np.ndarray | None
) -> dict[str, list[float]]:
    """Per-view PSNR of both baselines on the novel views: gt_novel (V-1, H, W, 3) uint8."""
    size = gt_novel.shape[1]
    prompt = prompt_image
    if prompt.shape[:2] != (size, size):
        prompt = np.asarray(Image.fromarray(prompt).resize((size, size), Image.Resampling.BOX))
    out = {"psnr_copy": [float(x) for x in psnr(np.stack([prompt] * len(gt_novel)), gt_novel)]}
    if mean_view is not None:
        repeated = np.stack([mean_view] * len(gt_novel))
        out["psnr_mean_view"] = [float(x) for x in psnr(repeated, gt_novel)]
    return out


@dataclass
class LearningCheck:
    """Novel-view PSNR of the model against the better baseline (dB)."""

    model_psnr: float
    copy_psnr: float
    mean_view_psnr: float | None
    margin: float  # model - the better baseline
    bar: float  # the margin a model must reach to pass
    n_prompts: int

    @property
    def passed(self) -> bool:
        return self.margin >= self.bar

    def line(self) -> str:
        mean = "n/a" if self.mean_view_psnr is None else f"{self.mean_view_psnr:.2f}"
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"learning check ({self.n_prompts} prompts with ground truth): novel-view PSNR "
            f"{self.model_psnr:.2f} dB; baselines: prompt copied {self.copy_psnr:.2f} dB, mean "
            f"training view {mean} dB; margin {self.margin:+.2f} dB (bar {self.bar:+.1f}): "
            f"{verdict}"
        )

    def to_dict(self) -> dict[str, float | int | bool | None]:
        return {**asdict(self), "passed": self.passed}


def learning_check(scores: Sequence[dict[str, list[float]]], bar: float) -> LearningCheck | None:
    """From per-prompt scores holding psnr (novel views) and the baselines; None without them."""
    rows = [s for s in scores if "psnr" in s and "psnr_copy" in s]
    if not rows:
        return None

    def mean(key: str) -> float | None:
        values = [v for s in rows if key in s for v in s[key]]
        return float(np.mean(values)) if values else None

    model, copy, mean_view = mean("psnr"), mean("psnr_copy"), mean("psnr_mean_view")
    assert model is not None and copy is not None
    best = max(copy, mean_view if mean_view is not None else -np.inf)
    return LearningCheck(model, copy, mean_view, model - best, bar, len(rows))
