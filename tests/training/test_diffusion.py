"""training/diffusion.py: the schedules from the SPEC 4 constants, the objective, and the one
definition of the unconditional input shared by prompt dropout and the CFG branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training.model.helpers import compose_configs, tiny_model, tiny_prompts
from training.diffusion import (
    UNCONDITIONAL_MODES,
    Diffusion,
    build_sampling_scheduler,
    build_training_scheduler,
    training_conditioning,
    unconditional_features,
)
from training.examples import Batch
from training.model import CONTROLLERS, build_imagedream
from training.pipeline import ImageDreamPipeline


def test_training_and_sampling_share_the_spec_schedule() -> None:
    train, sample = build_training_scheduler(), build_sampling_scheduler()
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    torch.testing.assert_close(train.betas, betas)
    torch.testing.assert_close(sample.alphas_cumprod, train.alphas_cumprod, rtol=0, atol=0)
    assert train.config.prediction_type == sample.config.prediction_type == "epsilon"
    assert train.config.num_train_timesteps == 1000


def test_ddim_50_steps() -> None:
    sample = build_sampling_scheduler()
    sample.set_timesteps(50)
    t = sample.timesteps
    assert len(t) == 50 and t[0] == 981 and t[-1] == 1


# ---------------------------------------------------------------------------------------------
# The unconditional input: one definition for prompt dropout and for the CFG branch


def _tiny_with_mode(controller: str, mode: str):
    model_cfg, ctrl_cfg = compose_configs("tiny", controller)
    model_cfg.unconditional = mode  # as `model.unconditional=...` on the command line
    torch.manual_seed(0)
    return build_imagedream(model_cfg, ctrl_cfg)


def _capture_conditionings(model):
    """Spy on the model's forward; returns the list of (text_context, cond) it was called with."""
    calls = []
    forward = model.forward

    def spy(noisy, timesteps, text_context, cameras, cond):
        calls.append((text_context, cond))
        return forward(noisy, timesteps, text_context, cameras, cond)

    model.forward = spy  # nn.Module.__call__ dispatches to the instance attribute
    return calls


@pytest.mark.parametrize("mode", UNCONDITIONAL_MODES)
@pytest.mark.parametrize("controller", sorted(CONTROLLERS))
def test_a_dropped_example_gets_exactly_the_samplers_unconditional_input(controller, mode):
    """SPEC 5: a model is guided against the very input it learned for "no prompt"."""
    model = _tiny_with_mode(controller, mode)
    prompt = tiny_prompts(model, 2, seed=0)
    with torch.no_grad():
        trained = training_conditioning(
            model, prompt, torch.tensor([True, False]), torch.Generator().manual_seed(5)
        )
    calls = _capture_conditionings(model)
    ImageDreamPipeline.from_model(model)(
        prompt.rgb[:1], "x", num_inference_steps=1, output_type="latent"
    )
    _, cond = calls[0]  # (2B, ...): conditional half, then the unconditional half
    for name in ("image_tokens", "extra_frame"):
        dropped, kept, sampled = getattr(trained, name), None, getattr(cond, name)
        assert (dropped is None) == (sampled is None), name
        if dropped is None:
            continue
        dropped, kept, sampled = dropped[0], dropped[1], sampled[1]
        torch.testing.assert_close(dropped, sampled, rtol=0, atol=1e-6)
        assert not torch.allclose(kept, sampled, atol=1e-4), f"{name}: the kept prompt is used"
        if mode == "zeros" and name == "extra_frame":
            assert torch.count_nonzero(sampled) == 0  # the authors' zero pixel latent
    if controller != "none":
        assert trained.image_tokens is not None or trained.extra_frame is not None


def test_zero_image_features_are_zeros_before_the_controller() -> None:
    model = tiny_model("local_pixel")
    null = unconditional_features(model, 3)
    assert null.local_tokens.shape == (3, model.cfg.image_encoder.num_tokens, 48)
    assert torch.count_nonzero(null.local_tokens) == torch.count_nonzero(null.latent) == 0
    assert null.global_embed is None  # local_pixel does not use the global embedding
    feats = model.encode_image_prompt(tiny_prompts(model, 3))
    assert feats.local_tokens.shape == null.local_tokens.shape
    assert feats.latent.shape == null.latent.shape


def test_the_mode_travels_with_the_export_and_sampling_uses_it(tmp_path) -> None:
    model = _tiny_with_mode("pixel", "grey_image")
    ImageDreamPipeline.from_model(model).save_pretrained(tmp_path / "pipe")
    pipe = ImageDreamPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.model.cfg.unconditional == "grey_image"
    calls = _capture_conditionings(pipe.model)
    pipe(np.zeros((1, 16, 16, 3), np.uint8), num_inference_steps=1, output_type="latent")
    grey = unconditional_features(pipe.model, 1).latent
    assert grey is not None and torch.count_nonzero(grey) > 0  # a grey image's latent, not zeros
    torch.testing.assert_close(calls[0][1].extra_frame[1:], grey)


def test_the_loss_sees_prompt_dropout() -> None:
    model = tiny_model("local_pixel")
    size = model.cfg.vae.sample_size
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(2, 4, 3, size, size, generator=g) * 2 - 1
    prompt = tiny_prompts(model, 2, seed=0)
    cams = torch.randn(2, 4, 16, generator=g)
    diffusion = Diffusion()
    losses = []
    for dropped in ([False, False], [True, True], [False, False]):
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            batch = Batch(
                targets=targets,
                prompt=prompt,
                cameras=cams,
                captions=["a", "b"],
                prompt_dropped=torch.tensor(dropped),
                text_dropped=torch.tensor([False, False]),
                elevation_deg=[0.0, 0.0],
                keys=["a", "b"],
            )
            loss = diffusion.loss(model, batch, gen)
        losses.append(float(loss))
    assert losses[0] == losses[2] and losses[0] != losses[1]


def test_loss_weightings() -> None:
    from training.diffusion import LOSS_WEIGHTINGS, ObjectiveConfig

    t = torch.tensor([0, 500, 999])
    a = Diffusion().alphas_cumprod[t].float()
    expected = {"none": torch.ones(3), "inv_sqrt_1p_snr": (1 - a).sqrt(), "v": 1 / a}
    assert set(expected) == set(LOSS_WEIGHTINGS)
    for name, want in expected.items():
        got = Diffusion(objective=ObjectiveConfig(name)).loss_weights(t)
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="loss_weighting"):
        ObjectiveConfig("snr")
