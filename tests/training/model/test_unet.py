"""The multi-view UNet: plain SD with one frame, 3D self-attention across frames, camera MLP,
decoupled image cross-attention."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from tests.training.model.helpers import compose_configs
from training.model import CONTROLLER_CONFIGS, ImageDream, ImagePromptFeatures
from training.model.config import ModelConfig, NoneControllerConfig
from training.model.denoiser import MultiViewUNet, build_denoiser
from training.model.unet import build_multiview_unet, diffusers_unet_kwargs, multiview_forward


def _tiny_unet(image_context_dim: int | None = None) -> tuple[UNet2DConditionModel, ModelConfig]:
    cfg, _ = compose_configs("tiny", "none")
    torch.manual_seed(0)
    return build_multiview_unet(cfg.unet, image_context_dim), cfg


def _inputs(cfg: ModelConfig, batch: int, frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s, d = cfg.unet.sample_size, cfg.unet.cross_attention_dim
    return (
        torch.randn(batch, frames, 4, s, s, generator=g),
        torch.tensor([17, 901][:batch]),
        torch.randn(batch, 77, d, generator=g),
        torch.randn(batch, frames, 16, generator=g),
    )


@torch.no_grad()
def test_one_frame_equals_plain_diffusers_unet() -> None:
    unet, cfg = _tiny_unet()
    plain = UNet2DConditionModel(**diffusers_unet_kwargs(cfg.unet))  # default SDPA processors
    plain.load_state_dict(unet.state_dict())
    x, t, ctx, cams = _inputs(cfg, batch=2, frames=1)
    ours = multiview_forward(unet, x, t, ctx, cams)[:, 0]
    ref = plain(x[:, 0], t, encoder_hidden_states=ctx, class_labels=cams[:, 0]).sample
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@torch.no_grad()
def test_self_attention_mixes_views_cross_attention_does_not_need_to() -> None:
    unet, cfg = _tiny_unet()
    x, t, ctx, cams = _inputs(cfg, batch=1, frames=4)
    base = multiview_forward(unet, x, t, ctx, cams)
    x2 = x.clone()
    x2[:, 0] += 1.0  # change view 0 only
    changed = multiview_forward(unet, x2, t, ctx, cams)
    diff = (changed - base).abs().amax(dim=(2, 3, 4))[0]  # per view
    assert diff[0] > 0
    assert (diff[1:] > 1e-4).all(), f"3D attention must carry view 0 to the others: {diff}"

    # the same frames as 4 independent objects (per-frame attention): no leak
    def per_frame(v: torch.Tensor) -> torch.Tensor:
        return multiview_forward(
            unet, v.transpose(0, 1), t.repeat(4), ctx.repeat(4, 1, 1), cams.transpose(0, 1)
        )

    diff_per = (per_frame(x2) - per_frame(x)).abs().amax(dim=(1, 2, 3, 4))
    assert diff_per[0] > 0 and torch.all(diff_per[1:] == 0)


@torch.no_grad()
def test_camera_reaches_the_output() -> None:
    unet, cfg = _tiny_unet()
    x, t, ctx, cams = _inputs(cfg, batch=1, frames=2)
    a = multiview_forward(unet, x, t, ctx, cams)
    b = multiview_forward(unet, x, t, ctx, cams + 1)
    assert (a - b).abs().max() > 0


@torch.no_grad()
def test_decoupled_cross_attention() -> None:
    unet, cfg = _tiny_unet(image_context_dim=32)
    x, t, ctx, cams = _inputs(cfg, batch=1, frames=2)
    tokens = torch.randn(1, 16, 32)
    text_only = multiview_forward(unet, x, t, ctx, cams)
    zero_scale = multiview_forward(unet, x, t, ctx, cams, tokens, ip_scale=0.0)
    with_image = multiview_forward(unet, x, t, ctx, cams, tokens, ip_scale=1.0)
    torch.testing.assert_close(zero_scale, text_only, rtol=0, atol=1e-6)
    assert (with_image - text_only).abs().max() > 1e-4
    # every cross-attention layer, and only those, got bias-free image K/V projections
    attn2 = [m for n, m in unet.named_modules() if n.endswith("attn2")]
    assert attn2 and all(m.to_k_ip.bias is None and m.to_v_ip.bias is None for m in attn2)
    assert not any(hasattr(m, "to_k_ip") for n, m in unet.named_modules() if n.endswith("attn1"))


def test_full_size_structure_on_meta() -> None:
    """SPEC 4 numbers on the real-size UNet, built without memory on the meta device."""
    with torch.device("meta"):
        unet, _ = build_denoiser(ModelConfig(), NoneControllerConfig())
    cam = unet.class_embedding
    assert (cam.linear_1.in_features, cam.linear_1.out_features) == (16, 1280)
    assert (cam.linear_2.in_features, cam.linear_2.out_features) == (1280, 1280)
    assert isinstance(cam.act, torch.nn.SiLU)
    assert unet.config.block_out_channels == (320, 640, 1280, 1280)
    heads = {m.heads for n, m in unet.named_modules() if n.endswith("attn1")}
    dims = {m.to_q.out_features // m.heads for n, m in unet.named_modules() if n.endswith("attn1")}
    assert dims == {64} and heads == {5, 10, 20}
    n = sum(p.numel() for p in unet.parameters())
    assert 866e6 < n < 869e6, n  # SD 2.1-base UNet (865.9 M) + camera MLP (1.66 M)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONTROLLER_CONFIGS))
def test_full_size_forward_shapes_on_meta(name: str) -> None:
    """The real-size model, every controller, 4 views (+1 pixel frame) of 32x32 latents, with
    257 x 1280 CLIP tokens: shapes only (meta tensors, no memory, no FLOPs)."""
    with torch.device("meta"):
        denoiser = MultiViewUNet.from_configs(ModelConfig(), CONTROLLER_CONFIGS[name]())
        model = ImageDream(ModelConfig(), denoiser, None, None, None, None)
        feats = ImagePromptFeatures(
            global_embed=torch.randn(2, 1024),
            local_tokens=torch.randn(2, 257, 1280),
            latent=torch.randn(2, 4, 32, 32),
        )
        cond = model.condition(feats)
        noisy = torch.randn(2, 4, 4, 32, 32)
        eps = model(
            noisy, torch.tensor([1, 999]), torch.randn(2, 77, 1024), torch.randn(2, 4, 16), cond
        )
    assert eps.shape == noisy.shape
    n_tokens = {"global": 4, "local": 16, "local_pixel": 16}.get(name)
    assert (cond.image_tokens is None) == (n_tokens is None)
    if n_tokens is not None:
        assert cond.image_tokens.shape == (2, n_tokens, 1024)


def test_gradient_checkpointing_keeps_the_multiview_path() -> None:
    """diffusers' checkpointing re-runs blocks with our FrameInfo: same output, same grads."""
    unet, cfg = _tiny_unet(image_context_dim=32)
    x, t, ctx, cams = _inputs(cfg, batch=1, frames=3)
    tokens = torch.randn(1, 16, 32)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            unet.enable_gradient_checkpointing()
        unet.zero_grad(set_to_none=True)
        out = multiview_forward(unet, x, t, ctx, cams, tokens)
        out.square().mean().backward()
        grads.append((out.detach(), unet.conv_in.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-6)
