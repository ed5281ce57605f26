"""Pixel controller (SPEC 4): the prompt's clean latent is the last frame, never noised, with the
zero camera and the targets' timestep, and its prediction never reaches the output or loss."""

from __future__ import annotations

import pytest
import torch

from tests.training.model.helpers import tiny_batch, tiny_model
from training.diffusion import unconditional_features
from training.model import Conditioning


@pytest.mark.parametrize("name", ["pixel", "local_pixel"])
def test_pixel_frame_inputs_and_output_exclusion(name: str) -> None:
    model = tiny_model(name)
    b = tiny_batch(model, views=4, batch=2)
    feats = model.encode_image_prompt(b["prompt"])
    cond = model.condition(feats)
    torch.testing.assert_close(cond.extra_frame, feats.latent, rtol=0, atol=0)

    seen: dict[str, torch.Tensor] = {}
    unet = model.unet
    hooks = [
        unet.conv_in.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
        unet.class_embedding.register_forward_pre_hook(lambda m, a: seen.__setitem__("cam", a[0])),
        unet.time_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("t", a[0])),
    ]

    def keep_output(module, args, output):
        output[0].retain_grad()
        seen["out"] = output[0]

    hooks.append(unet.register_forward_hook(keep_output))
    eps = model(b["noisy"], b["timesteps"], b["text_context"], b["cameras"], cond)
    for h in hooks:
        h.remove()

    bsz, v = b["noisy"].shape[:2]
    x = seen["x"].reshape(bsz, v + 1, *seen["x"].shape[1:])
    assert torch.equal(x[:, v], feats.latent), "pixel frame must be the clean latent"
    assert torch.equal(x[:, :v], b["noisy"])
    cam = seen["cam"].reshape(bsz, v + 1, 16)
    assert torch.equal(cam[:, v], torch.zeros(bsz, 16)) and torch.equal(cam[:, :v], b["cameras"])
    t = seen["t"].reshape(bsz, v + 1)
    assert torch.equal(t, b["timesteps"][:, None].expand(bsz, v + 1))

    out = seen["out"].reshape(bsz, v + 1, *eps.shape[2:])
    assert torch.equal(eps, out[:, :v]), "the prediction is the target frames' output"
    eps.square().mean().backward()
    grad = seen["out"].grad.reshape(out.shape)
    assert torch.count_nonzero(grad[:, v]) == 0, "pixel-frame output leaked into the loss"
    assert torch.count_nonzero(grad[:, :v]) > 0


def test_pixel_frame_is_seen_by_the_targets() -> None:
    """The clean frame conditions the targets through the 3D self-attention."""
    model = tiny_model("pixel")
    b = tiny_batch(model)
    feats = model.encode_image_prompt(b["prompt"])
    with torch.no_grad():
        a = model(
            b["noisy"], b["timesteps"], b["text_context"], b["cameras"], model.condition(feats)
        )
        uncond = model.condition(unconditional_features(model, len(b["prompt"])))
        z = model(b["noisy"], b["timesteps"], b["text_context"], b["cameras"], uncond)
    assert (a - z).abs().amax(dim=(2, 3, 4)).min() > 0


def test_extra_frame_must_match_the_controller() -> None:
    plain = tiny_model("none")
    b = tiny_batch(plain)
    latent = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match="extra_frame"):
        plain(
            b["noisy"],
            b["timesteps"],
            b["text_context"],
            b["cameras"],
            Conditioning(extra_frame=latent),
        )
    pixel = tiny_model("pixel")
    with pytest.raises(ValueError, match="extra_frame"):
        pixel(b["noisy"], b["timesteps"], b["text_context"], b["cameras"], Conditioning())
