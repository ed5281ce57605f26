"""The released file: the whole state of the authors' `LatentDiffusionInterface`, both ways out.

`released_state_dict` / `save_original_checkpoint` write, for the model's family (MVDream for
controller none, ImageDream otherwise), the UNet (convert.py's names), the open_clip CLIP
(convert_clip.py), the VAE in LDM names and the noise-schedule buffers, checked key by key and
shape by shape against `released_layout`, so that MVDream's strict loader accepts the file and
ImageDream's lenient one drops nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from contract.atomic import atomic_write
from training.diffusion import NoiseScheduleConfig
from training.model.config import ControllerConfig, ModelConfig
from training.model.controllers import CONTROLLERS
from training.model.convert import ConversionError, ours_to_original, vae_to_ldm
from training.model.convert_clip import (
    image_tower_to_open_clip,
    open_clip_layout,
    text_encoder_to_open_clip,
)
from training.model.denoiser import MultiViewUNet
from training.model.encoders import build_vae
from training.model.imagedream import ImageDream


@dataclass(frozen=True)
class ReleasedFamily:
    """Where one family's `LatentDiffusionInterface` keeps each part: its attribute names, which
    prefix the checkpoint's keys (the UNet is `model.diffusion_model.` in both)."""

    name: str
    clip: str  # the open_clip CLIP of their FrozenOpenCLIPEmbedder
    vae: str  # the LDM AutoencoderKL


# MVDream loads its checkpoint with strict=True, ImageDream with strict=False (where a wrong key
# would be dropped silently): both are held to the exact layout by `check_released_layout`.
MVDREAM = ReleasedFamily("MVDream", clip="cond_stage_model.model.", vae="first_stage_model.")
IMAGEDREAM = ReleasedFamily("ImageDream", clip="clip_model.model.", vae="vae_model.")

# the buffers the authors' `register_schedule` stores (persistent, so a strict load needs them)
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def released_family(controller: str) -> ReleasedFamily:
    """`none` is MVDream (text only); every image-prompt variant is ImageDream."""
    return MVDREAM if controller == "none" else IMAGEDREAM


def ldm_schedule_buffers(cfg: NoiseScheduleConfig | None = None) -> dict[str, Tensor]:
    """The noise schedule (SPEC 4) as the LDM code stores it beside the model, computed as it
    does: betas in float64 (diffusers' "scaled_linear" is LDM's "linear", linear in sqrt(beta);
    diffusers' "linear" is LDM's "sqrt_linear"), the products in float64 with numpy, then
    float32. The posterior terms are those of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7)."""
    cfg = cfg or NoiseScheduleConfig()
    n = cfg.num_train_timesteps
    if cfg.beta_schedule == "scaled_linear":
        root = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n, dtype=torch.float64)
        betas = (root**2).numpy()
    elif cfg.beta_schedule == "linear":
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float64).numpy()
    else:
        raise ValueError(f"beta_schedule {cfg.beta_schedule!r} has no LDM counterpart here")
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)  # (N,)
    abar_prev = np.append(1.0, abar[:-1])  # (N,): abar_{t-1}, with abar_{-1} = 1
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    values = {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
        "log_one_minus_alphas_cumprod": np.log(1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1),
        "posterior_variance": posterior_variance,
        # the variance is 0 at t = 0: its log is clipped
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    }
    assert tuple(values) == SCHEDULE_BUFFERS
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def _check_first_stage(cfg: ModelConfig) -> None:
    """Only an SD (KL) VAE has a place in the released layout. The weight-free pixel-unshuffle
    first stage of the small demo models has no LDM counterpart, and a UNet trained on folded
    pixels is no SD-latent model: the export refuses it (it always has; this says why)."""
    if cfg.vae.kind != "kl":
        raise ValueError(
            f"model.vae.kind={cfg.vae.kind!r} has no released layout: the authors' classes hold "
            "an LDM AutoencoderKL; export this model as a pipeline folder only"
        )


def released_layout(
    model: ImageDream, schedule: NoiseScheduleConfig | None = None
) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the authors' class for this model (see `released_layout_of`)."""
    return released_layout_of(model.cfg, model.controller.cfg, schedule)


