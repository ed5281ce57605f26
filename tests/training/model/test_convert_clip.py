"""Our transformers CLIP towers <-> open_clip's CLIP (training.model.convert_clip): a tiny open_clip
model, loaded strictly with the converted state, computes what the authors' code reads (their
penultimate text features, their penultimate image tokens, the global embedding) exactly as our
towers do."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.model import CLIP
from torch import Tensor
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from training.model.convert_clip import (
    OPEN_CLIP_INIT_LOGIT_SCALE,
    image_encoder_to_open_clip,
    open_clip_to_text_encoder,
    open_clip_tokenizer,
    text_encoder_to_open_clip,
    zero_filled_text_keys,
)
from training.model.encoders import HFImageEncoder

EMBED = 24  # the CLIP's joint width (1024 for ViT-H-14)
TEXT = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=3, mlp_ratio=2.0)
VISION = dict(image_size=32, layers=3, width=48, head_width=24, mlp_ratio=2.0, patch_size=8)
TEXTS = [
    "a red chair, 3d asset",
    "",
    "Hello, World! It's a 3D-printed mug (v2) with 42 holes.",
    "uniform low no texture ugly, boring, bad anatomy, blurry, pixelated,  obscure, unnatural "
    "colors, poor lighting, dull, and unclear.",
    " ".join(["a very long prompt about a wooden toy robot"] * 12),  # past 77 tokens: truncated
]


@pytest.fixture(scope="module")
def towers() -> tuple[CLIPTextModel, CLIPVisionModelWithProjection]:
    """Random transformers towers of the tiny open_clip's sizes: the text one block shallower
    (SD 2.1's penultimate cut), open_clip's exact GELU and LayerNorm eps 1e-5."""
    torch.manual_seed(0)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=TEXT["vocab_size"],
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=TEXT["layers"] - 1,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        )
    ).eval()
    vision = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=VISION["layers"],
            num_attention_heads=2,
            patch_size=8,
            image_size=32,
            projection_dim=EMBED,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        )
    ).eval()
    return text, vision


@pytest.fixture(scope="module")
def clip(towers) -> CLIP:
    """The tiny open_clip CLIP, strictly loaded from both converted towers."""
    text, vision = towers
    model = CLIP(EMBED, VISION, TEXT).eval()
    state = text_encoder_to_open_clip(text, EMBED) | image_encoder_to_open_clip(vision)
    model.load_state_dict(state, strict=True)
    return model


def authors_penultimate_text(clip: CLIP, ids: Tensor) -> Tensor:
    """The authors' text features (FrozenOpenCLIPEmbedder, layer="penultimate"): token +
    positional embedding, every block but the last under the causal mask, ln_final."""
    x = clip.token_embedding(ids) + clip.positional_embedding  # (B, T, D)
    for block in list(clip.transformer.resblocks)[:-1]:
        x = block(x, attn_mask=clip.attn_mask)
    return clip.ln_final(x)


def authors_image_tokens(clip: CLIP, pixels: Tensor) -> Tensor:
    """The authors' local image tokens (encode_image_with_transformer): patches, class token and
    positions, ln_pre, every block; the penultimate block's output."""
    v = clip.visual
    x = v.conv1(pixels).flatten(2).transpose(1, 2)  # (B, M-1, E)
    cls = v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding)  # (B, M, E)
    states = []
    for block in v.transformer.resblocks:
        x = block(x)
        states.append(x)
    return states[-2]


def test_tokenizer_matches_open_clip() -> None:
    tok = open_clip_tokenizer()
    ids = tok(TEXTS, padding="max_length", max_length=77, truncation=True).input_ids
    assert torch.equal(torch.tensor(ids), open_clip.tokenize(TEXTS))
    assert tok.pad_token_id == 0 and len(tok) == 49408
    assert ids[1][:3] == [49406, 49407, 0]  # the empty text: start, end, padding with "!"
    assert ids[2][4] == 256  # "!" in a text is BPE's "!</w>", not the pad id


def test_text_features_equal_the_authors_penultimate_layer(towers, clip) -> None:
    text, _ = towers
    ids = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        ours = text(ids)[0]  # (B, T, D)
        theirs = authors_penultimate_text(clip, ids)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_image_tokens_and_embedding_equal_open_clips(towers, clip) -> None:
    _, vision = towers
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    encoder = HFImageEncoder(vision)
    with torch.no_grad():
        embed, tokens = encoder.encode(pixels, want_global=True, want_tokens=True)
        theirs_tokens = authors_image_tokens(clip, pixels)
        theirs_embed = clip.encode_image(pixels, normalize=True)
    assert tokens is not None and embed is not None
    assert tokens.shape == (2, 17, 48)
    torch.testing.assert_close(tokens, theirs_tokens, atol=1e-5, rtol=0)
    torch.testing.assert_close(embed, theirs_embed, atol=1e-5, rtol=0)


def test_text_tower_round_trips_and_names_its_zero_filled_keys(towers) -> None:
    text, _ = towers
    state = text_encoder_to_open_clip(text, EMBED)
    zeros = zero_filled_text_keys(state)
    assert "text_projection" in zeros and "transformer.resblocks.2.attn.in_proj_weight" in zeros
    assert not any(k.startswith("transformer.resblocks.1.") for k in zeros)
    assert all(not state[k].any() for k in zeros)
    assert state["text_projection"].shape == (32, EMBED)
    assert state["logit_scale"].item() == pytest.approx(OPEN_CLIP_INIT_LOGIT_SCALE)
    back = open_clip_to_text_encoder(state)
    own = text.state_dict()
    assert back.keys() == own.keys()
    for k, v in own.items():
        assert torch.equal(back[k], v), k
