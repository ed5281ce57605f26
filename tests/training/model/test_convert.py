"""Conversion of the released checkpoints' names (SPEC 4) both ways, at full size on the meta
device (shapes from ../shared/official_unet_keys.json) and with values on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.training.model.helpers import tiny_model
from training.model import CONTROLLER_CONFIGS, ImageDream, build_denoiser, compose_model_configs
from training.model.config import ModelConfig
from training.model.convert import (
    ORIGINAL_PREFIX,
    ConversionError,
    denoiser_from_original,
    original_to_ours,
    ours_to_original,
)
from training.model.released_layout import (
    IMAGEDREAM,
    MVDREAM,
    SCHEDULE_BUFFERS,
    ldm_schedule_buffers,
    released_layout,
    released_layout_of,
    released_state_dict,
    save_original_checkpoint,
)

# released file -> (entry in official_unet_keys.json, our controller)
RELEASED = {
    "sd-v2.1-base-4view-ipmv.pt": ("sd_v2_base_ipmv", "local_pixel"),
    "sd-v2.1-base-4view-ipmv-local.pt": ("sd_v2_base_ipmv_local", "local"),
    "sd-v2.1-base-4view.pt": ("sd_v2_base_ipmv", "none"),  # MVDream = without the adapters
}


def load_original_checkpoint(model: ImageDream, path: Path) -> None:
    """Load a released checkpoint into an existing model: its denoiser is replaced, on the old
    one's device and dtype (the library builds a model from the file instead: build_imagedream
    with model.weights.original_checkpoint)."""
    old = next(model.denoiser.parameters())
    denoiser = denoiser_from_original(model.cfg, model.controller.cfg, path)
    model.denoiser = denoiser.to(device=old.device, dtype=old.dtype)
    model.set_trainable()


def _is_ip(key: str) -> bool:
    return key.startswith("image_embed.") or ".to_k_ip." in key or ".to_v_ip." in key


def _meta_checkpoint(entry: dict, drop_adapters: bool) -> dict[str, torch.Tensor]:
    return {
        ORIGINAL_PREFIX + k: torch.empty(shape, device="meta")
        for k, shape in entry["keys"].items()
        if not (drop_adapters and _is_ip(k))
    }


def _meta_denoiser(controller: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        unet, ctrl = build_denoiser(ModelConfig(), CONTROLLER_CONFIGS[controller]())
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    return state | {f"controller.{k}": v for k, v in ctrl.state_dict().items()}


def test_official_key_file_is_what_spec_says(official_keys: dict) -> None:
    for entry in official_keys.values():
        assert entry["prefix_in_checkpoint"] == ORIGINAL_PREFIX
        assert len(entry["keys"]) == 773
        assert abs(sum(math.prod(s) for s in entry["keys"].values()) / 1e6 - 941.7) < 0.05


@pytest.mark.parametrize("released", sorted(RELEASED))
def test_released_names_and_shapes_convert_both_ways(released: str, official_keys: dict) -> None:
    entry_name, controller = RELEASED[released]
    ckpt = _meta_checkpoint(official_keys[entry_name], drop_adapters=controller == "none")
    own = _meta_denoiser(controller)
    ours, missing = original_to_ours(ckpt, own.keys(), ModelConfig().unet)
    assert missing == []
    assert ours.keys() == own.keys()
    bad = [k for k in own if ours[k].shape != own[k].shape]
    assert bad == [], bad[:10]
    back = ours_to_original(ours, ModelConfig().unet)
    assert back.keys() == ckpt.keys()
    assert all(back[k] is ckpt[k] for k in ckpt)  # the very same tensors, renamed twice


def test_wrong_variant_names_every_bad_key(official_keys: dict) -> None:
    ckpt = _meta_checkpoint(official_keys["sd_v2_base_ipmv"], drop_adapters=False)
    own = _meta_denoiser("global")  # no resampler in a global model
    with pytest.raises(ConversionError) as err:
        original_to_ours(ckpt, own.keys(), ModelConfig().unet)
    msg = str(err.value)
    assert "unexpected: image_embed.layers.0.0.to_kv.weight" in msg
    assert "missing:    image_embed.proj.weight" in msg


def test_tiny_values_round_trip_through_a_released_style_file(tmp_path) -> None:
    model = tiny_model("local_pixel", seed=5)
    path = tmp_path / "ckpt.pt"
    save_original_checkpoint(model, path)
    # flat, as the released files (threestudio passes torch.load's result to load_state_dict)
    saved = torch.load(path, weights_only=True)
    assert "state_dict" not in saved
    # the whole of the authors' ImageDream class: UNet, CLIP, VAE and the schedule buffers
    assert all(
        k.startswith((ORIGINAL_PREFIX, "vae_model.", "clip_model.model.")) or k in SCHEDULE_BUFFERS
        for k in saved
    )
    assert saved.keys() == released_layout(model).keys()
    assert "vae_model.encoder.mid.attn_1.q.weight" in saved  # ImageDream's VAE prefix
    assert any(k.endswith("attn2.to_k_ip.weight") for k in saved)
    assert f"{ORIGINAL_PREFIX}camera_embed.0.weight" in saved
    other = tiny_model("local_pixel", seed=6)
    load_original_checkpoint(other, path)
    for k, v in model.denoiser_state_dict().items():
        assert torch.equal(v, other.denoiser_state_dict()[k]), k


def test_missing_key_is_reported(tmp_path) -> None:
    model = tiny_model("local")
    state = ours_to_original(model.denoiser_state_dict(), model.cfg.unet)
    del state[f"{ORIGINAL_PREFIX}middle_block.1.proj_in.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ConversionError, match=r"missing: +middle_block.1.proj_in.weight"):
        load_original_checkpoint(tiny_model("local"), tmp_path / "broken.pt")


def test_mvdream_checkpoint_initialises_an_image_prompt_model(tmp_path) -> None:
    """SPEC 5: every variant starts from MVDream; the adapters then start fresh."""
    mvdream = tiny_model("none", seed=7)
    save_original_checkpoint(mvdream, tmp_path / "mvdream.pt")
    model = tiny_model("local_pixel", seed=8)
    load_original_checkpoint(model, tmp_path / "mvdream.pt")
    for k, v in mvdream.unet.state_dict().items():
        assert torch.equal(v, model.unet.state_dict()[k]), k
    attn2 = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    assert torch.equal(attn2.to_k_ip.weight, attn2.to_k.weight)


def test_unet_names_agree_with_diffusers_own_ldm_converter(official_keys: dict) -> None:
    """An independent oracle: diffusers' LDM -> diffusers conversion must put every released
    SD-UNet tensor exactly where ours does (a consistent but wrong table would round-trip)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from training.model.unet import diffusers_unet_kwargs

    sd_keys = {
        k: s
        for k, s in official_keys["sd_v2_base_ipmv"]["keys"].items()
        if not (_is_ip(k) or k.startswith("camera_embed."))
    }
    ckpt = {ORIGINAL_PREFIX + k: torch.empty(s, device="meta") for k, s in sd_keys.items()}
    cfg = ModelConfig()
    theirs = convert_ldm_unet_checkpoint(
        dict(ckpt), diffusers_unet_kwargs(cfg.unet) | {"class_embed_type": None}
    )
    own = [k for k in _meta_denoiser("none") if not k.startswith("unet.class_embedding.")]
    ours, missing = original_to_ours(ckpt, own, cfg.unet)
    assert missing == [] and len(theirs) == len(ours) == len(sd_keys)
    assert all(ours[f"unet.{k}"] is v for k, v in theirs.items())


