"""training/diffusion.py: both schedulers from the SPEC 4 constants."""

from __future__ import annotations

import torch

from training.diffusion import build_sampling_scheduler, build_training_scheduler


def test_training_and_sampling_share_the_spec_schedule() -> None:
    train, sample = build_training_scheduler(), build_sampling_scheduler()
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    torch.testing.assert_close(train.betas, betas)
    torch.testing.assert_close(sample.alphas_cumprod, train.alphas_cumprod, rtol=0, atol=0)
    assert train.config.prediction_type == sample.config.prediction_type == "epsilon"
    assert train.config.num_train_timesteps == 1000


def test_ddim_50_steps() -> None:
    sample = build_sampling_scheduler()
    sample.set_timesteps(50)
    t = sample.timesteps
    assert len(t) == 50 and t[0] == 981 and t[-1] == 1
