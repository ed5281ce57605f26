"""Fixtures for the evaluation tests: tiny models, their export and a tiny CLIP, built in tmp
folders, no downloads (the shards and prompt images the tests build are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evaluation.metrics.models import write_tiny_clip
from training.model import ImageDream, build_imagedream, compose_model_configs
from training.pipeline import ImageDreamPipeline


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP's
    spinning threads made a 0.05 s forward pass take up to 10 s; restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(controller: str = "local_pixel", seed: int = 0) -> ImageDream:
    """The tiny random model of conf/model/tiny.yaml with a controller of conf/controller/."""
    configs = compose_model_configs("tiny", controller)
    torch.manual_seed(seed)
    return build_imagedream(*configs)


@pytest.fixture(scope="session")
def tiny_local_pixel() -> ImageDream:
    return tiny_model("local_pixel")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_local_pixel: ImageDream) -> Path:
    folder = tmp_path_factory.mktemp("model") / "export"
    ImageDreamPipeline.from_model(tiny_local_pixel).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
