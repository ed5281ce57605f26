"""Between our transformers CLIP towers and open_clip's layout (SPEC 4).

The authors' MVDream / ImageDream classes hold OpenCLIP ViT-H-14 as an open_clip `CLIP` (their
`FrozenOpenCLIPEmbedder.model`; MVDream deletes its `visual`). We hold the same towers as
transformers modules: SD 2.1's `CLIPTextModel`, which keeps 23 of the text tower's 24 blocks
(its last hidden state is their "penultimate" feature), and a `CLIPVisionModelWithProjection`.
This module renames the tensors between the two, builds the matching tokenizer and the
open_clip configs of our towers (so a layout can be read off open_clip's own class).

Shape legend: D text width, W_mlp MLP width, E image width, G joint embedding width, T text
context (77), M image tokens (257), p patch size.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from training.model.config import ImageEncoderConfig, TextEncoderConfig
from training.model.encoders import HFImageEncoder, ImageEncoder, OpenCLIPImageEncoder

# open_clip's initial logit scale, log(1 / 0.07): CLIP's contrastive temperature, which no
# diffusion code reads; written so the state loads strictly.
OPEN_CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)

# open_clip text-tower tensors that SD 2.1's text encoder, and so ours, does not hold: the last
# residual block (`{last}` = its index; MVDream and ImageDream read the penultimate block's
# output, layer="penultimate") and the text projection (CLIP's contrastive text embedding).
# Their code never reads them; they are written as zeros only so that the state fits the open_clip
# model strictly. A zero block is the identity (its residual branches add nothing).
ZERO_FILLED_TEXT_KEYS = ("transformer.resblocks.{last}.", "text_projection")

# transformers CLIPEncoderLayer <-> open_clip ResidualAttentionBlock (q/k/v are fused apart)
_BLOCK = {
    "self_attn.out_proj.": "attn.out_proj.",
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
}
_HF_TEXT = "text_model."
_HF_VISION = "vision_model."
# open_clip's special tokens are named differently from SD 2.1's tokenizer; same ids
_SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


# ------------------------------------------------------------------------------------ tokenizer


def open_clip_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """open_clip's BPE (49408 ids) as a transformers CLIPTokenizer, built offline from the
    vocabulary open_clip ships, padding with id 0 ("!") as SD 2.x's tokenizer does, so that its
    `input_ids` (padding="max_length", truncation=True) equal `open_clip.tokenize(texts)`, which
    the authors' text encoder calls.

    The pad id is set after construction on purpose: a `pad_token="!"` argument would register
    "!" as a special token, and "!" in a text would then become id 0 instead of BPE's "!</w>"
    (256), as happens with SD 2.x's shipped tokenizer folder. A tokenizer saved and reloaded
    registers it again. transformers cleans text with ftfy and whitespace only, where open_clip
    also unescapes HTML entities ("&amp;"): texts with such entities may differ."""
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    vocab = {_SPECIAL.get(t, t): i for t, i in simple.encoder.items()}
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.__getitem__)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
        tok = CLIPTokenizer(str(vocab_file), str(merges_file))
    tok.pad_token_id = 0  # "!", without making it a special token (see above)
    tok.model_max_length = max_length
    return tok


# ------------------------------------------------------------------------------------ configs


def open_clip_text_cfg(cfg: TextEncoderConfig) -> dict[str, Any]:
    """open_clip CLIPTextCfg of the full text tower our (penultimate-truncated) encoder is cut
    from: one block more than ours."""
    return dict(
        context_length=cfg.max_length,
        vocab_size=cfg.vocab_size,
        width=cfg.hidden_size,
        heads=cfg.num_attention_heads,
        layers=cfg.num_hidden_layers + 1,
        mlp_ratio=cfg.intermediate_size / cfg.hidden_size,
    )


def open_clip_vision_cfg(cfg: ImageEncoderConfig) -> dict[str, Any]:
    """open_clip CLIPVisionCfg of our image tower (same blocks: no truncation)."""
    return dict(
        image_size=cfg.image_size,
        layers=cfg.num_hidden_layers,
        width=cfg.hidden_size,
        head_width=cfg.hidden_size // cfg.num_attention_heads,
        mlp_ratio=cfg.intermediate_size / cfg.hidden_size,
        patch_size=cfg.patch_size,
    )


def open_clip_layout(
    text: TextEncoderConfig, image: ImageEncoderConfig, with_visual: bool
) -> dict[str, tuple[int, ...]]:
    """Every key and shape of open_clip's own `CLIP` for these towers (built on the meta
    device, so the ViT-H-14 size costs nothing); without `visual.*` as MVDream deletes it."""
    from open_clip.model import CLIP

    with torch.device("meta"):
        clip = CLIP(image.projection_dim, open_clip_vision_cfg(image), open_clip_text_cfg(text))
    return {
        k: tuple(v.shape)
        for k, v in clip.state_dict().items()
        if with_visual or not k.startswith("visual.")
    }


# ------------------------------------------------------------------------------------- blocks


def _block_to_open_clip(hf: Mapping[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    """One transformer block: q/k/v projections fused into open_clip's in_proj (q, k, v order,
    as nn.MultiheadAttention splits it)."""
    out = {
        f"{dst}attn.in_proj_{p}": torch.cat([hf[f"{src}self_attn.{n}_proj.{p}"] for n in "qkv"])
        for p in ("weight", "bias")
    }  # (3 D, D), (3 D,)
    for a, b in _BLOCK.items():
        for p in ("weight", "bias"):
            out[f"{dst}{b}{p}"] = hf[f"{src}{a}{p}"]
    return out


def _block_from_open_clip(oc: Mapping[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for p in ("weight", "bias"):
        q, k, v = oc[f"{src}attn.in_proj_{p}"].chunk(3)
        out |= {f"{dst}self_attn.q_proj.{p}": q, f"{dst}self_attn.k_proj.{p}": k}
        out[f"{dst}self_attn.v_proj.{p}"] = v
    for a, b in _BLOCK.items():
        for p in ("weight", "bias"):
            out[f"{dst}{a}{p}"] = oc[f"{src}{b}{p}"]
    return out


def _count_blocks(state: Mapping[str, Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    if found != set(range(len(found))):
        raise KeyError(f"blocks matching {pattern!r} are not numbered 0..n-1: {sorted(found)}")
    return len(found)


# --------------------------------------------------------------------------------------- text


def zero_filled_text_keys(state: Mapping[str, Tensor]) -> list[str]:
    """The keys of an open_clip text state that ZERO_FILLED_TEXT_KEYS names."""
    last = _count_blocks(state, r"^transformer\.resblocks\.(\d+)\.") - 1
    prefixes = tuple(p.format(last=last) for p in ZERO_FILLED_TEXT_KEYS)
    return sorted(k for k in state if k.startswith(prefixes))


def text_encoder_to_open_clip(
    text_encoder: CLIPTextModel, embed_dim: int = 1024
) -> dict[str, Tensor]:
    """Our text encoder -> open_clip CLIP's text-tower state (keys as `CLIP.state_dict()`, no
    `visual.`). `embed_dim` is the CLIP's joint width G (1024 for ViT-H-14), the text
    projection's width: the transformers config does not know it. The block ours lacks and the
    projection are zeros (ZERO_FILLED_TEXT_KEYS), logit_scale open_clip's initial value."""
    hf = {k: v.detach() for k, v in text_encoder.state_dict().items()}
    n = text_encoder.config.num_hidden_layers
    emb = f"{_HF_TEXT}embeddings."
    out = {
        "token_embedding.weight": hf[f"{emb}token_embedding.weight"],  # (vocab, D)
        "positional_embedding": hf[f"{emb}position_embedding.weight"],  # (T, D)
    }
    for i in range(n):
        out |= _block_to_open_clip(
            hf, f"{_HF_TEXT}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        )
    # the block SD 2.1 dropped: zeros of block 0's shapes
    first = "transformer.resblocks.0."
    out |= {
        f"transformer.resblocks.{n}.{k[len(first) :]}": torch.zeros_like(v)
        for k, v in list(out.items())
        if k.startswith(first)
    }
    out["ln_final.weight"] = hf[f"{_HF_TEXT}final_layer_norm.weight"]
    out["ln_final.bias"] = hf[f"{_HF_TEXT}final_layer_norm.bias"]
    width = out["positional_embedding"].shape[-1]
    dtype = out["positional_embedding"].dtype
    out["text_projection"] = torch.zeros(width, embed_dim, dtype=dtype)  # (D, G)
    out["logit_scale"] = torch.tensor(OPEN_CLIP_INIT_LOGIT_SCALE, dtype=dtype)
    return out


def open_clip_to_text_encoder(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """open_clip CLIP's text-tower state -> our CLIPTextModel state: the penultimate-truncated
    tower (the last block, text_projection and logit_scale are dropped; `visual.*` ignored)."""
    n = _count_blocks(state, r"^transformer\.resblocks\.(\d+)\.") - 1
    emb = f"{_HF_TEXT}embeddings."
    out = {
        f"{emb}token_embedding.weight": state["token_embedding.weight"],
        f"{emb}position_embedding.weight": state["positional_embedding"],
        f"{_HF_TEXT}final_layer_norm.weight": state["ln_final.weight"],
        f"{_HF_TEXT}final_layer_norm.bias": state["ln_final.bias"],
    }
    for i in range(n):
        out |= _block_from_open_clip(
            state, f"transformer.resblocks.{i}.", f"{_HF_TEXT}encoder.layers.{i}."
        )
    return out


# -------------------------------------------------------------------------------------- image


def image_encoder_to_open_clip(vision: CLIPVisionModelWithProjection) -> dict[str, Tensor]:
    """transformers ViT -> open_clip CLIP's `visual.*` state (all blocks, no truncation)."""
    hf = {k: v.detach() for k, v in vision.state_dict().items()}
    n = vision.config.num_hidden_layers
    emb = f"{_HF_VISION}embeddings."
    out = {
        "conv1.weight": hf[f"{emb}patch_embedding.weight"],  # (E, 3, p, p), no bias in either
        "class_embedding": hf[f"{emb}class_embedding"],  # (E,)
        "positional_embedding": hf[f"{emb}position_embedding.weight"],  # (M, E)
        "ln_pre.weight": hf[f"{_HF_VISION}pre_layrnorm.weight"],  # sic, transformers' name
        "ln_pre.bias": hf[f"{_HF_VISION}pre_layrnorm.bias"],
        "ln_post.weight": hf[f"{_HF_VISION}post_layernorm.weight"],
        "ln_post.bias": hf[f"{_HF_VISION}post_layernorm.bias"],
        # nn.Linear stores (G, E); open_clip multiplies x @ proj with proj (E, G)
        "proj": hf["visual_projection.weight"].T.contiguous(),
    }
    for i in range(n):
        out |= _block_to_open_clip(
            hf, f"{_HF_VISION}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        )
    return {f"visual.{k}": v for k, v in out.items()}


def image_tower_to_open_clip(encoder: ImageEncoder) -> dict[str, Tensor]:
    """Our image encoder, whichever implementation, as open_clip's `visual.*` state."""
    if isinstance(encoder, HFImageEncoder):
        return image_encoder_to_open_clip(encoder.model)
    if isinstance(encoder, OpenCLIPImageEncoder):  # already open_clip: written as it is
        return {f"visual.{k}": v.detach() for k, v in encoder.visual.state_dict().items()}
    raise TypeError(f"no open_clip layout for image encoder {type(encoder).__name__}")
