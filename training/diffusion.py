"""Noise schedules (SPEC 4-6), separate from the network: the UNet never imports this.

One set of constants builds both the training scheduler (DDPM: add noise at a random step)
and the sampler (DDIM, 50 steps, eta 0), so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DDIMScheduler, DDPMScheduler

# SPEC 4: SD 2.1-base schedule, epsilon prediction
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
BETA_SCHEDULE = "scaled_linear"
PREDICTION_TYPE = "epsilon"
# SPEC 6: sampling
NUM_INFERENCE_STEPS = 50
DDIM_ETA = 0.0


@dataclass
class NoiseScheduleConfig:
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    beta_start: float = BETA_START
    beta_end: float = BETA_END
    beta_schedule: str = BETA_SCHEDULE
    prediction_type: str = PREDICTION_TYPE

    def scheduler_kwargs(self) -> dict[str, object]:
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
            prediction_type=self.prediction_type,
            clip_sample=False,
        )


def build_training_scheduler(cfg: NoiseScheduleConfig | None = None) -> DDPMScheduler:
    """DDPM scheduler for `add_noise` and timestep sampling during training."""
    return DDPMScheduler(**(cfg or NoiseScheduleConfig()).scheduler_kwargs())


def build_sampling_scheduler(cfg: NoiseScheduleConfig | None = None) -> DDIMScheduler:
    """DDIM sampler over the same betas (SD 2.1-base settings: leading spacing, offset 1)."""
    return DDIMScheduler(
        **(cfg or NoiseScheduleConfig()).scheduler_kwargs(),
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
