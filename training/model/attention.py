"""Attention processors that turn the SD UNet into the multi-view UNet (SPEC 4).

Shape legend: B objects, F frames per object (views, plus the pixel frame if any), L tokens per
frame (h x w), N image-prompt tokens, T text tokens, C channels, D context width.

- `MultiViewSelfAttention` (attn1): tokens of all frames of one object attend to each other:
  (B*F, L, C) -> (B, F*L, C). No new weights; with F = 1 it is exactly SD's self-attention.
- `DecoupledCrossAttention` (attn2): per frame; text attention plus, when image tokens are
  given, lambda x attention over them with the extra `to_k_ip` / `to_v_ip` projections
  (SPEC 4, "Decoupled cross-attention"), summed before the output projection as the released
  model does.

Both read a `FrameInfo` passed as `cross_attention_kwargs={"frames": FrameInfo(...)}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn


@dataclass
class FrameInfo:
    """What the processors need to know about the current batch (a named contract, not a
    slice of the text context)."""

    num_frames: int
    image_tokens: Tensor | None = None  # (B*F, N, D), already repeated per frame
    ip_scale: float = 1.0


def _attend(attn: Attention, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Multi-head SDPA on projected (B, Lq, C) / (B, Lk, C) tensors -> (B, Lq, C)."""
    b = query.shape[0]
    head_dim = key.shape[-1] // attn.heads
    q = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, Lq, d)
    k = key.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    v = value.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)


def _check_plain(attn: Attention) -> None:
    if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_cross:
        raise ValueError("multi-view processors support SD-style Attention layers only")
    if attn.residual_connection or attn.rescale_output_factor != 1.0:
        raise ValueError("multi-view processors support SD-style Attention layers only")


class MultiViewSelfAttention:
    """attn1 processor: 3D self-attention over the frames of one object."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,  # (B*F, L, C)
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        frames: FrameInfo | None = None,
    ) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("self-attention takes no context and no mask")
        f = 1 if frames is None else frames.num_frames
        bf, length, channels = hidden_states.shape
        x = hidden_states.reshape(bf // f, f * length, channels)  # (B, F*L, C)
        out = _attend(attn, attn.to_q(x), attn.to_k(x), attn.to_v(x))
        out = attn.to_out[1](attn.to_out[0](out))
        return out.reshape(bf, length, channels)  # (B*F, L, C)


class DecoupledCrossAttention:
    """attn2 processor: per-frame text cross-attention (+ lambda x image-token attention)."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,  # (B*F, L, C)
        encoder_hidden_states: Tensor | None = None,  # (B*F, T, D)
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        frames: FrameInfo | None = None,
    ) -> Tensor:
        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError("cross-attention needs a text context and takes no mask")
        query = attn.to_q(hidden_states)
        out = _attend(
            attn, query, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        )
        tokens = None if frames is None else frames.image_tokens
        if tokens is not None:
            if not hasattr(attn, "to_k_ip"):
                raise ValueError("image tokens given but this UNet has no to_k_ip/to_v_ip")
            to_k_ip, to_v_ip = cast(nn.Linear, attn.to_k_ip), cast(nn.Linear, attn.to_v_ip)
            out_ip = _attend(attn, query, to_k_ip(tokens), to_v_ip(tokens))
            out = out + frames.ip_scale * out_ip  # type: ignore[union-attr]
        return attn.to_out[1](attn.to_out[0](out))  # (B*F, L, C)


def install_multiview_processors(unet: nn.Module) -> None:
    """Give every attn1 the 3D self-attention and every attn2 the decoupled cross-attention."""
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        _check_plain(module)
        if name.endswith("attn1"):
            module.set_processor(cast(Any, MultiViewSelfAttention()))
        elif name.endswith("attn2"):
            module.set_processor(cast(Any, DecoupledCrossAttention()))
        else:
            raise ValueError(f"unexpected attention layer {name}")


def add_image_projections(unet: nn.Module, image_context_dim: int) -> list[Tensor]:
    """Add bias-free `to_k_ip` / `to_v_ip` (image context -> layer width) to every attn2.
    Returns the new parameters."""
    params: list[Tensor] = []
    for name, module in unet.named_modules():
        if not (isinstance(module, Attention) and name.endswith("attn2")):
            continue
        inner = module.to_k.out_features
        device, dtype = module.to_k.weight.device, module.to_k.weight.dtype
        module.to_k_ip = nn.Linear(image_context_dim, inner, bias=False, device=device, dtype=dtype)
        module.to_v_ip = nn.Linear(image_context_dim, inner, bias=False, device=device, dtype=dtype)
        params += [module.to_k_ip.weight, module.to_v_ip.weight]
    return params


@torch.no_grad()
def init_image_projections_from_text(unet: nn.Module) -> None:
    """Start `to_k_ip` / `to_v_ip` as copies of the text K/V (as IP-Adapter does), so a fresh
    adapter sees the image tokens through the pretrained cross-attention."""
    for module in unet.modules():
        if not (isinstance(module, Attention) and hasattr(module, "to_k_ip")):
            continue
        m: Any = module
        if m.to_k_ip.weight.shape == m.to_k.weight.shape:
            m.to_k_ip.weight.copy_(m.to_k.weight)
            m.to_v_ip.weight.copy_(m.to_v.weight)