def released_layout_of(
    model_cfg: ModelConfig,
    controller_cfg: ControllerConfig,
    schedule: NoiseScheduleConfig | None = None,
) -> dict[str, tuple[int, ...]]:
    """Every key and shape the authors' `LatentDiffusionInterface` has for these configs, read
    off on the meta device (nothing allocated, any size): the UNet through the name table, the
    open_clip CLIP from open_clip's own class (text tower one block deeper than ours; `visual.*`
    for controllers with an image encoder), the VAE in LDM names, the schedule buffers.

    Our `pixel` controller has no image encoder, so nothing is written for `visual.*`: the
    authors' ImageDream class builds its ViT-H-14 with pretrained weights and loads
    strict=False, so it keeps those. A pixel-unshuffle first stage has no layout (ValueError)."""
    _check_first_stage(model_cfg)
    family = released_family(controller_cfg.name)
    denoiser = MultiViewUNet.from_configs(model_cfg, controller_cfg, meta=True)
    unet = ours_to_original(denoiser.state_dict(), model_cfg.unet)
    layout = {k: tuple(v.shape) for k, v in unet.items()}
    with_visual = CONTROLLERS[controller_cfg.name].needs.image_encoder
    clip = open_clip_layout(model_cfg.text_encoder, model_cfg.image_encoder, with_visual)
    layout |= {family.clip + k: shape for k, shape in clip.items()}
    with torch.device("meta"):
        vae = build_vae(model_cfg.vae, None)
    layout |= {family.vae + k: tuple(v.shape) for k, v in vae_to_ldm(vae.state_dict()).items()}
    n = (schedule or NoiseScheduleConfig()).num_train_timesteps
    return layout | {k: (n,) for k in SCHEDULE_BUFFERS}


def check_released_layout(
    state: Mapping[str, Tensor], layout: Mapping[str, tuple[int, ...]], what: str
) -> None:
    """Raise ConversionError unless `state` has exactly the layout's keys and shapes."""
    missing = sorted(set(layout) - set(state))
    unexpected = sorted(set(state) - set(layout))
    wrong = [
        f"{k} is {tuple(state[k].shape)}, the layout {layout[k]}"
        for k in sorted(set(state) & set(layout))
        if tuple(state[k].shape) != layout[k]
    ]
    if missing or unexpected or wrong:
        raise ConversionError(what, missing, unexpected, wrong)


def _cpu(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def released_state_dict(
    model: ImageDream, schedule: NoiseScheduleConfig | None = None
) -> dict[str, Tensor]:
    """Our model in the full layout of the authors' class for its family, a flat dict:

    - `model.diffusion_model.*`: the UNet (and the image-prompt resampler, `image_embed.*`);
    - the open_clip CLIP (`convert_clip`): under `cond_stage_model.model.` for MVDream
      (controller none, text tower only, as MVDream deletes `visual`), `clip_model.model.` for
      ImageDream (text tower, plus `visual.*` when the model has an image encoder). The text
      block and projection SD 2.1 dropped are zeros (convert_clip.ZERO_FILLED_TEXT_KEYS);
    - the VAE in LDM names under `first_stage_model.` (MVDream) or `vae_model.` (ImageDream);
    - the 12 schedule buffers of `register_schedule`, unprefixed (`ldm_schedule_buffers`)."""
    _check_first_stage(model.cfg)
    family = released_family(model.controller_name)
    out = ours_to_original(_cpu(model.denoiser_state_dict()), model.cfg.unet)
    clip = text_encoder_to_open_clip(model.text_encoder, model.cfg.image_encoder.projection_dim)
    if model.image_encoder is not None:
        clip |= image_tower_to_open_clip(model.image_encoder)
    out |= {family.clip + k: v for k, v in _cpu(clip).items()}
    out |= {family.vae + k: v for k, v in vae_to_ldm(_cpu(model.vae.state_dict())).items()}
    return out | ldm_schedule_buffers(schedule)


def save_original_checkpoint(
    model: ImageDream, path: str | Path, schedule: NoiseScheduleConfig | None = None
) -> Path:
    """Write `released_state_dict(model)` with torch.save, flat as the released .pt files are
    (the authors' loaders pass torch.load's result to `load_state_dict`), after checking it
    against `released_layout(model)`: ConversionError names every missing, unexpected or
    wrongly shaped key, since ImageDream's strict=False loader would drop them silently."""
    path = Path(path)
    state = released_state_dict(model, schedule)
    family = released_family(model.controller_name).name
    check_released_layout(state, released_layout(model, schedule), f"ours -> {family} layout")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))
    return path
