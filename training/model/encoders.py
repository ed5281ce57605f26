"""Frozen encoders (SPEC 4): VAE, text encoder + tokenizer, CLIP image encoder.

Shape legend: B batch, H x W pixels, C latent channels, h x w latent size, T text tokens (77),
D text width (1024), M image tokens (257), E image width (1280), G image embedding (1024).

Weights come from local paths only; with no path the module is built at random from the
config (tests, benchmarks). The tiny tokenizer is a byte-level CLIP BPE without merges,
written to a temporary folder and read back (no download).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import Tensor, nn
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)
from transformers.models.clip.tokenization_clip import bytes_to_unicode

from training.model.config import (
    ImageEncoderConfig,
    TextEncoderConfig,
    VAEConfig,
)

# --------------------------------------------------------------------------------------- VAE


def build_vae(cfg: VAEConfig, sd21_path: str | None) -> Any:  # AutoencoderKL-like
    if cfg.kind == "pixel_unshuffle":  # nothing to load: it has no weights
        from training.model.autoencoder import PixelUnshuffleAutoencoder

        return PixelUnshuffleAutoencoder(
            factor=cfg.factor, sample_size=cfg.sample_size, scaling_factor=cfg.scaling_factor
        ).eval()
    if sd21_path is not None:
        vae = AutoencoderKL.from_pretrained(
            Path(sd21_path) / "vae", local_files_only=True, low_cpu_mem_usage=False
        )
    else:
        n = len(cfg.block_out_channels)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_num_groups,
            sample_size=cfg.sample_size,
            scaling_factor=cfg.scaling_factor,
        )
    return vae.requires_grad_(False).eval()


# ---------------------------------------------------------------------------------------- text


def tiny_tokenizer(max_length: int) -> CLIPTokenizer:
    """A CLIP tokenizer over the 256 byte symbols (+ end-of-word forms), no merges: 514 ids."""
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tok = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))
    tok.model_max_length = max_length
    return tok


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """A CLIP tokenizer folder (SD 2.1's `tokenizer/`, an exported pipeline's), local only.

    SD 2.x's folder pads with "!" (id 0), as open_clip pads, but names it `pad_token`, and
    transformers then matches "!" in a text as that special token: "a ball!" would end in id 0
    where open_clip, which the authors' text encoder calls, gives the word "!" (256). So a pad
    token that is an ordinary vocabulary word is kept as the padding id only."""
    tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    pad = tok.pad_token
    special = {tok.bos_token, tok.eos_token, tok.unk_token}
    if pad is None or pad in special or pad not in tok.get_vocab():
        return tok
    pad_id = tok.pad_token_id
    tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True, pad_token=tok.eos_token)
    tok.pad_token_id = pad_id  # pads with it, without making it a special token again
    return tok


def build_tokenizer(cfg: TextEncoderConfig, sd21_path: str | None) -> CLIPTokenizer:
    if sd21_path is not None:
        return load_tokenizer(Path(sd21_path) / "tokenizer")
    return tiny_tokenizer(cfg.max_length)


def build_text_encoder(cfg: TextEncoderConfig, sd21_path: str | None) -> CLIPTextModel:
    if sd21_path is not None:
        model = CLIPTextModel.from_pretrained(
            Path(sd21_path) / "text_encoder", local_files_only=True
        )
    else:
        model = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=cfg.vocab_size,
                hidden_size=cfg.hidden_size,
                intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads,
                max_position_embeddings=cfg.max_length,
                projection_dim=cfg.projection_dim,
                hidden_act=cfg.hidden_act,
            )
        )
    return model.requires_grad_(False).eval()


# --------------------------------------------------------------------------------------- image


class ImageEncoder(nn.Module):
    """CLIP image tower: `forward(CLIP input pixels) -> (global (B, G), tokens (B, M, E))`.
    global = projected embedding, L2-normalised; tokens = penultimate block's hidden states."""

    image_size: int
    embed_dim: int
    token_dim: int

    def encode(
        self, pixels: Tensor, want_global: bool, want_tokens: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        raise NotImplementedError

    def forward(
        self, pixels: Tensor, want_global: bool = True, want_tokens: bool = True
    ) -> tuple[Tensor | None, Tensor | None]:
        """pixels: (B, 3, s, s) CLIP input, already transformed (training.prompt_image)."""
        return self.encode(pixels, want_global, want_tokens)


class HFImageEncoder(ImageEncoder):
    """transformers CLIPVisionModelWithProjection (HF-format ViT-H-14 folder, or random)."""

    def __init__(self, model: CLIPVisionModelWithProjection) -> None:
        super().__init__()
        self.model = model
        self.image_size = model.config.image_size
        self.embed_dim = model.config.projection_dim
        self.token_dim = model.config.hidden_size

    def encode(
        self, pixels: Tensor, want_global: bool, want_tokens: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        out = self.model(pixel_values=pixels, output_hidden_states=want_tokens)
        embed = F.normalize(out.image_embeds, dim=-1) if want_global else None  # (B, G)
        # hidden_states[-2] = output of the penultimate block (before ln_post)
        tokens = out.hidden_states[-2] if want_tokens else None  # (B, M, E)
        return embed, tokens


class OpenCLIPImageEncoder(ImageEncoder):
    """open_clip VisionTransformer (e.g. ViT-H-14 from a local open_clip checkpoint file)."""

    def __init__(self, visual: Any) -> None:  # open_clip VisionTransformer
        super().__init__()
        self.visual: Any = visual
        size = visual.image_size
        self.image_size = size[0] if isinstance(size, tuple | list) else size
        self.embed_dim = visual.output_dim
        self.token_dim = visual.positional_embedding.shape[-1]

    def encode(
        self, pixels: Tensor, want_global: bool, want_tokens: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        v = self.visual
        x = v.conv1(pixels).flatten(2).transpose(1, 2)  # (B, M-1, E)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))  # (B, M, E)
        batch_first = getattr(v.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        blocks = v.transformer.resblocks
        tokens = None
        for i, block in enumerate(blocks):
            x = block(x)
            if i == len(blocks) - 2:
                tokens = x if batch_first else x.transpose(0, 1)  # (B, M, E)
        if not want_global:
            return None, tokens if want_tokens else None
        x = x if batch_first else x.transpose(0, 1)
        embed = v.ln_post(x[:, 0]) @ v.proj  # (B, G)
        return F.normalize(embed, dim=-1), tokens if want_tokens else None


def _load_hf_vision(path: str) -> CLIPVisionModelWithProjection:
    """A CLIPVisionModelWithProjection folder, or the vision half of a CLIPModel folder (the
    released ViT-H-14), whose projection width is stored at the top level of its config."""
    config = CLIPVisionConfig.from_pretrained(path, local_files_only=True)
    raw = json.loads((Path(path) / "config.json").read_text())
    if raw.get("model_type") == "clip" and "projection_dim" in raw:
        config.projection_dim = raw["projection_dim"]
    return CLIPVisionModelWithProjection.from_pretrained(path, config=config, local_files_only=True)


def build_image_encoder(
    cfg: ImageEncoderConfig, hf_path: str | None, open_clip_checkpoint: str | None
) -> ImageEncoder:
    if open_clip_checkpoint is not None:
        import open_clip

        clip = open_clip.create_model("ViT-H-14", pretrained=open_clip_checkpoint)
        encoder: ImageEncoder = OpenCLIPImageEncoder(clip.visual)
    elif hf_path is not None:
        encoder = HFImageEncoder(_load_hf_vision(hf_path))
    else:
        config = CLIPVisionConfig(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            patch_size=cfg.patch_size,
            image_size=cfg.image_size,
            projection_dim=cfg.projection_dim,
            hidden_act=cfg.hidden_act,
        )
        encoder = HFImageEncoder(CLIPVisionModelWithProjection(config))
    return encoder.requires_grad_(False).eval()
