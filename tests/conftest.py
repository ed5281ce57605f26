"""Shared fixtures. Tests never touch the network: model hubs are forced offline and W&B is
disabled unless a test turns it on (offline) itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("IMAGEDREAM_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (or $IMAGEDREAM_SHARED): SPEC files and official_unet_keys.json."""
    path = _shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared folder {path} is absent (set IMAGEDREAM_SHARED)")
    return path


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The real test assets ($IMAGEDREAM_ASSETS, default ../shared/assets); skips if absent."""
    path = Path(os.environ.get("IMAGEDREAM_ASSETS", _shared_dir() / "assets"))
    if not (path / "meshes").is_dir():
        pytest.skip(f"real test assets not found at {path} (set IMAGEDREAM_ASSETS)")
    return path


_EXIT_STATUS: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS["status"] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The bpy wheel and torch in one process crash (SIGSEGV) in Blender's native teardown at
    interpreter exit, after every test has run and been reported. When a test started Blender in
    this process, leave with pytest's own exit status instead of running that teardown."""
    if "blenderproc" in sys.modules and "torch" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS.get("status", 0))
