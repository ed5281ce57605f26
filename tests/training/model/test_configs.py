"""conf/model and conf/controller compose into the typed configs, for every controller."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.hydra_compose import CONF_DIR
from tests.training.model.helpers import compose_configs
from training.model import CONTROLLER_CONFIGS
from training.model.config import ModelConfig, UNetConfig, to_controller_config, to_model_config


def test_every_controller_has_a_yaml_and_vice_versa() -> None:
    yamls = {p.stem for p in (CONF_DIR / "controller").glob("*.yaml")}
    assert yamls == set(CONTROLLER_CONFIGS)


@pytest.mark.parametrize("controller", sorted(CONTROLLER_CONFIGS))
@pytest.mark.parametrize("model", ["tiny", "sd21_mv"])
def test_yaml_composes_to_typed_configs(model: str, controller: str) -> None:
    model_cfg, ctrl_cfg = compose_configs(model, controller)
    assert type(model_cfg) is ModelConfig
    assert type(ctrl_cfg) is CONTROLLER_CONFIGS[controller] and ctrl_cfg.name == controller


def test_sd21_mv_yaml_is_the_spec_model() -> None:
    model_cfg, _ = compose_configs("sd21_mv", "local_pixel")
    assert model_cfg == ModelConfig()
    assert model_cfg.unet.block_out_channels == [320, 640, 1280, 1280]
    assert model_cfg.vae.scaling_factor == 0.18215
    assert (model_cfg.image_encoder.num_tokens, model_cfg.image_encoder.hidden_size) == (257, 1280)


def test_plain_dicts_and_errors() -> None:
    ctrl = to_controller_config({"name": "local", "depth": 2})
    assert ctrl.depth == 2 and ctrl.num_queries == 16
    with pytest.raises(KeyError, match="unknown controller"):
        to_controller_config({"name": "pixels"})
    with pytest.raises(FileNotFoundError, match="original_checkpoint"):
        to_model_config({"weights": {"original_checkpoint": str(Path("/nonexistent/x.pt"))}})
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(attention_levels=[True])
    with pytest.raises(ValueError, match="cross_attention_dim"):
        to_model_config({"unet": {"cross_attention_dim": 768}})
