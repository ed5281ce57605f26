"""The noise process, in one place (SPEC 4-6): the network never imports this module.

One `Diffusion` object serves both sides, as DiT's single diffusion object does:

- training: the schedule q(x_t | x_0), timestep sampling, and the epsilon objective on the target
  frames (`Diffusion.loss`, wrapped for DeepSpeed by `TrainingObjective`);
- the unconditional input of classifier-free guidance (`unconditional_features`), which prompt
  dropout in training and the CFG branch in sampling both call, so a model is guided against
  exactly the input it learned;
- sampling: one batched CFG DDIM loop (`Diffusion.sample`), which `ImageDreamPipeline` (and so
  `make eval` and the training sample grids) runs.

Each sampling default (steps, eta, CFG scale, negative text, elevation) is written once, in
`SamplingConfig`.

Shape legend: B objects, V target views (4), C latent channels, h x w latent size, H x W pixels,
T text tokens, D context width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor, nn

from training.model.config import UNCONDITIONAL_MODES

if TYPE_CHECKING:
    from training.model import Conditioning, ImageDream, ImagePromptFeatures

# SPEC 4: SD 2.1-base schedule, epsilon prediction
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
BETA_SCHEDULE = "scaled_linear"
PREDICTION_TYPE = "epsilon"

# SPEC 6: the authors' demo sends this negative text with every prompt (sic: two spaces after
# "pixelated,"); their released weights sample as they do only with it.
NEGATIVE_PROMPT = (
    "uniform low no texture ugly, boring, bad anatomy, blurry, pixelated,  obscure, "
    "unnatural colors, poor lighting, dull, and unclear."
)

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


@dataclass
class SamplingConfig:
    """SPEC 6: the sampling defaults, written only here (the pipeline, `make eval` and the
    training sample grids read them from this class)."""

    num_inference_steps: int = 50
    guidance_scale: float = 5.0  # one scale over text and image
    eta: float = 0.0  # deterministic DDIM
    negative_prompt: str = NEGATIVE_PROMPT  # "" for an empty negative text
    elevation_deg: float = 5.0

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")


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


def encode_prompt_images(model: ImageDream, images01: Tensor) -> ImagePromptFeatures:
    """The model's prompt features of (B, 3, H, W) images in [0, 1]. Under bf16/fp16 the image
    goes in as fp32 inside autocast: CLIP's antialiased bicubic resize has no bf16 kernel on the
    CPU, and autocast casts the image for the (half-precision) encoder layers."""
    dtype = next(model.unet.parameters()).dtype
    images = images01.float().to(model.device)
    with torch.autocast(model.device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model.encode_image_prompt(images)


def unconditional_features(model: ImageDream, batch_size: int) -> ImagePromptFeatures:
    """The image prompt of an example without one (SPEC 5 and 6), for `batch_size` examples, in
    the mode the model was trained with (`model.cfg.unconditional`). Only the fields the
    controller needs are set."""
    from training.model import ImagePromptFeatures

    mode = check_unconditional_mode(model.cfg.unconditional)
    cfg, needs, device = model.cfg, model.controller.needs, model.device
    if mode == "grey_image":
        size = int(cfg.vae.sample_size)
        grey = torch.full((batch_size, 3, size, size), GREY_LEVEL, device=device)
        return encode_prompt_images(model, grey)
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


def training_conditioning(model: ImageDream, prompt: Tensor, dropped: Tensor) -> Conditioning:
    """What training hands the UNet for (B, 3, H, W) prompts in [-1, 1] with prompt dropout
    `dropped` (B,) bool: dropped rows get `unconditional_features`."""
    features = encode_prompt_images(model, (prompt.float() + 1) / 2)
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
        scheduler: Any = build_training_scheduler(self.cfg)
        # float64 and outside any module's buffers, so mixed precision never rounds it
        self.alphas_cumprod: Tensor = scheduler.alphas_cumprod.to(torch.float64)

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

    def loss(
        self,
        model: ImageDream,
        targets: Tensor,  # (B, V, 3, H, W) in [-1, 1]
        prompt: Tensor,  # (B, 3, H, W) in [-1, 1]
        cameras: Tensor,  # (B, V, 16)
        captions: list[str],  # "" for dropped text
        prompt_dropped: Tensor,  # (B,) bool
        generator: torch.Generator,
    ) -> Tensor:
        """Epsilon MSE on the V target frames (SPEC 5). The pixel controller's prompt frame is
        excluded by the model, which returns eps for the targets only."""
        device = model.device
        dtype = next(model.unet.parameters()).dtype
        b = targets.shape[0]
        latents = model.encode_latents(targets.to(device, dtype), generator=generator)
        latents = latents.float()  # (B, V, C, h, w)
        text = model.encode_text(captions)  # (B, T, D)
        cond = training_conditioning(model, prompt, prompt_dropped)  # controllers run with grad
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(device)
        t = self.sample_timesteps(b, generator, device)
        noisy = self.add_noise(latents, noise, t)  # (B, V, C, h, w)
        eps = model(noisy.to(dtype), t, text, cameras.to(device, dtype), cond)
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
    def sample(
        self,
        model: ImageDream,
        images01: Tensor,  # (B, 3, H, W) in [0, 1], at the model's resolution
        texts: list[str],  # B prompts, as the model is to see them
        negative_texts: list[str],  # B negative texts
        cameras: Tensor,  # (B, V, 16) network cameras
        noise: Tensor,  # (B, V, C, h, w) initial standard normal noise
        num_inference_steps: int,
        guidance_scale: float,
        eta: float,
        # only drawn from when eta > 0; a list of B generators keeps each prompt independent
        generator: torch.Generator | list[torch.Generator] | None = None,
        scheduler: Any = None,  # a diffusers DDIM-like scheduler; None: build_sampling_scheduler
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
        cond = model.condition(encode_prompt_images(model, images01))
        cond = _as_dtype(cond, dtype)
        context = model.encode_text(texts)  # (B, T, D)
        if guided:
            from training.model import Conditioning

            uncond = _as_dtype(model.condition(unconditional_features(model, b)), dtype)
            cond = Conditioning.cat([cond, uncond])  # (2B, ...): one CFG forward pass
            context = torch.cat([context, model.encode_text(negative_texts)])  # (2B, T, D)
        branches = 2 if guided else 1
        cams = cameras.to(device, dtype).repeat(branches, 1, 1)  # (2B or B, V, 16)
        if scheduler is None:
            scheduler = build_sampling_scheduler(self.cfg)
        scheduler.set_timesteps(num_inference_steps)
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
    """The module DeepSpeed wraps: the model and its `Diffusion.loss`."""

    def __init__(self, model: ImageDream, diffusion: Diffusion) -> None:
        super().__init__()
        self.model: ImageDream = model
        self.diffusion = diffusion

    def forward(
        self,
        targets: Tensor,  # (B, V, 3, H, W) in [-1, 1]
        prompt: Tensor,  # (B, 3, H, W) in [-1, 1]
        cameras: Tensor,  # (B, V, 16)
        captions: list[str],
        prompt_dropped: Tensor,  # (B,) bool
        generator: torch.Generator,
    ) -> Tensor:
        return self.diffusion.loss(
            self.model, targets, prompt, cameras, captions, prompt_dropped, generator
        )
