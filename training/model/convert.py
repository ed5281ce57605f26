"""Conversion between the released checkpoints' key names and ours, both ways (SPEC 4).

Released MVDream / ImageDream checkpoints store the UNet under `model.diffusion_model.` with the
original LDM names (`input_blocks.4.1.transformer_blocks.0.attn2.to_k_ip.weight`,
`camera_embed.0.weight`, `image_embed.layers.0.0.to_kv.weight`, ...). Ours are the diffusers
names under `unet.` plus the controller under `controller.`. The name table is derived from
the UNet config (levels, res-blocks per level, which levels have attention), so the same code
converts the full-size model and the tiny test model.

The export to that layout, the whole file and not only its UNet: released_layout.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from training.model.attention import init_image_projections_from_text
from training.model.config import ControllerConfig, ModelConfig, UNetConfig
from training.model.controllers import build_controller
from training.model.denoiser import MultiViewUNet
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
