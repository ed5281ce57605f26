"""Conversion between the released checkpoints' key names and ours, both ways (SPEC 4).

Released MVDream / ImageDream checkpoints store the UNet under `model.diffusion_model.` with the
original LDM names (`input_blocks.4.1.transformer_blocks.0.attn2.to_k_ip.weight`,
`camera_embed.0.weight`, `image_embed.layers.0.0.to_kv.weight`, ...). Ours are the diffusers
names under `unet.` plus the controller under `controller.`. The name table is derived from
the UNet config (levels, res-blocks per level, which levels have attention), so the same code
converts the full-size model and the tiny test model.

The export (`released_state_dict`, `save_original_checkpoint`) writes the whole state of the
authors' `LatentDiffusionInterface` for the model's family (MVDream for controller none,
ImageDream otherwise): UNet, open_clip CLIP (convert_clip.py), VAE and schedule buffers, checked
key by key and shape by shape against `released_layout`, so that MVDream's strict loader accepts
it and ImageDream's lenient one drops nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from data_pipeline.atomic import atomic_write
from training.diffusion import NoiseScheduleConfig
from training.model.attention import init_image_projections_from_text
from training.model.config import ControllerConfig, ModelConfig, UNetConfig
from training.model.controllers import CONTROLLERS
from training.model.convert_clip import (
    image_tower_to_open_clip,
    open_clip_layout,
    text_encoder_to_open_clip,
)
from training.model.denoiser import MultiViewUNet
from training.model.encoders import build_vae
from training.model.imagedream import ImageDream
from training.model.weights import load_checkpoint

ORIGINAL_PREFIX = "model.diffusion_model."

# diffusers ResnetBlock2D <-> LDM ResBlock
_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}


class ConversionError(KeyError):
    """The checkpoint does not fit the model (or an export its layout); the message lists
    missing, unexpected and wrongly shaped keys."""

    def __init__(
        self,
        what: str,
        missing: list[str],
        unexpected: list[str],
        wrong_shape: list[str] | None = None,
    ) -> None:
        wrong_shape = wrong_shape or []
        head = f"{what}: {len(missing)} missing, {len(unexpected)} unexpected keys"
        lines = [head + (f", {len(wrong_shape)} of the wrong shape" if wrong_shape else "")]
        lines += [f"  missing:    {k}" for k in missing[:50]]
        lines += [f"  unexpected: {k}" for k in unexpected[:50]]
        lines += [f"  shape:      {k}" for k in wrong_shape[:50]]
        if max(len(missing), len(unexpected), len(wrong_shape)) > 50:
            lines.append("  ... (lists cut at 50)")
        super().__init__("\n".join(lines))
        self.missing, self.unexpected, self.wrong_shape = missing, unexpected, wrong_shape

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _module_pairs(cfg: UNetConfig) -> list[tuple[str, str, dict[str, str]]]:
    """(our prefix, original prefix, suffix renames) for every UNet module with weights."""
    plain: dict[str, str] = {}
    pairs = [
        ("unet.conv_in.", "input_blocks.0.0.", plain),
        ("unet.time_embedding.linear_1.", "time_embed.0.", plain),
        ("unet.time_embedding.linear_2.", "time_embed.2.", plain),
        ("unet.class_embedding.linear_1.", "camera_embed.0.", plain),
        ("unet.class_embedding.linear_2.", "camera_embed.2.", plain),
        ("unet.mid_block.resnets.0.", "middle_block.0.", _RESNET),
        ("unet.mid_block.attentions.0.", "middle_block.1.", plain),
        ("unet.mid_block.resnets.1.", "middle_block.2.", _RESNET),
        ("unet.conv_norm_out.", "out.0.", plain),
        ("unet.conv_out.", "out.2.", plain),
    ]
    levels, per_level = len(cfg.block_out_channels), cfg.layers_per_block
    idx = 0
    for level, attn in enumerate(cfg.attention_levels):
        for j in range(per_level):
            idx += 1
            pairs.append(
                (f"unet.down_blocks.{level}.resnets.{j}.", f"input_blocks.{idx}.0.", _RESNET)
            )
            if attn:
                pairs.append(
                    (f"unet.down_blocks.{level}.attentions.{j}.", f"input_blocks.{idx}.1.", plain)
                )
        if level < levels - 1:
            idx += 1
            pairs.append(
                (
                    f"unet.down_blocks.{level}.downsamplers.0.conv.",
                    f"input_blocks.{idx}.0.op.",
                    plain,
                )
            )
    idx = 0
    for up, attn in enumerate(reversed(cfg.attention_levels)):
        for j in range(per_level + 1):
            pairs.append((f"unet.up_blocks.{up}.resnets.{j}.", f"output_blocks.{idx}.0.", _RESNET))
            if attn:
                pairs.append(
                    (f"unet.up_blocks.{up}.attentions.{j}.", f"output_blocks.{idx}.1.", plain)
                )
            if j == per_level and up < levels - 1:
                sub = 2 if attn else 1
                pairs.append(
                    (
                        f"unet.up_blocks.{up}.upsamplers.0.conv.",
                        f"output_blocks.{idx}.{sub}.conv.",
                        plain,
                    )
                )
            idx += 1
    return pairs


_RESAMPLER_LAYER = re.compile(r"^layers\.(\d+)\.(attn|ff)\.(.*)$")


def _controller_name(rest: str) -> str:
    """Our controller key (after `controller.<projector>.`) -> original `image_embed.` suffix."""
    m = _RESAMPLER_LAYER.match(rest)
    if m:
        return f"layers.{m.group(1)}.{0 if m.group(2) == 'attn' else 1}.{m.group(3)}"
    return rest


def original_name(key: str, pairs: list[tuple[str, str, dict[str, str]]]) -> str:
    """Our denoiser key -> original key (without the checkpoint prefix)."""
    if key.startswith("controller."):
        _, _projector, rest = key.split(
            ".", 2
        )  # controller.resampler.<rest> / controller.projection.<rest>
        return "image_embed." + _controller_name(rest)
    for ours, orig, renames in pairs:
        if key.startswith(ours):
            rest = key[len(ours) :]
            for a, b in renames.items():
                if rest.startswith(a):
                    rest = b + rest[len(a) :]
                    break
            return orig + rest
    raise KeyError(f"no original name for {key}")


def name_table(our_keys: Iterable[str], cfg: UNetConfig) -> dict[str, str]:
    """ours -> original, for every key of our denoiser state dict."""
    pairs = _module_pairs(cfg)
    table = {k: original_name(k, pairs) for k in our_keys}
    if len(set(table.values())) != len(table):
        raise RuntimeError("name table is not one-to-one")
    return table


def original_to_ours(
    state: Mapping[str, Tensor],
    our_keys: Iterable[str],
    cfg: UNetConfig,
    prefix: str = ORIGINAL_PREFIX,
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an original checkpoint's UNet tensors (keys under `prefix`; others, e.g. the VAE,
    are ignored). Returns (our state, our keys missing from the checkpoint); raises
    ConversionError for keys of the checkpoint that have no place in the model."""
    table = name_table(our_keys, cfg)
    inverse = {orig: ours for ours, orig in table.items()}
    source = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not source:
        raise ConversionError(f"no key under prefix {prefix!r}", [], sorted(state)[:50])
    unexpected = sorted(k for k in source if k not in inverse)
    missing = sorted(ours for ours, orig in table.items() if orig not in source)
    if unexpected:
        raise ConversionError("original -> ours", [table[k] for k in missing], unexpected)
    return {inverse[k]: v for k, v in source.items()}, missing


