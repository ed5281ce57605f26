"""Fixtures of the model tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def official_keys(shared_dir: Path) -> dict:
    path = shared_dir / "official_unet_keys.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent (set IMAGEDREAM_SHARED)")
    return json.loads(path.read_text())
