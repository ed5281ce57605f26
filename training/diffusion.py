"""The noise process, in one place (SPEC 4-6): the network never imports this module.

- training: the schedule q(x_t | x_0), timestep sampling, and the epsilon objective on the target
  frames (`Diffusion.loss`; training.train builds the `Diffusion` and hands it to the engine,
  which wraps it for DeepSpeed in `TrainingObjective`);
- the unconditional input of classifier-free guidance (`unconditional_features`), which prompt
  dropout in training and the CFG branch in sampling both call, so a model is guided against
  exactly the input it learned;
- sampling: one batched CFG DDIM loop (`sample_latents`) over the scheduler it is given, which
  `ImageDreamPipeline` (and so `make eval` and the training sample grids) runs with its own.

The sampling defaults of each model family are training.sampling_settings'. The DDIM timesteps
follow the authors' rule for every step count (`ldm_ddim_timesteps`), over the schedule computed
as they compute it (`ldm_alphas_cumprod`).

Shape legend: B objects, V target views (4), C latent channels, h x w latent size, H x W pixels,
T text tokens, D context width.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor, nn

from training.model.config import PIXEL_LATENTS, UNCONDITIONAL_MODES
from training.prompt_image import PromptImages, clip_input, prepare_prompts

if TYPE_CHECKING:
    from training.examples import Batch
    from training.model import Conditioning, ImageDream, ImagePromptFeatures

log = logging.getLogger(__name__)

# SPEC 4: SD 2.1-base schedule, epsilon prediction
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
BETA_SCHEDULE = "scaled_linear"
PREDICTION_TYPE = "epsilon"

# SPEC 5 / 6: what a dropped image prompt becomes, and what the CFG branch feeds.
#   "zeros": zero CLIP image features (before the resampler / global projection) and a zero pixel
#            latent: the authors' released inference (the default).
#   "grey_image": the features of a uniform mid-grey image (CLIP and VAE encodings of it).
GREY_LEVEL = 0.5

# Per-example weight of the epsilon MSE. "none": the plain objective (SPEC 5, the paper's, the
# default). "inv_sqrt_1p_snr": (1 + SNR(t))^-1/2 = sqrt(1 - alpha_bar_t), which lowers the weight
# of nearly clean timesteps; small models trained for minutes (conf/experiment/demo.yaml) learn
# the image content much sooner with it. "v": 1 / alpha_bar_t = 1 + 1 / SNR(t), the epsilon
# prediction scored as a v-prediction (v = sqrt(a) eps - sqrt(1 - a) x0), which puts the most
# weight on the noisiest timesteps, where only the prompt tells what the views hold.
LOSS_WEIGHTINGS = ("none", "inv_sqrt_1p_snr", "v")


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


@dataclass
class ObjectiveConfig:
    """The training objective (`objective` in the training config)."""

    loss_weighting: str = "none"

    def __post_init__(self) -> None:
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(
                f"objective.loss_weighting={self.loss_weighting!r}; expected one of "
                f"{LOSS_WEIGHTINGS}"
            )


def ldm_ddim_timesteps(num_inference_steps: int, num_train_timesteps: int) -> np.ndarray:
    """The authors' DDIM timesteps, descending: `range(0, T, T // S) + 1` (LDM's "uniform"
    discretisation, which their DDIMSampler uses). Where S does not divide T there are more than
    S of them (S = 30: 31 steps, from 991); diffusers' "leading" rule makes exactly S (30 steps
    from 958). Where T - 1 is a multiple of T // S (S = 3, 9, 27, 37, 111, 333) the rule's top
    entry is T itself, past the schedule: their sampler fails there (IndexError on alpha-bar[T]);
    here that step is taken at T - 1, the schedule's last timestep (S = 3: 999, 667, 334, 1),
    so sampling still starts from pure noise."""
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps must lie in [1, {num_train_timesteps}]")
    stride = num_train_timesteps // num_inference_steps
    steps = np.arange(0, num_train_timesteps, stride) + 1
    return np.minimum(steps, num_train_timesteps - 1)[::-1].copy()


def ldm_alphas_cumprod(cfg: NoiseScheduleConfig) -> Tensor:
    """(T,) float64 alpha-bar as the authors compute it: betas from a float64 linspace of their
    square roots ("scaled_linear", LDM's "linear"), the product in float64. diffusers computes
    it in float32, about 1e-6 apart."""
    if cfg.beta_schedule != "scaled_linear":
        raise ValueError(f"only the scaled_linear schedule is defined, got {cfg.beta_schedule!r}")
    betas = (
        torch.linspace(
            cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.num_train_timesteps, dtype=torch.float64
        )
        ** 2
    )
    return torch.cumprod(1.0 - betas, dim=0)


def set_ldm_timesteps(scheduler: Any, num_inference_steps: int, device: torch.device) -> None:
    """Set a sampler's timesteps for `num_inference_steps`. A diffusers DDIMScheduler runs the
    authors' DDIM: their timesteps (`ldm_ddim_timesteps`; its step() goes from t to
    t - T // S, their stride) over their alpha-bar rounded to float32 as their buffers are; the
    last step ends at alpha-bar[0] (set_alpha_to_one=False). Other schedulers keep their own
    spacing."""
    scheduler.set_timesteps(num_inference_steps, device=device)
    ddim: Any = scheduler  # diffusers declares its config and state attributes untyped
    if not isinstance(scheduler, DDIMScheduler) or ddim.config.set_alpha_to_one:
        log.warning(
            "%s: not the authors' DDIM (a DDIMScheduler with set_alpha_to_one=False); it "
            "samples with its own timesteps",
            type(scheduler).__name__,
        )
        return
    config = ddim.config
    schedule = NoiseScheduleConfig(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
    )
    if schedule.beta_schedule != "scaled_linear":
        log.warning("beta_schedule %r: sampling with diffusers' timesteps", schedule.beta_schedule)
        return
    steps = ldm_ddim_timesteps(num_inference_steps, schedule.num_train_timesteps)
    ddim.timesteps = torch.from_numpy(steps).to(device)
    alphas = ldm_alphas_cumprod(schedule).to(torch.float32)
    ddim.alphas_cumprod = alphas
    ddim.final_alpha_cumprod = alphas[0]


def build_training_scheduler(cfg: NoiseScheduleConfig | None = None) -> DDPMScheduler:
    """DDPM scheduler over the SPEC 4 betas (its alphas_cumprod define q(x_t | x_0))."""
    return DDPMScheduler(**(cfg or NoiseScheduleConfig()).scheduler_kwargs())


def build_sampling_scheduler(cfg: NoiseScheduleConfig | None = None) -> DDIMScheduler:
    """DDIM sampler over the same betas (SD 2.1-base settings: leading spacing, offset 1)."""
    return DDIMScheduler(
        **(cfg or NoiseScheduleConfig()).scheduler_kwargs(),
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


# ---------------------------------------------------------------------------------------------
# The unconditional input (one definition for prompt dropout and for CFG)


def check_unconditional_mode(mode: str) -> str:
    if mode not in UNCONDITIONAL_MODES:
        raise ValueError(f"unconditional mode {mode!r}; expected one of {UNCONDITIONAL_MODES}")
    return mode


def with_clip_input(model: ImageDream, prompts: PromptImages) -> PromptImages:
    """`prompts` with their CLIP input when the controller reads CLIP features and it is not
    there yet (training batches carry the composites; the CLIP size is the model's)."""
    encoder = model.image_encoder
    if prompts.clip is not None or not model.controller.needs.image_encoder or encoder is None:
        return prompts
    clip = torch.stack([clip_input(rgb, encoder.image_size) for rgb in prompts.rgb])
    return PromptImages(rgb=prompts.rgb, vae=prompts.vae, clip=clip)


def encode_prompts(
    model: ImageDream, prompts: PromptImages, latent_noise: Tensor | None = None
) -> ImagePromptFeatures:
    """The model's features of prepared prompts (training.prompt_image); the pixel latent is a
    posterior sample with `latent_noise` (B, C, h, w), the mean without. Under bf16/fp16 the
    inputs go in as fp32 inside autocast, which casts them for the half-precision layers."""
    prompts = with_clip_input(model, prompts)
    dtype = next(model.unet.parameters()).dtype
    with torch.autocast(model.device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model.encode_image_prompt(prompts, latent_noise)


def unconditional_features(model: ImageDream, batch_size: int) -> ImagePromptFeatures:
    """The image prompt of an example without one (SPEC 5 and 6), for `batch_size` examples, in
    the mode the model was trained with (`model.cfg.unconditional`). Only the fields the
    controller needs are set."""
    from training.model import ImagePromptFeatures

    mode = check_unconditional_mode(model.cfg.unconditional)
    cfg, needs, device = model.cfg, model.controller.needs, model.device
    if mode == "grey_image":
        size = int(cfg.vae.sample_size)
        grey = np.full((size, size, 3), round(GREY_LEVEL * 255), dtype=np.uint8)
        clip_size = None if model.image_encoder is None else model.image_encoder.image_size
        prompts = prepare_prompts([grey] * batch_size, size, clip_size)
        return encode_prompts(model, prompts)  # the posterior mean: a fixed input
    image, unet = cfg.image_encoder, cfg.unet
    dtype = next(model.unet.parameters()).dtype  # what the (mixed-precision) controller takes
    latent = (batch_size, unet.latent_channels, unet.sample_size, unet.sample_size)
    tokens = (batch_size, image.num_tokens, image.hidden_size)
    return ImagePromptFeatures(
        global_embed=torch.zeros(batch_size, image.projection_dim, device=device, dtype=dtype)
        if needs.global_embed
        else None,
        local_tokens=torch.zeros(tokens, device=device, dtype=dtype)
        if needs.local_tokens
        else None,
        latent=torch.zeros(latent, device=device, dtype=dtype) if needs.latent else None,
    )


def drop_prompts(
    model: ImageDream, features: ImagePromptFeatures, dropped: Tensor
) -> ImagePromptFeatures:
    """Prompt dropout: rows where `dropped` (B,) is True get `unconditional_features`."""
    if not bool(dropped.any()):
        return features
    null = unconditional_features(model, len(dropped))
    return features.where(dropped.to(model.device), null)


def latent_noise_shape(
    model: ImageDream, batch_size: int, pixel_latent: str | None = None
) -> tuple[int, ...] | None:
    """(B, C, h, w) of the pixel latent's posterior noise, or None when none is drawn (no pixel
    frame, or a "mean" pixel latent; None = the model's `pixel_latent` setting)."""
    mode = model.cfg.pixel_latent if pixel_latent is None else pixel_latent
    if mode not in PIXEL_LATENTS:
        raise ValueError(f"pixel_latent={mode!r}; expected one of {PIXEL_LATENTS}")
    if not model.controller.needs.latent or mode != "sample":
        return None
    unet = model.cfg.unet
    return (batch_size, unet.latent_channels, unet.sample_size, unet.sample_size)


def training_conditioning(
    model: ImageDream, prompts: PromptImages, dropped: Tensor, generator: torch.Generator
) -> Conditioning:
    """What training hands the UNet for B prepared prompts with prompt dropout `dropped` (B,)
    bool: dropped rows get `unconditional_features`. The pixel latent is prepared as sampling
    prepares it (a posterior sample unless `pixel_latent="mean"`), its noise drawn from the
    training generator."""
    shape = latent_noise_shape(model, len(prompts))
    noise = None
    if shape is not None:
        noise = torch.randn(shape, generator=generator, device=generator.device)
    features = encode_prompts(model, prompts, noise)
    return model.condition(drop_prompts(model, features, dropped))


# ---------------------------------------------------------------------------------------------
# The process


class Diffusion:
    """The SPEC 4 noise process: training objective and the CFG DDIM sampler over one schedule."""

    def __init__(
        self, cfg: NoiseScheduleConfig | None = None, objective: ObjectiveConfig | None = None
    ) -> None:
        self.cfg = cfg or NoiseScheduleConfig()
        self.objective = objective or ObjectiveConfig()
        # float64 as the authors compute it, and outside any module's buffers, so mixed
        # precision never rounds it
        self.alphas_cumprod: Tensor = ldm_alphas_cumprod(self.cfg)

    @property
    def num_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """q(x_t | x_0) for (B, ...) latents at timesteps t (B,)."""
        a = self.alphas_cumprod.to(x0.device)[t].to(torch.float32)  # (B,)
        a = a.reshape(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def sample_timesteps(self, b: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """(B,) one timestep per object, shared by its views (and the pixel frame). Drawn where
        the generator lives, then moved (a CPU generator gives the same draws on any device)."""
        t = torch.randint(0, self.num_timesteps, (b,), generator=generator, device=generator.device)
        return t.to(device)

    def loss(self, model: ImageDream, batch: Batch, generator: torch.Generator) -> Tensor:
        """Epsilon MSE on the V target frames of a batch (SPEC 5): its targets (B, V, 3, H, W)
        in [-1, 1] encoded to latents, noised at one timestep per object; the model conditioned
        on its captions ("" for a dropped text), cameras (B, V, 16) and prepared prompts
        (training.prompt_image; `prompt_dropped` rows get the unconditional input). The pixel
        controller's prompt frame is excluded by the model, which returns eps for the targets
        only. Every random draw comes from `generator`."""
        device = model.device
        dtype = next(model.unet.parameters()).dtype
        latents = model.encode_latents(batch.targets.to(device, dtype), generator=generator)
        latents = latents.float()  # (B, V, C, h, w)
        text = model.encode_text(batch.captions)  # (B, T, D)
        # controllers run with grad
        cond = training_conditioning(model, batch.prompt, batch.prompt_dropped, generator)
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(device)
        t = self.sample_timesteps(len(batch), generator, device)
        noisy = self.add_noise(latents, noise, t)  # (B, V, C, h, w)
        eps = model(noisy.to(dtype), t, text, batch.cameras.to(device, dtype), cond)
        if self.objective.loss_weighting == "none":
            return F.mse_loss(eps.float(), noise)
        per_example = (eps.float() - noise).square().flatten(1).mean(dim=1)  # (B,)
        return (per_example * self.loss_weights(t)).mean()

    def loss_weights(self, t: Tensor) -> Tensor:
        """(B,) weights of the epsilon MSE at timesteps t (see LOSS_WEIGHTINGS)."""
        if self.objective.loss_weighting == "none":
            return torch.ones(t.shape, device=t.device)
        a = self.alphas_cumprod.to(t.device)[t]
        if self.objective.loss_weighting == "v":
            return (1.0 / a).to(torch.float32)  # 1 + 1 / SNR
        return (1.0 - a).sqrt().to(torch.float32)  # (1 + SNR)^-1/2, SNR = a / (1 - a)


@torch.no_grad()
def sample_latents(
    model: ImageDream,
    scheduler: Any,  # a diffusers DDIM-like scheduler, its timesteps set (set_ldm_timesteps)
    prompts: PromptImages | None,  # B prepared prompts; None for a text-only model
    texts: list[str],  # B prompts, as the model is to see them
    negative_texts: list[str],  # B negative texts
    cameras: Tensor,  # (B, V, 16) network cameras
    noise: Tensor,  # (B, V, C, h, w) initial standard normal noise
    guidance_scale: float,
    eta: float,
    # (B, C, h, w) posterior noise of the pixel latent (None: the posterior mean)
    latent_noise: Tensor | None = None,
    # only drawn from when eta > 0; a list of B generators keeps each prompt independent
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """DDIM with one CFG scale over text and image (SPEC 6) -> final (B, V, C, h, w) latents.

    The unconditional branch gets the negative text and `unconditional_features` (zero image
    features, zero pixel latent by default); both branches go through the network in one
    batched forward pass. guidance_scale 1 is the conditional model alone (one branch).
    """
    device = model.device
    dtype = next(model.unet.parameters()).dtype
    b = len(texts)
    guided = guidance_scale != 1.0
    if prompts is None:
        from training.model import ImagePromptFeatures

        if model.controller.needs.image_encoder or model.controller.needs.latent:
            raise ValueError(f"controller {model.controller_name!r} needs image prompts")
        features = ImagePromptFeatures()
    else:
        features = encode_prompts(model, prompts, latent_noise)
    cond = _as_dtype(model.condition(features), dtype)
    context = model.encode_text(texts)  # (B, T, D)
    if guided:
        from training.model import Conditioning

        uncond = _as_dtype(model.condition(unconditional_features(model, b)), dtype)
        cond = Conditioning.cat([cond, uncond])  # (2B, ...): one CFG forward pass
        context = torch.cat([context, model.encode_text(negative_texts)])  # (2B, T, D)
    branches = 2 if guided else 1
    cams = cameras.to(device, dtype).repeat(branches, 1, 1)  # (2B or B, V, 16)
    latents = noise.to(device, torch.float32) * scheduler.init_noise_sigma  # (B, V, C, h, w)
    for i, t in enumerate(scheduler.timesteps):
        timesteps = torch.full((branches * b,), int(t), device=device, dtype=torch.long)
        x = latents.repeat(branches, 1, 1, 1, 1).to(dtype)
        eps = model(x, timesteps, context.to(dtype), cams, cond).float()
        if guided:
            eps_cond, eps_uncond = eps.chunk(2)  # (B, V, C, h, w) each
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        latents = scheduler.step(eps, t, latents, eta=eta, generator=generator).prev_sample
        if callback is not None:
            callback(i, latents)
    return latents


def _as_dtype(cond: Conditioning, dtype: torch.dtype) -> Conditioning:
    """The conditioning's tensors in the UNet's dtype (encoders may run in another precision)."""
    from training.model import Conditioning

    return Conditioning(
        None if cond.image_tokens is None else cond.image_tokens.to(dtype),
        None if cond.extra_frame is None else cond.extra_frame.to(dtype),
        cond.ip_scale,
    )


class TrainingObjective(nn.Module):
    """What DeepSpeed wraps (it needs one module holding the trained parameters, whose forward
    returns the loss): the model and the diffusion whose `loss` trains it."""

    def __init__(self, model: ImageDream, diffusion: Diffusion) -> None:
        super().__init__()
        self.model: ImageDream = model
        self.diffusion = diffusion

    def forward(self, batch: Batch, generator: torch.Generator) -> Tensor:
        return self.diffusion.loss(self.model, batch, generator)
