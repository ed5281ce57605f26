"""training.released: a checkpoint in the released layout (official key names and shapes at
tiny size) becomes a pipeline folder that samples, and a pipeline goes back to that layout."""

from __future__ import annotations

import numpy as np
import torch

from tests.training.helpers import sd21_folder
from tests.training.model.helpers import tiny_model
from training.model.convert import ORIGINAL_PREFIX
from training.model.released_layout import save_original_checkpoint
from training.pipeline import ImageDreamPipeline
from training.released import main


def test_released_checkpoint_to_pipeline_and_back(tmp_path) -> None:
    source = tiny_model("local_pixel", seed=4)
    released = save_original_checkpoint(source, tmp_path / "sd-v2.1-base-4view-ipmv.pt")
    sd21 = sd21_folder(source, tmp_path / "sd21")
    source.image_encoder.model.save_pretrained(tmp_path / "clip")
    out = tmp_path / "imagedream-p"
    main(
        [
            "to-pipeline",
            f"--checkpoint={released}",
            "--controller=local_pixel",
            "--model=tiny",
            f"--sd21={sd21}",
            f"--image-encoder={tmp_path / 'clip'}",
            f"--out={out}",
        ]
    )
    pipe = ImageDreamPipeline.from_pretrained(out)
    for k, v in source.denoiser_state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[k], v), k
    views = pipe(
        np.full((1, 16, 16, 3), 200, np.uint8),
        "a chair, 3d asset",
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert views.shape == (1, 4, 16, 16, 3) and np.isfinite(views).all()

    back = tmp_path / "back.pt"
    main(["to-released", f"--pipeline={out}", f"--out={back}"])
    a, b = torch.load(released, weights_only=True), torch.load(back, weights_only=True)
    assert a.keys() == b.keys() and any(k.startswith(ORIGINAL_PREFIX) for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_converter_refuses_to_invent_encoders(tmp_path) -> None:
    import pytest

    from training.released import released_to_pipeline

    released = save_original_checkpoint(tiny_model("local"), tmp_path / "local.pt")
    with pytest.raises(ValueError, match="diffusers folder is required"):
        released_to_pipeline(released, "local", None, None, model="tiny")
    with pytest.raises(ValueError, match="needs the CLIP ViT-H-14 image encoder"):
        released_to_pipeline(released, "local", str(tmp_path), None, model="tiny")


def test_a_converted_release_samples_with_its_familys_defaults(tmp_path) -> None:
    """SPEC 6: an MVDream file becomes a pipeline that samples as MVDream's t2i.py (CFG 10,
    elevation 15, first view at azimuth 90, empty negative text); an ImageDream file as their
    demo. The defaults are in the saved folder's config, so a reload keeps them."""
    for controller, family, scale, azimuths in (
        ("none", "mvdream", 10.0, [90.0, 180.0, 270.0, 0.0]),
        ("local", "imagedream", 5.0, [0.0, 90.0, 180.0, 270.0]),
    ):
        source = tiny_model(controller, seed=4)
        released = save_original_checkpoint(source, tmp_path / f"{controller}.pt")
        sd21 = sd21_folder(source, tmp_path / f"sd21_{controller}")
        args = [f"--image-encoder={tmp_path / 'clip'}"] if controller != "none" else []
        if controller != "none":
            source.image_encoder.model.save_pretrained(tmp_path / "clip")
        out = tmp_path / f"pipe_{controller}"
        main(["to-pipeline", f"--checkpoint={released}", f"--controller={controller}",
              "--model=tiny", f"--sd21={sd21}", *args, f"--out={out}"])  # fmt: skip
        pipe = ImageDreamPipeline.from_pretrained(out)
        pipe.set_progress_bar_config(disable=True)
        settings = pipe.sampling_settings
        assert (settings.family, settings.guidance_scale) == (family, scale)
        assert settings.elevation_deg == (15.0 if family == "mvdream" else 5.0)
        assert (settings.negative_prompt == "") == (family == "mvdream")
        out_views = pipe(np.zeros((16, 16, 3), np.uint8), "a chair, 3d asset",
                         num_inference_steps=1, output_type="latent")  # fmt: skip
        assert out_views.azimuths_deg.tolist() == azimuths
        assert out_views.elevation_deg.tolist() == [settings.elevation_deg]
