"""Every registered controller: builds from its YAML, trains only what the paper trains,
round-trips through the pipeline folder; new-module sizes at full size match SPEC 4."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tests.training.model.helpers import compose_configs, tiny_batch, tiny_model
from training.diffusion import unconditional_features
from training.model import (
    CONTROLLER_CONFIGS,
    CONTROLLERS,
    Conditioning,
    Controller,
    ControllerConfig,
    build_denoiser,
    build_imagedream,
)
from training.model.config import ModelConfig
from training.model.controllers import register_controller
from training.pipeline import ImageDreamPipeline

# SPEC 5: adapters only for global/local; the whole UNet for none (MVDream) and pixel variants
TRAINS_UNET = {"none": True, "global": False, "local": False, "pixel": True, "local_pixel": True}


def test_registry_and_configs_agree() -> None:
    assert set(CONTROLLERS) == set(CONTROLLER_CONFIGS) == set(TRAINS_UNET)
    for name, cls in CONTROLLERS.items():
        assert cls.config_class is CONTROLLER_CONFIGS[name]


def test_a_controller_needs_a_registered_config() -> None:
    """The config side owns the names: an implementation cannot bring its own config."""

    @dataclass
    class UnregisteredConfig(ControllerConfig):
        name: str = "unregistered"

    with pytest.raises(KeyError, match="register_controller_config"):
        register_controller(UnregisteredConfig)
    with pytest.raises(KeyError, match="registered twice"):
        register_controller(CONTROLLER_CONFIGS["local"])(type("Again", (Controller,), {}))
    assert "unregistered" not in CONTROLLERS


def _is_adapter(name: str) -> bool:
    return name.startswith("controller.") or "to_k_ip" in name or "to_v_ip" in name


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_forward_backward_trains_only_what_it_should(name: str) -> None:
    model = tiny_model(name)
    assert model.controller_name == name
    b = tiny_batch(model)
    cond = model.condition(model.encode_image_prompt(b["prompt"]))
    eps = model(b["noisy"], b["timesteps"], b["text_context"], b["cameras"], cond)
    assert eps.shape == b["noisy"].shape
    eps.square().mean().backward()

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {id(p) for p in model.trainable_parameters()} == {
        id(p) for n, p in model.named_parameters() if n in trainable
    }
    for full_name, p in model.named_parameters():
        n = full_name.removeprefix("denoiser.")
        expect = (n.startswith("unet.") and TRAINS_UNET[name]) or _is_adapter(n)
        assert p.requires_grad == expect, n
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{n} got no gradient"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"
    assert not any(n.startswith(("vae.", "text_encoder.", "image_encoder.")) for n in trainable)
    has_adapters = any(_is_adapter(n) for n in model.denoiser_state_dict())
    assert has_adapters == model.controller.uses_image_tokens
    assert model.uses_pixel_frame == (cond.extra_frame is not None)


@pytest.mark.parametrize("name", ["global", "pixel"])
def test_train_unet_override(name: str) -> None:
    model_cfg, ctrl_cfg = compose_configs("tiny", name)
    ctrl_cfg.train_unet = not TRAINS_UNET[name]
    model = build_imagedream(model_cfg, ctrl_cfg)
    conv_in = model.unet.conv_in.weight
    assert conv_in.requires_grad == ctrl_cfg.train_unet


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_export_round_trip_is_exact(name: str, tmp_path) -> None:
    model = tiny_model(name, seed=3)
    ImageDreamPipeline.from_model(model).save_pretrained(tmp_path / "export")
    loaded = ImageDreamPipeline.from_pretrained(tmp_path / "export").model
    assert loaded.controller_name == name and type(loaded.controller) is type(model.controller)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    batch = tiny_batch(model)
    with torch.no_grad():
        outs = []
        for m in (model, loaded):
            cond = m.condition(m.encode_image_prompt(batch["prompt"]))
            text = m.encode_text(["a red chair", "a toy robot, 3d asset"])
            outs.append(m(batch["noisy"], batch["timesteps"], text, batch["cameras"], cond))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize(("name", "expected_m"), [("global", 30), ("local", 74)])
def test_new_module_sizes_at_full_size(name: str, expected_m: float) -> None:
    """SPEC 4: global ~30 M, local ~74 M new parameters including the image K/V projections."""
    with torch.device("meta"):
        unet, controller = build_denoiser(ModelConfig(), CONTROLLER_CONFIGS[name]())
    kv = sum(p.numel() for n, p in unet.named_parameters() if "to_k_ip" in n or "to_v_ip" in n)
    assert kv == 2 * 1024 * (5 * 320 + 5 * 640 + 6 * 1280)  # 16 cross-attention layers
    total = kv + sum(p.numel() for p in controller.parameters())
    assert abs(total / 1e6 - expected_m) < 0.5, total


def test_unconditional_branch_uses_zero_features() -> None:
    model = tiny_model("local_pixel")
    feats = model.encode_image_prompt(tiny_batch(model)["prompt"])
    uncond = model.condition(unconditional_features(model, 2))
    assert torch.equal(uncond.extra_frame, torch.zeros_like(feats.latent))
    zero_tokens = model.controller.resampler(torch.zeros_like(feats.local_tokens))
    assert torch.equal(uncond.image_tokens, zero_tokens)
    assert not torch.equal(uncond.image_tokens, model.condition(feats).image_tokens)


def test_cfg_batch_equals_two_passes() -> None:
    """Conditioning.cat([cond, uncond]) in one pass gives the two separate predictions."""
    model = tiny_model("local_pixel")
    b = tiny_batch(model, batch=1)
    feats = model.encode_image_prompt(b["prompt"])
    cond, uncond = model.condition(feats), model.condition(unconditional_features(model, 1))
    args = (b["timesteps"], b["text_context"], b["cameras"])
    with torch.no_grad():
        both = model(
            b["noisy"].repeat(2, 1, 1, 1, 1),
            *(a.repeat(2, *[1] * (a.dim() - 1)) for a in args),
            Conditioning.cat([cond, uncond]),
        )
        one = model(b["noisy"], *args, cond)
        two = model(b["noisy"], *args, uncond)
    torch.testing.assert_close(both, torch.cat([one, two]), rtol=1e-4, atol=1e-5)
