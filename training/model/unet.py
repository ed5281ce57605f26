"""The multi-view UNet (SPEC 4): diffusers' SD 2.1-base UNet2DConditionModel with 3D
self-attention, the camera MLP and optional decoupled image cross-attention.

Shape legend: B objects, F frames per object, C latent channels, h x w latent size,
T text tokens, N image tokens, D context width.

The camera MLP Linear(16, 1280) - SiLU - Linear(1280, 1280) is diffusers' "projection" class
embedding, which UNet2DConditionModel adds to the timestep embedding (so it reaches the
res-blocks only, as in MVDream). The UNet never sees the noise schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from training.model.attention import (
    FrameInfo,
    add_image_projections,
    install_multiview_processors,
)
from training.model.config import CAMERA_DIM, UNetConfig
from training.model.weights import load_state_file


def diffusers_unet_kwargs(cfg: UNetConfig) -> dict[str, Any]:
    """UNet2DConditionModel constructor arguments for our config (SD 2.1-base at default)."""
    levels = len(cfg.block_out_channels)
    down = ["CrossAttnDownBlock2D" if attn else "DownBlock2D" for attn in cfg.attention_levels]
    up = ["CrossAttnUpBlock2D" if attn else "UpBlock2D" for attn in reversed(cfg.attention_levels)]
    return dict(
        sample_size=cfg.sample_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        cross_attention_dim=cfg.cross_attention_dim,
        # diffusers' historical naming: for SD2 "attention_head_dim" holds the head *count*
        attention_head_dim=[c // cfg.head_dim for c in cfg.block_out_channels][:levels],
        use_linear_projection=True,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
        # camera MLP (SPEC 4): Linear(16, 4*C0) - SiLU - Linear(4*C0, 4*C0), added to temb
        class_embed_type="projection",
        projection_class_embeddings_input_dim=CAMERA_DIM,
    )


def build_multiview_unet(cfg: UNetConfig, image_context_dim: int | None) -> nn.Module:
    """Random-init multi-view UNet; `image_context_dim` adds to_k_ip/to_v_ip of that input width."""
    unet: Any = UNet2DConditionModel(**diffusers_unet_kwargs(cfg))
    if image_context_dim is not None:
        add_image_projections(unet, image_context_dim)
    install_multiview_processors(unet)
    return unet


def load_sd21_unet(unet: Any, sd21_path: str | Path, zero_init_camera: bool) -> None:
    """Load SD 2.1-base UNet weights (diffusers folder) into the multi-view UNet. Only the new
    parts (camera MLP, image K/V) may be missing; anything else is an error."""
    state = load_state_file(Path(sd21_path) / "unet", "diffusion_pytorch_model")
    missing, unexpected = unet.load_state_dict(state, strict=False)
    allowed = ("class_embedding.", "to_k_ip", "to_v_ip")
    bad_missing = [k for k in missing if not any(a in k for a in allowed)]
    if bad_missing or unexpected:
        raise KeyError(
            f"SD 2.1 UNet at {sd21_path} does not match: missing {bad_missing[:20]} "
            f"({len(bad_missing)}), unexpected {unexpected[:20]} ({len(unexpected)})"
        )
    if zero_init_camera:
        # a fresh camera MLP then leaves SD's behaviour unchanged at step 0
        torch.nn.init.zeros_(unet.class_embedding.linear_2.weight)
        torch.nn.init.zeros_(unet.class_embedding.linear_2.bias)


def multiview_forward(
    unet: nn.Module,  # built by build_multiview_unet
    sample: Tensor,  # (B, F, C, h, w)
    timesteps: Tensor,  # (B,)
    text_context: Tensor,  # (B, T, D)
    cameras: Tensor,  # (B, F, 16)
    image_tokens: Tensor | None = None,  # (B, N, D)
    ip_scale: float = 1.0,
) -> Tensor:
    """Run the UNet on all frames of each object jointly; returns (B, F, C, h, w)."""
    b, f = sample.shape[:2]
    x = sample.reshape(b * f, *sample.shape[2:])  # (B*F, C, h, w)
    t = timesteps.reshape(b).repeat_interleave(f)  # (B*F,)
    context = text_context.repeat_interleave(f, dim=0)  # (B*F, T, D)
    cams = cameras.reshape(b * f, CAMERA_DIM).to(x.dtype)  # (B*F, 16)
    tokens = None if image_tokens is None else image_tokens.repeat_interleave(f, dim=0)
    frames = FrameInfo(num_frames=f, image_tokens=tokens, ip_scale=ip_scale)
    out = unet(
        x,
        t,
        encoder_hidden_states=context,
        class_labels=cams,
        cross_attention_kwargs={"frames": frames},
        return_dict=False,
    )[0]
    return out.reshape(b, f, *out.shape[1:])  # (B, F, C, h, w)