def ours_to_original(
    state: Mapping[str, Tensor], cfg: UNetConfig, prefix: str = ORIGINAL_PREFIX
) -> dict[str, Tensor]:
    """Our denoiser state -> the released checkpoint's names (under `prefix`)."""
    table = name_table(state.keys(), cfg)
    return {prefix + table[k]: v for k, v in state.items()}


def _is_adapter(key: str) -> bool:
    return key.startswith("controller.") or ".to_k_ip." in key or ".to_v_ip." in key


def denoiser_from_original(
    model_cfg: ModelConfig, controller_cfg: ControllerConfig, path: str | Path
) -> MultiViewUNet:
    """A released checkpoint as our denoiser, streamed: the modules are built on the meta device
    and adopt the (memory-mapped) tensors of the file, so peak memory stays near the file's size.

    All keys must match, except that a checkpoint with no adapter at all (MVDream, the paper's
    init for every variant, SPEC 5) may load into an image-prompt model: its adapters then start
    fresh (to_k_ip/to_v_ip from the text K/V, the controller at its random init)."""
    denoiser = MultiViewUNet.from_configs(model_cfg, controller_cfg, meta=True)
    own = denoiser.state_dict()  # meta tensors: names, shapes and dtypes only
    ours, missing = original_to_ours(load_checkpoint(path), own.keys(), model_cfg.unet)
    adapters = sorted(k for k in own if _is_adapter(k))
    if missing and missing != adapters:
        table = name_table(own.keys(), model_cfg.unet)
        raise ConversionError(f"original -> ours ({path})", [table[k] for k in missing], [])
    for k, v in ours.items():
        if v.shape != own[k].shape:
            raise ConversionError(
                f"original -> ours ({path}): {k} has shape {tuple(v.shape)}, the model "
                f"{tuple(own[k].shape)}",
                [],
                [],
            )
    # float32 masters; an fp32 file's tensors are adopted as they are (no copy)
    state = {k: v if v.dtype == own[k].dtype else v.to(own[k].dtype) for k, v in ours.items()}
    if missing:
        state |= _fresh_adapters(denoiser, own, missing)
    denoiser.assign_state_dict(state, str(path))
    if missing:
        init_image_projections_from_text(denoiser.unet)
    return denoiser