def test_vae_names_agree_with_diffusers_own_ldm_converter() -> None:
    """Oracle for the VAE half of the released layout: diffusers' LDM -> diffusers VAE converter
    must map our LDM names back onto the very same tensors."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from training.model.convert import vae_to_ldm

    vae = tiny_model("none").vae
    ours = vae.state_dict()
    ldm = vae_to_ldm(ours)
    assert (
        "encoder.down.0.block.0.norm1.weight" in ldm and "decoder.up.0.block.0.conv1.weight" in ldm
    )
    assert ldm["encoder.mid.attn_1.q.weight"].dim() == 4  # LDM stores 1x1 convolutions
    back = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    assert back.keys() == ours.keys()
    for k, v in ours.items():
        assert torch.equal(back[k].reshape(v.shape), v), k
    # the up blocks are numbered the other way round in LDM: a wrong order maps onto wrong tensors
    decoder_up = [k for k in ldm if k.startswith("decoder.up.")]
    assert {k.split(".")[2] for k in decoder_up} == {
        str(i) for i in range(len(vae.config.block_out_channels))
    }


# ---------------------------------------------------------------------------------------------
# The whole released layout: UNet, open_clip CLIP, VAE, schedule buffers


@pytest.mark.parametrize("controller", sorted(CONTROLLER_CONFIGS))
def test_export_has_every_key_and_shape_of_the_authors_class(controller: str) -> None:
    """The export equals the layout of the family's class, and its CLIP part loads strictly into
    open_clip's own CLIP of our sizes (MVDream's without `visual`, as MVDream deletes it)."""
    from open_clip.model import CLIP

    from training.model.convert_clip import open_clip_text_cfg, open_clip_vision_cfg

    model = tiny_model(controller)
    state, layout = released_state_dict(model), released_layout(model)
    assert state.keys() == layout.keys()
    assert all(tuple(v.shape) == layout[k] for k, v in state.items())
    family = MVDREAM if controller == "none" else IMAGEDREAM
    prefixes = (ORIGINAL_PREFIX, family.clip, family.vae)
    assert all(k.startswith(prefixes) or k in SCHEDULE_BUFFERS for k in state)
    assert all(any(k.startswith(p) for k in state) for p in prefixes)
    cfg = model.cfg
    clip = CLIP(
        cfg.image_encoder.projection_dim,
        open_clip_vision_cfg(cfg.image_encoder),
        open_clip_text_cfg(cfg.text_encoder),
    )
    if model.image_encoder is None:  # MVDream (and our pixel variant): no image tower written
        del clip.visual
    clip.load_state_dict(
        {k[len(family.clip) :]: v for k, v in state.items() if k.startswith(family.clip)},
        strict=True,
    )


def test_layout_check_refuses_a_missing_key_and_a_wrong_shape(tmp_path, monkeypatch) -> None:
    import training.model.released_layout as layout_module

    model = tiny_model("local")
    good = released_state_dict(model)
    missing = {k: v for k, v in good.items() if k != "clip_model.model.ln_final.weight"}
    monkeypatch.setattr(layout_module, "released_state_dict", lambda m, s=None: missing)
    with pytest.raises(ConversionError, match=r"missing: +clip_model.model.ln_final.weight"):
        save_original_checkpoint(model, tmp_path / "a.pt")
    key = "clip_model.model.visual.proj"
    wrong = good | {key: good[key].T}
    monkeypatch.setattr(layout_module, "released_state_dict", lambda m, s=None: wrong)
    with pytest.raises(
        ConversionError, match=r"shape: +clip_model.model.visual.proj is \(24, 48\)"
    ):
        save_original_checkpoint(model, tmp_path / "b.pt")
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


@pytest.mark.parametrize("released", sorted(RELEASED))
def test_full_size_layout_is_the_released_unet_with_vit_h(
    released: str, official_keys: dict
) -> None:
    """At full size (meta device): the UNet part is exactly the released UNet's names and shapes,
    the CLIP is OpenCLIP ViT-H-14 (24 text blocks; 32 vision blocks for ImageDream)."""
    entry_name, controller = RELEASED[released]
    layout = released_layout_of(ModelConfig(), CONTROLLER_CONFIGS[controller]())
    unet = {
        k[len(ORIGINAL_PREFIX) :]: s for k, s in layout.items() if k.startswith(ORIGINAL_PREFIX)
    }
    official = {
        k: tuple(s)
        for k, s in official_keys[entry_name]["keys"].items()
        if not (controller == "none" and _is_ip(k))
    }
    assert unet == official
    family = MVDREAM if controller == "none" else IMAGEDREAM
    clip = {k[len(family.clip) :]: s for k, s in layout.items() if k.startswith(family.clip)}
    assert clip["token_embedding.weight"] == (49408, 1024)
    assert clip["transformer.resblocks.23.mlp.c_fc.weight"] == (4096, 1024)
    assert "transformer.resblocks.24.ln_1.weight" not in clip
    assert clip["text_projection"] == (1024, 1024)
    has_visual = controller != "none"
    assert ("visual.proj" in clip) == has_visual
    if has_visual:
        assert clip["visual.proj"] == (1280, 1024)
        assert clip["visual.positional_embedding"] == (257, 1280)
        assert "visual.transformer.resblocks.31.ln_2.bias" in clip
    assert layout[f"{family.vae}encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert layout[f"{family.vae}decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert all(layout[k] == (1000,) for k in SCHEDULE_BUFFERS)


def test_schedule_buffers_agree_with_the_training_schedule() -> None:
    """The 12 LDM buffers against diffusers' own DDPM schedule and its posterior (an independent
    implementation, in float32, hence the tolerance)."""
    from training.diffusion import build_training_scheduler

    buffers = ldm_schedule_buffers()
    assert tuple(buffers) == SCHEDULE_BUFFERS
    assert all(v.dtype == torch.float32 and v.shape == (1000,) for v in buffers.values())
    sched = build_training_scheduler()
    abar = sched.alphas_cumprod.double()
    torch.testing.assert_close(buffers["betas"], sched.betas, rtol=1e-5, atol=0)
    torch.testing.assert_close(buffers["alphas_cumprod"].double(), abar, rtol=1e-5, atol=0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    beta = sched.betas.double()
    expected = {
        "sqrt_one_minus_alphas_cumprod": (1 - abar).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / abar - 1).sqrt(),
        "posterior_variance": beta * (1 - abar_prev) / (1 - abar),
        "posterior_mean_coef1": abar_prev.sqrt() * beta / (1 - abar),
        "posterior_mean_coef2": (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar),
    }
    for k, v in expected.items():
        torch.testing.assert_close(buffers[k].double(), v, rtol=1e-4, atol=1e-7, msg=k)
    # DDPM's posterior variance with diffusers' "fixed_small" rule, at a few timesteps
    for t in (1, 10, 500, 999):
        torch.testing.assert_close(
            buffers["posterior_variance"][t], sched._get_variance(t), rtol=1e-4, atol=0
        )
    assert buffers["posterior_variance"][0] == 0  # so its log is clipped at t = 0
    assert buffers["posterior_log_variance_clipped"][0] == torch.tensor(math.log(1e-20))


def test_the_pixel_unshuffle_first_stage_has_no_released_layout(tmp_path) -> None:
    """The demo's weight-free first stage has no LDM counterpart: the export refuses it."""
    from training.model import build_imagedream

    configs = compose_model_configs("demo", "pixel")
    with pytest.raises(ValueError, match=r"pixel_unshuffle.*no released layout"):
        released_layout_of(*configs)
    with pytest.raises(ValueError, match="no released layout"):
        save_original_checkpoint(build_imagedream(*configs), tmp_path / "demo.pt")
    assert not (tmp_path / "demo.pt").exists()
