"""The paper's metrics (QIS, CLIP(TX), CLIP(IM)), ground-truth metrics (PSNR, SSIM, LPIPS), the
networks behind them (loaded from local paths) and their summary statistics."""

from evaluation.metrics.clip import ClipScorer
from evaluation.metrics.groundtruth import LPIPS, psnr, psnr_over_all, ssim
from evaluation.metrics.models import ModelInfo, load_clip, load_inception, load_lpips
from evaluation.metrics.qis import QIS, qis_from_probs
from evaluation.metrics.stats import Summary, summarize

__all__ = [
    "LPIPS",
    "QIS",
    "ClipScorer",
    "ModelInfo",
    "Summary",
    "load_clip",
    "load_inception",
    "load_lpips",
    "psnr",
    "psnr_over_all",
    "qis_from_probs",
    "ssim",
    "summarize",
]
