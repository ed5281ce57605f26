"""Fixtures for the evaluation tests: tiny models written to tmp folders, no downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.metrics.models import write_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
