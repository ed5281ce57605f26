"""Frozen encoders (SPEC 4): text features, image features of both backends, and loading every
part from local diffusers / HF folders. (The CLIP input itself: tests/training/test_prompt_image.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from tests.training.model.helpers import compose_configs, tiny_model
from training.model import build_imagedream
from training.model.config import WeightsConfig
from training.model.encoders import OpenCLIPImageEncoder
from training.model.unet import diffusers_unet_kwargs


def test_text_encoding_is_the_last_hidden_state_of_77_tokens() -> None:
    model = tiny_model("none")
    ids = model.tokenizer(
        ["a cat"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    assert ids.shape == (1, 77) and ids[0, 0] == model.tokenizer.bos_token_id
    ctx = model.encode_text(["a cat", "a dog"])
    assert ctx.shape == (2, 77, model.cfg.unet.cross_attention_dim)
    torch.testing.assert_close(ctx[:1], model.text_encoder(ids).last_hidden_state)


def test_image_features_global_normalised_local_penultimate() -> None:
    model = tiny_model("global")
    cfg = model.cfg.image_encoder
    pixels = torch.randn(2, 3, cfg.image_size, cfg.image_size)  # a CLIP input
    g, tokens = model.image_encoder(pixels, want_global=True, want_tokens=True)
    assert g.shape == (2, cfg.projection_dim)
    torch.testing.assert_close(g.norm(dim=-1), torch.ones(2))
    assert tokens.shape == (2, cfg.num_tokens, cfg.hidden_size)
    hf = model.image_encoder.model
    seen = {}
    hf.vision_model.encoder.layers[-2].register_forward_hook(
        lambda m, a, o: seen.setdefault("h", o)
    )
    hf(pixel_values=pixels)
    h = seen["h"][0] if isinstance(seen["h"], tuple) else seen["h"]
    torch.testing.assert_close(tokens, h)


def test_open_clip_backend_matches_open_clip() -> None:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    clip = CLIP(
        embed_dim=24,
        vision_cfg=CLIPVisionCfg(layers=3, width=48, head_width=24, image_size=32, patch_size=8),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1),
    ).eval()
    encoder = OpenCLIPImageEncoder(clip.visual)
    pixels = torch.randn(2, 3, 32, 32)
    g, tokens = encoder(pixels)
    seen = {}
    clip.visual.transformer.resblocks[-2].register_forward_hook(
        lambda m, a, o: seen.setdefault("h", o)
    )
    torch.testing.assert_close(g, F.normalize(clip.encode_image(pixels), dim=-1))
    torch.testing.assert_close(tokens, seen["h"])
    assert tokens.shape == (2, 17, 48)


def test_loads_every_part_from_local_folders(tmp_path) -> None:
    """A diffusers SD 2.1-style folder (plain UNet without camera MLP) + an HF CLIP folder."""
    src = tiny_model("local", seed=11)
    model_cfg, ctrl_cfg = compose_configs("tiny", "local")
    plain = UNet2DConditionModel(
        **(diffusers_unet_kwargs(model_cfg.unet) | {"class_embed_type": None})
    )
    plain.save_pretrained(tmp_path / "sd21" / "unet")
    src.vae.save_pretrained(tmp_path / "sd21" / "vae")
    src.text_encoder.save_pretrained(tmp_path / "sd21" / "text_encoder")
    src.tokenizer.save_pretrained(tmp_path / "sd21" / "tokenizer")
    src.image_encoder.model.save_pretrained(tmp_path / "clip")
    model_cfg.weights = WeightsConfig(
        sd21_path=str(tmp_path / "sd21"), image_encoder_path=str(tmp_path / "clip")
    )
    model = build_imagedream(model_cfg, ctrl_cfg)
    for k, v in plain.state_dict().items():
        assert torch.equal(v, model.unet.state_dict()[k]), k
    assert torch.count_nonzero(model.unet.class_embedding.linear_2.weight) == 0  # step 0 == SD
    attn2 = model.unet.mid_block.attentions[0].transformer_blocks[0].attn2
    assert torch.equal(attn2.to_v_ip.weight, attn2.to_v.weight)
    for part in ("vae", "text_encoder", "image_encoder"):
        a, b = getattr(src, part).state_dict(), getattr(model, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part


def test_missing_weight_path_is_a_clear_error(tmp_path) -> None:
    model_cfg, _ = compose_configs("tiny", "none")
    with pytest.raises(FileNotFoundError, match="sd21_path"):
        dataclasses.replace(model_cfg.weights, sd21_path=str(tmp_path / "nope"))


def test_hf_clipmodel_folder_loads_as_image_encoder(tmp_path) -> None:
    """The released ViT-H-14 HF folder is a whole CLIPModel; its vision half is what we load."""
    from transformers import CLIPConfig, CLIPModel

    from training.model.encoders import build_image_encoder

    model_cfg, _ = compose_configs("tiny", "local")
    ic = model_cfg.image_encoder
    torch.manual_seed(0)
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(
                hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
            ),
            vision_config=dict(
                hidden_size=ic.hidden_size,
                intermediate_size=ic.intermediate_size,
                num_hidden_layers=ic.num_hidden_layers,
                num_attention_heads=ic.num_attention_heads,
                patch_size=ic.patch_size,
                image_size=ic.image_size,
            ),
            projection_dim=ic.projection_dim,
        )
    ).eval()
    clip.save_pretrained(tmp_path / "clip")
    encoder = build_image_encoder(ic, str(tmp_path / "clip"), None)
    pixels = torch.randn(2, 3, 32, 32)
    g, _ = encoder(pixels, want_global=True, want_tokens=False)
    with torch.no_grad():
        ref = clip.get_image_features(pixel_values=pixels)
    torch.testing.assert_close(g, F.normalize(ref, dim=-1))


def test_a_pad_token_that_is_a_word_stays_a_word(tmp_path) -> None:
    """SD 2.1's tokenizer folder pads with "!" (id 0, as open_clip pads) and names it pad_token;
    transformers would then read "!" in a text as that special token (id 0), where open_clip,
    which the authors' text encoder calls, reads the word "!" (256). Loaded here, "!" stays a
    word and padding stays id 0: the same ids as open_clip. The same holds for a pipeline
    folder's tokenizer."""
    import json

    import open_clip
    from transformers import CLIPTokenizer

    from training.model.convert_clip import open_clip_tokenizer
    from training.model.encoders import load_tokenizer

    folder = tmp_path / "tokenizer"
    open_clip_tokenizer().save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)  # SD 2.1's folder predates that field
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"pad_token": "!"}))
    texts = ["a red ball!", "hi ! there !!", "a chair, 3d asset"]
    expected = open_clip.tokenize(texts).tolist()

    def ids(tok: CLIPTokenizer) -> list[list[int]]:
        return tok(texts, padding="max_length", max_length=77, truncation=True).input_ids

    assert ids(CLIPTokenizer.from_pretrained(folder)) != expected  # transformers' own reading
    loaded = load_tokenizer(folder)
    assert ids(loaded) == expected and loaded.pad_token_id == 0
    # an exported pipeline's folder: the saved tokenizer names "!" its pad token again
    from training.pipeline import ImageDreamPipeline

    model = tiny_model("none")
    model.tokenizer = open_clip_tokenizer()
    ImageDreamPipeline.from_model(model).save_pretrained(tmp_path / "pipe")
    saved = json.loads((tmp_path / "pipe" / "tokenizer" / "tokenizer_config.json").read_text())
    assert saved["pad_token"] == "!"
    assert ids(ImageDreamPipeline.from_pretrained(tmp_path / "pipe").tokenizer) == expected
