"""What an evaluation produces, as small dataclasses shared by evaluate.py and report.py.

Shapes: V views, H x W pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.metrics.stats import Summary

# metric key -> (display name, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "qis": ("QIS", True),
    "clip_tx": ("CLIP(TX)", True),
    "clip_im": ("CLIP(IM)", True),
    # ground truth, novel views (azimuth 90/180/270): the views the model has to invent
    "psnr": ("PSNR novel", True),
    "ssim": ("SSIM novel", True),
    "lpips": ("LPIPS novel", False),
    # ground truth, view 0 (azimuth 0): for pixel variants nearly the prompt itself
    "psnr_front": ("PSNR front", True),
    "ssim_front": ("SSIM front", True),
    "lpips_front": ("LPIPS front", False),
    # baselines on the novel views (evaluation.baselines): what a model must beat
    "psnr_copy": ("PSNR baseline: prompt copied", True),
    "psnr_mean_view": ("PSNR baseline: mean training view", True),
}


@dataclass
class PromptResult:
    name: str
    text: str | None
    source: str
    prompt_image: np.ndarray  # (H, W, 3) uint8 as given to the model
    views: np.ndarray  # (V, H, W, 3) uint8 generated
    gt_views: np.ndarray | None  # (V, H, W, 3) uint8 true renders, held-out rings only
    scores: dict[str, list[float]] = field(default_factory=dict)  # metric -> one value per view
    seed: int = 0
    elevation_deg: float = 0.0
    fov_deg: float = 0.0
    leaked: bool = False
    background_kept: bool = False  # no alpha, no matting model: evaluated with its background
    background_removed: bool = False  # alpha from the matting model (prompt.remove_background)


@dataclass
class RunResult:
    """One evaluated model (a checkpoint or a variant)."""

    label: str
    checkpoint: str
    controller: str
    prompts: list[PromptResult]
    summary: dict[str, Summary]
    seconds_per_prompt: float
    azimuths_deg: list[float]
    info: dict[str, Any] = field(default_factory=dict)  # sampler settings, model notes

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "checkpoint": self.checkpoint,
            "controller": self.controller,
            "seconds_per_prompt": self.seconds_per_prompt,
            "azimuths_deg": self.azimuths_deg,
            "summary": {k: s.to_dict() for k, s in self.summary.items()},
            "prompts": [
                {
                    "name": p.name,
                    "text": p.text,
                    "source": p.source,
                    "seed": p.seed,
                    "elevation_deg": p.elevation_deg,
                    "fov_deg": p.fov_deg,
                    "leaked": p.leaked,
                    "background_kept": p.background_kept,
                    "background_removed": p.background_removed,
                    "has_ground_truth": p.gt_views is not None,
                    "scores": p.scores,
                }
                for p in self.prompts
            ],
            "info": self.info,
        }
