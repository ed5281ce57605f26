"""Ground-truth metrics of generated views against true renders at the same cameras (beyond the
paper, as in SyncDreamer / Wonder3D on GSO): PSNR, SSIM (torchmetrics) and LPIPS.

All take uint8 images (B, H, W, 3) in matching order and return one value per image (B,);
`psnr_over_all` gives one value for two arrays of any one shape (two renders of a ring, say).
Images are compared in [0, 1] (data range 1); both sides must be composited on the same
background, which `evaluation.prompts` guarantees for held-out rings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)


def _to_float(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float64 in [0, 1]"""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) uint8 images, got {images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double() / 255.0


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"generated {pred.shape} and ground truth {target.shape} differ in shape")


def _psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB over every value of two tensors in [0, 1] (inf when they are equal)."""
    return float(peak_signal_noise_ratio(pred, target, data_range=1.0))


def psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB (inf for identical images)."""
    _check_pair(pred, target)
    p, t = _to_float(pred), _to_float(target)
    return np.array([_psnr(p[i : i + 1], t[i : i + 1]) for i in range(len(p))])


def psnr_over_all(pred: np.ndarray, target: np.ndarray) -> float:
    """One PSNR in dB over every value of two uint8 arrays of any one shape (a whole ring of RGBA
    views, say: the mean squared error of all of them); inf when they are equal."""
    _check_pair(pred, target)
    if pred.dtype != np.uint8 or target.dtype != np.uint8:
        raise ValueError(f"expected uint8 arrays, got {pred.dtype} and {target.dtype}")
    p, t = (torch.from_numpy(x.astype(np.float64) / 255.0) for x in (pred, target))
    return _psnr(p, t)


def ssim(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Gaussian window 11, sigma 1.5; 1 for identical images)."""
    _check_pair(pred, target)
    # float32: the Gaussian-window convolutions are about 10x slower in float64 on a CPU
    p, t = _to_float(pred).float(), _to_float(target).float()
    values = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
    assert isinstance(values, torch.Tensor)  # a tuple only with return_full_image/contrast
    return values.numpy().astype(np.float64)


# AlexNet's pooling stack needs about 64 px; smaller views (the tiny model's 16 px) are upsampled,
# both sides alike, before LPIPS. Full-size views (256 px) are used as they are.
LPIPS_MIN_SIZE = 64


class LPIPS:
    """Per-image LPIPS distance with an `lpips.LPIPS` network (see `models.load_lpips`)."""

    def __init__(self, net: Any, batch_size: int = 16) -> None:
        self.net = net.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        _check_pair(pred, target)
        out = []
        for start in range(0, len(pred), self.batch_size):
            sl = slice(start, start + self.batch_size)
            p = _upsample(_to_float(pred[sl]).float()) * 2.0 - 1.0  # LPIPS expects [-1, 1]
            t = _upsample(_to_float(target[sl]).float()) * 2.0 - 1.0
            out.append(self.net(p, t).flatten().double())
        return torch.cat(out).numpy() if out else np.zeros(0)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> at least LPIPS_MIN_SIZE on the short side (bilinear)."""
    short = min(x.shape[-2:])
    if short >= LPIPS_MIN_SIZE:
        return x
    scale = LPIPS_MIN_SIZE / short
    size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
