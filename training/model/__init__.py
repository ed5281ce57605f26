"""The ImageDream network (SPEC 4). Public API: see docs/CONTRACTS.md, section training.model."""

from training.model.build import build_imagedream
from training.model.config import (
    CONTROLLER_CONFIGS,
    ControllerConfig,
    GlobalControllerConfig,
    LocalControllerConfig,
    LocalPixelControllerConfig,
    ModelConfig,
    NoneControllerConfig,
    PixelControllerConfig,
    compose_model_configs,
    register_configs,
)
from training.model.controllers import (
    CONTROLLERS,
    Conditioning,
    Controller,
    ImagePromptFeatures,
)
from training.model.denoiser import build_denoiser
from training.model.imagedream import ImageDream

__all__ = [
    "CONTROLLERS",
    "CONTROLLER_CONFIGS",
    "Conditioning",
    "Controller",
    "ControllerConfig",
    "GlobalControllerConfig",
    "ImageDream",
    "ImagePromptFeatures",
    "LocalControllerConfig",
    "LocalPixelControllerConfig",
    "ModelConfig",
    "NoneControllerConfig",
    "PixelControllerConfig",
    "build_denoiser",
    "build_imagedream",
    "compose_model_configs",
    "register_configs",
]
