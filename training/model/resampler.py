"""Perceiver resampler of the local controller (SPEC 4; IP-Adapter-Plus design).

Shape legend: B batch, M image-encoder tokens (257 for ViT-H-14), Q learned queries (16),
E image-encoder width (1280), C resampler width (1024), D output width (context, 1024).

Each layer: the queries attend to [image tokens ; queries] (keys/values from both, as in
Flamingo's resampler), then a bias-free x4 feed-forward; both residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)  # image tokens
        self.norm2 = nn.LayerNorm(dim)  # queries
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: Tensor, queries: Tensor) -> Tensor:
        media, queries = self.norm1(media), self.norm2(queries)  # (B, M, C), (B, Q, C)
        b, q_len, _ = queries.shape
        q = self.to_q(queries)  # (B, Q, inner)
        k, v = self.to_kv(torch.cat([media, queries], dim=1)).chunk(2, dim=-1)  # (B, M+Q, inner)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, Q, head_dim)
        return self.to_out(out.transpose(1, 2).reshape(b, q_len, -1))  # (B, Q, C)


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    # indices 0, 1, 3 carry weights (LayerNorm, Linear, GELU, Linear): the released layout
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class ResamplerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, ff_mult: int) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim, heads, head_dim)
        self.ff = feed_forward(dim, ff_mult)

    def forward(self, media: Tensor, queries: Tensor) -> Tensor:
        queries = queries + self.attn(media, queries)
        return queries + self.ff(queries)


class Resampler(nn.Module):
    """(B, M, E) image tokens -> (B, Q, D) LayerNorm-ed context tokens."""

    def __init__(
        self,
        input_dim: int,
        dim: int,
        output_dim: int,
        num_queries: int,
        depth: int,
        heads: int,
        head_dim: int,
        ff_mult: int,
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(input_dim, dim)
        self.layers = nn.ModuleList(
            ResamplerLayer(dim, heads, head_dim, ff_mult) for _ in range(depth)
        )
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        media = self.proj_in(tokens)  # (B, M, C)
        queries = self.latents.expand(tokens.shape[0], -1, -1)  # (B, Q, C)
        for layer in self.layers:
            queries = layer(media, queries)
        return self.norm_out(self.proj_out(queries))  # (B, Q, D)