def _fresh_adapters(
    denoiser: MultiViewUNet, own: Mapping[str, Tensor], missing: list[str]
) -> dict[str, Tensor]:
    """Freshly initialised tensors for the adapter keys a checkpoint lacks."""
    from training.model.controllers import build_controller

    cfg = denoiser.typed_model_config
    controller = build_controller(
        denoiser.typed_controller_config,
        cfg.unet.cross_attention_dim,
        cfg.image_encoder.projection_dim,
        cfg.image_encoder.hidden_size,
    )
    fresh = {f"controller.{k}": v for k, v in controller.state_dict().items()}
    out: dict[str, Tensor] = {}
    for k in missing:
        if k in fresh:
            out[k] = fresh[k]
        else:  # to_k_ip / to_v_ip: nn.Linear's default init (then copied from the text K/V)
            w = torch.empty(own[k].shape, dtype=own[k].dtype)
            torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            out[k] = w
    return out


def load_original_checkpoint(model: ImageDream, path: str | Path) -> None:
    """Load a released checkpoint into an existing model (its denoiser is replaced, on the old
    one's device and dtype; a pipeline built over the old one keeps the old one)."""
    old = next(model.denoiser.parameters())
    denoiser = denoiser_from_original(model.cfg, model.controller.cfg, path)
    model.denoiser = denoiser.to(device=old.device, dtype=old.dtype)
    model.set_trainable()


# ---------------------------------------------------------------------------------------------
# The released layout: the authors' whole `LatentDiffusionInterface`, not only its UNet


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


# ---------------------------------------------------------------------------------------------
# The VAE: diffusers AutoencoderKL names <-> LDM (CompVis) AutoencoderKL names

_VAE_RESNET = {"conv_shortcut.": "nin_shortcut."}
_VAE_ATTN = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}
_VAE_TOP = {"conv_norm_out.": "norm_out."}


def _vae_key_to_ldm(key: str, num_levels: int) -> str:
    part, rest = key.split(".", 1)  # encoder / decoder / quant_conv / post_quant_conv
    if part not in ("encoder", "decoder"):
        return key
    for a, b in _VAE_TOP.items():
        if rest.startswith(a):
            return f"{part}.{b}{rest[len(a) :]}"
    m = re.match(r"^(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)$", rest)
    if m:
        kind, level, sub, j, tail = m.groups()
        level_i = int(level) if kind == "down" else num_levels - 1 - int(level)
        if sub == "resnets":
            for a, b in _VAE_RESNET.items():
                tail = b + tail[len(a) :] if tail.startswith(a) else tail
            return f"{part}.{kind}.{level_i}.block.{j}.{tail}"
        return f"{part}.{kind}.{level_i}.{kind}sample.{tail}"  # downsample / upsample
    m = re.match(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", rest)
    if m:
        sub, j, tail = m.groups()
        if sub == "resnets":
            return f"{part}.mid.block_{int(j) + 1}.{tail}"
        for a, b in _VAE_ATTN.items():
            if tail.startswith(a):
                return f"{part}.mid.attn_1.{b}{tail[len(a) :]}"
    return f"{part}.{rest}"  # conv_in, conv_out


def vae_to_ldm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers AutoencoderKL state -> LDM names; the mid attention's linear q/k/v/proj become
    1x1 convolutions, as LDM stores them."""
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down_blocks."))
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        name = _vae_key_to_ldm(k, levels)
        if ".mid.attn_1." in name and name.endswith(".weight") and v.dim() == 2:
            v = v[:, :, None, None]  # (C, C) -> (C, C, 1, 1)
        out[name] = v
    if len(out) != len(state):
        raise RuntimeError("VAE name table is not one-to-one")
    return out
