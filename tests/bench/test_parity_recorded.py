"""What `make parity` recorded from the authors' released code (tests/data/parity, written by
`python -m bench.parity --record`), pinned here because CI cannot reach their code: their
prompt preparation of one RGBA prompt (composite, CLIP input, pixel latent), their DDIM
timesteps for several step counts, their demo's negative text, and the key layouts of their
model classes, which our exports must match."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.parity import GREY, SEED, build_ours, parity_prompt
from training.diffusion import ldm_ddim_timesteps
from training.model.released_layout import released_state_dict
from training.prompt_image import clip_input, composite_on_grey, prepare_prompts
from training.sampling_settings import MODEL_FAMILIES, NEGATIVE_PROMPT

RECORDED = Path(__file__).resolve().parents[1] / "data" / "parity"


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads((RECORDED / "recorded.json").read_text())


@pytest.fixture(scope="module")
def theirs() -> dict[str, np.ndarray]:
    with np.load(RECORDED / "prompt_preparation.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def local_pixel():
    return build_ours("local_pixel", seed=SEED)


def test_the_recording_is_of_this_prompt_grey_and_seed(recorded) -> None:
    assert (recorded["grey"], recorded["seed"]) == (GREY, SEED)


def test_a_transparent_prompt_is_composited_and_clip_prepared_as_theirs(theirs) -> None:
    rgba = np.asarray(parity_prompt())
    composite = composite_on_grey(rgba, GREY)
    np.testing.assert_array_equal(composite, theirs["local_pixel/prompt_composite"])
    np.testing.assert_allclose(
        clip_input(composite, 28), theirs["local_pixel/clip_input"][0], atol=1e-6
    )
    # on white (what the pipeline did before), neither the composite nor the CLIP input is theirs
    white = composite_on_grey(rgba, 1.0)
    assert np.abs(white.astype(int) - theirs["local_pixel/prompt_composite"]).max() > 100
    white_clip = clip_input(white, 28).numpy()
    assert np.abs(white_clip - theirs["local_pixel/clip_input"][0]).max() > 0.5


def test_the_pixel_latent_is_their_posterior_sample(theirs, local_pixel) -> None:
    """The same weights (the parity model, seed SEED) and the same noise (the first draw of a
    generator seeded SEED, their torch.manual_seed): their pixel latent."""
    composite = composite_on_grey(np.asarray(parity_prompt()), GREY)
    prompts = prepare_prompts([composite], 64, 28)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
    latent = local_pixel.encode_prompt_latent(prompts.vae, noise).numpy()
    np.testing.assert_allclose(latent, theirs["local_pixel/pixel_latent"], atol=1e-5)
    mean = local_pixel.encode_prompt_latent(prompts.vae, None).numpy()
    assert np.abs(mean - theirs["local_pixel/pixel_latent"]).max() > 0.01  # the mean is not it
    white = prepare_prompts([composite_on_grey(np.asarray(parity_prompt()), 1.0)], 64, 28)
    on_white = local_pixel.encode_prompt_latent(white.vae, noise).numpy()
    assert np.abs(on_white - theirs["local_pixel/pixel_latent"]).max() > 0.01


@pytest.mark.parametrize("steps", [10, 25, 30, 50, 100, 333])
def test_ddim_timesteps_are_their_rule(recorded, steps) -> None:
    """Their `range(0, 1000, 1000 // S) + 1`, descending; for S = 333 its top entry, 1000, is
    past the schedule (their sampler raises there) and is taken at 999 instead."""
    their = np.asarray(recorded["ddim_timesteps"][str(steps)])
    ours = ldm_ddim_timesteps(steps, 1000)
    np.testing.assert_array_equal(ours, np.minimum(their, 999)[::-1])
    assert (len(ours), int(ours[0])) == {
        10: (10, 901), 25: (25, 961), 30: (31, 991), 50: (50, 981), 100: (100, 991),
        333: (334, 999),
    }[steps]  # fmt: skip
    assert ldm_ddim_timesteps(3, 1000).tolist() == [999, 667, 334, 1]  # theirs: 1000 -> IndexError


def test_negative_text_is_their_demos(recorded) -> None:
    assert (
        recorded["negative_text"] == NEGATIVE_PROMPT == MODEL_FAMILIES["imagedream"].negative_prompt
    )
    assert MODEL_FAMILIES["mvdream"].negative_prompt == ""  # their t2i.py: uc of [""]


@pytest.mark.parametrize(("case", "controller"), [("mvdream", "none"), ("local", "local"),
                                                  ("local_pixel", "local_pixel")])  # fmt: skip
def test_the_export_has_their_classes_key_layout(recorded, case, controller) -> None:
    """Every key and shape of their LatentDiffusionInterface, none more: MVDream's loader is
    strict (`load_state_dict(..., strict=True)`), so this is what makes the file load there."""
    model = build_ours(controller, seed=0)
    state = released_state_dict(model)
    ours = {k: list(v.shape) for k, v in state.items()}
    layout = recorded["layouts"][case]
    assert sorted(set(ours) - set(layout)) == [] and sorted(set(layout) - set(ours)) == []
    assert {k: v for k, v in ours.items() if layout[k] != v} == {}
