"""Every experiment and debug config composes with Hydra into a checked, typed TrainConfig, and
the DeepSpeed config generated from it carries the paper's settings."""

from __future__ import annotations

import pytest

from contract.hydra_compose import CONF_DIR as CONF
from tests.training.helpers import compose_train
from training.config import TrainConfig, from_yaml, to_yaml
from training.engine import deepspeed_config
from training.model import CONTROLLER_CONFIGS

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER = {
    "imagedream_global": ("global", 1e-4),
    "imagedream_local": ("local", 1e-4),
    "imagedream_pixel": ("pixel", 1e-5),
    "imagedream_local_pixel": ("local_pixel", 1e-5),
}


def test_experiments_exist():
    assert set(PAPER) <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.name and cfg.run_dir.endswith(cfg.name)
    if experiment in PAPER:
        controller, lr = PAPER[experiment]
        assert cfg.controller.name == controller
        assert cfg.engine.lr == lr
        assert cfg.trainer.max_steps == 60_000
        assert cfg.data.prompt_dropout == 0.1
        ds = deepspeed_config(cfg, world_size=8)  # batch 256 with accumulation 2 on 8 GPUs
        assert ds["train_batch_size"] == 256 and ds["gradient_accumulation_steps"] == 2
        assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["lr"] == lr
        assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"]


@pytest.mark.parametrize("controller", sorted(CONTROLLER_CONFIGS))
def test_debug_tiny_composes_for_every_controller(controller):
    cfg = compose_train(["debug=tiny", f"controller={controller}"])
    assert cfg.controller.name == controller
    assert cfg.model.unet.block_out_channels[0] < 320, "tiny model"
    assert cfg.engine.precision == "fp32" and cfg.engine.backend == "gloo"
    assert cfg.data.image_size == cfg.model.vae.sample_size
    assert from_yaml(to_yaml(cfg)) == cfg, "the saved config reloads to the same values"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.views_per_ring=30", "multiple of 4"),
        ("data.prompt_dropout=1.5", "prompt_dropout"),
        ("engine.zero_stage=3", "ZeRO-3"),  # with ema_decay below
        ("engine.precision=fp8", "precision"),
        ("data.image_size=64", "vae.sample_size"),
        ("engine.warmup_steps=100", "never reach"),
    ],
)
def test_cross_field_checks(override, message):
    extra = ["engine.ema_decay=0.999"] if "zero_stage" in override else []
    with pytest.raises(Exception, match=message):
        compose_train(["debug=tiny", override, *extra])


@pytest.mark.parametrize(("controller", "family"), [("none", "mvdream"), ("pixel", "imagedream")])
def test_the_export_records_the_familys_sampling_and_the_trained_suffix_and_grey(
    controller, family
):
    """What `export_model` records (SPEC 6): the family's defaults with this run's caption
    suffix, and the grey range its prompts were composited on."""
    cfg = compose_train([
        "debug=tiny", f"controller={controller}", "data.caption_suffix=', a toy'",
        "data.grey_min=0.25", "data.grey_max=0.75",
    ])  # fmt: skip
    settings = cfg.sampling_settings()
    assert (settings.family, settings.text_suffix) == (family, ", a toy")
    assert settings.guidance_scale == (10.0 if family == "mvdream" else 5.0)
    grey = cfg.data.prompt_image()
    assert (grey.background_min, grey.background_max) == (0.25, 0.75)
