"""ImageDreamPipeline: a diffusers pipeline folder that round-trips, the SPEC 6 sampler
(guidance 1 = the conditional model, the paper's unconditional branch), every controller."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from contract.cameras import network_camera, ring_c2w
from tests.training.model.helpers import tiny_model
from training.diffusion import build_sampling_scheduler, set_ldm_timesteps
from training.model import CONTROLLERS
from training.pipeline import SHIM_MODULE, ImageDreamPipeline
from training.prompt_image import prepare_prompts
from training.sampling_settings import NEGATIVE_PROMPT


def _images(n: int = 2, size: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def pipe() -> ImageDreamPipeline:
    p = ImageDreamPipeline.from_model(tiny_model("local_pixel", seed=2))
    p.set_progress_bar_config(disable=True)
    return p


def test_save_and_load_round_trip(pipe, tmp_path) -> None:
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    expected = pipe(_images(), ["a mug", "a gem"], num_inference_steps=3, generator=_gens(1, 2))
    loaded = ImageDreamPipeline.from_pretrained(folder)
    again = loaded(_images(), ["a mug", "a gem"], num_inference_steps=3, generator=_gens(1, 2))
    torch.testing.assert_close(again.latents, expected.latents, rtol=0, atol=0)
    assert len(again.images) == 2 and len(again.images[0]) == 4  # PIL, 4 views per prompt
    # diffusers' own entry point finds the class named in model_index.json
    generic = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(generic) is ImageDreamPipeline
    # streamed load: no parameter left on the meta device, float32 masters
    assert all(
        p.device.type == "cpu" and p.dtype == torch.float32 for p in loaded.unet.parameters()
    )
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, loaded.unet.state_dict()[k]), k


def test_a_tampered_shim_is_not_run(pipe, tmp_path) -> None:
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    (folder / f"{SHIM_MODULE}.py").write_text("import os\n")
    with pytest.raises(ValueError, match="refusing"):
        ImageDreamPipeline.from_pretrained(folder)


def _conditional_only(pipe, images, texts, seeds, steps) -> torch.Tensor:
    """Reference: DDIM with the conditional prediction alone (what guidance_scale 1 must be)."""
    model = pipe.model
    unet = model.cfg.unet
    latent = (unet.latent_channels, unet.sample_size, unet.sample_size)
    # each prompt's generator: the pixel latent's posterior noise first, then the initial noise
    draws = [(torch.randn(1, *latent, generator=g), torch.randn(4, *latent, generator=g))
             for g in _gens(*seeds)]  # fmt: skip
    latent_noise = torch.cat([d[0] for d in draws])
    z = torch.stack([d[1] for d in draws])
    prompts = prepare_prompts(list(images), pipe.resolution, model.image_encoder.image_size)
    cond = model.condition(model.encode_image_prompt(prompts, latent_noise))
    text = model.encode_text(texts)
    cams = torch.from_numpy(
        network_camera(np.stack([ring_c2w(np.array([0.0, 90, 180, 270]), 5.0, 1.0)] * len(texts)))
    )
    scheduler = build_sampling_scheduler()
    set_ldm_timesteps(scheduler, steps, torch.device("cpu"))
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = model(z, torch.full((len(texts),), int(t)), text, cams, cond)
            z = scheduler.step(eps, t, z).prev_sample
    return z


def test_guidance_one_is_the_conditional_path(pipe) -> None:
    texts = ["a mug, 3d asset", "a gem, 3d asset"]
    out = pipe(
        _images(),
        texts,
        num_inference_steps=4,
        guidance_scale=1.0,
        generator=_gens(3, 4),
        output_type="latent",
    )
    ref = _conditional_only(pipe, _images(), texts, [3, 4], 4)
    torch.testing.assert_close(out.latents, ref, atol=1e-5, rtol=1e-5)
    guided = pipe(
        _images(), texts, num_inference_steps=4, generator=_gens(3, 4), output_type="latent"
    )
    assert not torch.allclose(guided.latents, ref, atol=1e-3)


def test_unconditional_branch_is_negative_text_zero_image_zero_latent(pipe) -> None:
    model = pipe.model
    calls = []
    forward = model.forward

    def spy(noisy, timesteps, text_context, cameras, cond):
        calls.append((text_context, cond))
        return forward(noisy, timesteps, text_context, cameras, cond)

    model.forward = spy
    try:
        pipe(_images(), ["a mug", "a gem"], num_inference_steps=1, output_type="latent")
    finally:
        del model.forward
    context, cond = calls[0]
    torch.testing.assert_close(context[2:], model.encode_text([NEGATIVE_PROMPT] * 2))  # default
    torch.testing.assert_close(context[:2], model.encode_text(["a mug", "a gem"]))
    assert torch.count_nonzero(cond.extra_frame[2:]) == 0
    assert torch.count_nonzero(cond.extra_frame[:2]) > 0
    zero_tokens = model.controller.resampler(torch.zeros(2, 17, 48))
    torch.testing.assert_close(cond.image_tokens[2:], zero_tokens)


@pytest.mark.parametrize("controller", sorted(CONTROLLERS))
def test_every_controller_gives_four_views_without_the_pixel_frame(controller) -> None:
    pipe = ImageDreamPipeline.from_model(tiny_model(controller))
    pipe.set_progress_bar_config(disable=True)
    model, seen = pipe.model, []
    forward = model.forward

    def spy(noisy, timesteps, text_context, cameras, cond):
        seen.append((tuple(noisy.shape), tuple(cameras.shape)))
        return forward(noisy, timesteps, text_context, cameras, cond)

    model.forward = spy
    out = pipe(
        _images(), ["a", "b"], num_inference_steps=2, output_type="np", generator=_gens(0, 1)
    )
    res = pipe.resolution
    assert out.images.shape == (2, 4, res, res, 3) and out.images.dtype == np.float32
    assert out.images.min() >= 0.0 and out.images.max() <= 1.0
    assert out.latents.shape[:2] == (2, 4) and out.cameras.shape == (2, 4, 16)
    # both CFG branches in one pass over the 4 target views only; the model adds the pixel frame
    assert len(seen) == 2 and all(s == ((4, 4, 4, 8, 8), (4, 4, 16)) for s in seen)
    pt = pipe(_images(1), "a", num_inference_steps=1, output_type="pt", generator=_gens(0))
    assert pt.images.shape == (1, 4, 3, res, res)


def test_a_prompt_does_not_depend_on_its_batch(pipe) -> None:
    both = pipe(
        _images(), ["a", "b"], num_inference_steps=2, generator=_gens(5, 6), output_type="latent"
    )
    alone = pipe(
        _images()[1:], ["b"], num_inference_steps=2, generator=_gens(6), output_type="latent"
    )
    torch.testing.assert_close(both.latents[1:], alone.latents, atol=1e-5, rtol=1e-5)


def test_an_open_clip_image_encoder_samples_but_is_refused_at_save(tmp_path) -> None:
    from training.model.encoders import ImageEncoder

    model = tiny_model("local")
    hf = model.image_encoder

    class Wrapped(ImageEncoder):  # stands in for OpenCLIPImageEncoder (no ViT-H file here)
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf
            self.image_size, self.embed_dim, self.token_dim = (
                hf.image_size,
                hf.embed_dim,
                hf.token_dim,
            )

        def encode(self, pixels, want_global, want_tokens):
            return self.inner.encode(pixels, want_global, want_tokens)

    model.image_encoder = Wrapped()
    pipe = ImageDreamPipeline.from_model(model)
    assert ImageDreamPipeline.unsaveable_reason(model) is not None
    out = pipe(_images(1), "a", num_inference_steps=1, output_type="latent", generator=_gens(0))
    assert out.latents.shape[:2] == (1, 4)
    with pytest.raises(NotImplementedError, match="open_clip"):
        pipe.save_pretrained(tmp_path / "pipe")
    assert not (tmp_path / "pipe" / "model_index.json").exists()


def test_bf16_model_samples_and_its_export_loads_as_float32(tmp_path) -> None:
    """What a bf16 training run hands the sample grid and the export: the CFG branch, decoding and
    the saved folder all work in bf16, and loading gives float32 weights again."""
    model = tiny_model("local_pixel").to(torch.bfloat16)
    pipe = ImageDreamPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(_images(1), "a", num_inference_steps=2, output_type="np", generator=_gens(0))
    assert out.images.shape == (1, 4, 16, 16, 3) and np.isfinite(out.images).all()
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = ImageDreamPipeline.from_pretrained(tmp_path / "pipe")
    assert {p.dtype for p in loaded.unet.parameters()} == {torch.float32}
    again = loaded(_images(1), "a", num_inference_steps=2, output_type="np", generator=_gens(0))
    assert np.abs(again.images - out.images).mean() < 0.05  # bf16 rounding only


def test_eta_with_one_generator_per_prompt_keeps_prompts_independent(pipe) -> None:
    kw = dict(num_inference_steps=2, eta=1.0, output_type="latent")
    both = pipe(_images(), ["a", "b"], generator=_gens(5, 6), **kw)
    alone = pipe(_images()[1:], ["b"], generator=_gens(6), **kw)
    torch.testing.assert_close(both.latents[1:], alone.latents, atol=1e-5, rtol=1e-5)


def test_a_text_only_model_samples_without_an_image_and_others_refuse() -> None:
    """MVDream (controller none): `image=None`, one prompt per text, its family's views (first
    at azimuth 90); an image-prompt controller without an image is a clear error."""
    mv = ImageDreamPipeline.from_model(tiny_model("none"))
    mv.set_progress_bar_config(disable=True)
    out = mv(None, ["a chair, 3d asset", "a mug, 3d asset"], num_inference_steps=1,
             output_type="latent", generator=_gens(0, 1))  # fmt: skip
    assert out.latents.shape[:2] == (2, 4) and out.prompt_images == []
    assert out.azimuths_deg.tolist() == [90.0, 180.0, 270.0, 0.0]
    with_image = mv(_images(2), ["a chair, 3d asset", "a mug, 3d asset"], num_inference_steps=1,
                    output_type="latent", generator=_gens(0, 1))  # fmt: skip
    torch.testing.assert_close(with_image.latents, out.latents)  # the image is not read
    with pytest.raises(ValueError, match="needs an image prompt"):
        ImageDreamPipeline.from_model(tiny_model("pixel"))(None, "a chair", num_inference_steps=1)


def test_latents_are_the_initial_noise(pipe) -> None:
    """`latents=` replaces the initial noise draw (the generator then draws only the pixel
    latent's noise): the same as letting the generator draw that noise itself."""
    gen_out = pipe(_images(1), "a", num_inference_steps=2, generator=_gens(3), output_type="latent")
    _, noise, _ = pipe.draw_noise(
        1, _gens(3), (1, 4, 8, 8), initial=True, backgrounds=[False],
        prompt_image=pipe.prompt_image_config,
    )  # fmt: skip
    given = pipe(_images(1), "a", num_inference_steps=2, generator=_gens(3), latents=noise,
                 output_type="latent")  # fmt: skip
    torch.testing.assert_close(given.latents, gen_out.latents, rtol=0, atol=0)
    other = pipe(_images(1), "a", num_inference_steps=2, generator=_gens(3),
                 latents=torch.zeros_like(noise), output_type="latent")  # fmt: skip
    assert not torch.allclose(other.latents, gen_out.latents)
    with pytest.raises(ValueError, match="latents must be"):
        pipe(_images(1), "a", num_inference_steps=1, latents=noise[:, :2])


def test_a_mixed_batch_composites_only_its_rgba_prompts(pipe) -> None:
    """An RGB prompt is used as it is (no grey drawn: NaN); an RGBA one is composited on a grey
    drawn from its own generator, so a prompt's result does not depend on its neighbour's alpha."""
    rgb = _images(1)[0]
    rgba = np.dstack([_images(1, seed=1)[0], np.full((24, 24), 128, np.uint8)])
    both = pipe([rgb, rgba], ["a", "b"], num_inference_steps=2, generator=_gens(5, 6),
                output_type="latent")  # fmt: skip
    assert np.isnan(both.background[0]) and 0.0 <= both.background[1] <= 1.0
    np.testing.assert_array_equal(both.prompt_images[0], rgb)
    alone = pipe([rgba], ["b"], num_inference_steps=2, generator=_gens(6), output_type="latent")
    assert alone.background[0] == both.background[1]
    torch.testing.assert_close(both.latents[1:], alone.latents, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pixel_latent"):
        pipe([rgb], "a", num_inference_steps=1, pixel_latent="samples")
