"""Shared fixtures. Tests never touch the network: model hubs are forced offline and W&B is
disabled unless a test turns it on (offline) itself."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.s3_env import point_at_s3

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


S3_BUCKET = "imagedream-test"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A local S3-compatible server (moto) on 127.0.0.1, one per session, with one bucket;
    yields its endpoint URL. Skips when moto or s3fs is not installed."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        point_at_s3(mp, endpoint)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(S3_BUCKET)
    yield endpoint
    server.stop()


@dataclass
class S3Prefix:
    """One test's own prefix in the session's bucket (s3fs pointed at the local server)."""

    url: str  # s3://imagedream-test/<unique>
    fs: Any  # s3fs.S3FileSystem

    def upload(self, folder: Path, prefix: str = "") -> str:
        """Every file under `folder` to url/prefix/<relative path>; returns that URL."""
        target = f"{self.url}/{prefix}".rstrip("/")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.fs.put_file(str(path), f"{target}/{path.relative_to(folder).as_posix()}")
        return target


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Prefix:
    """The S3 environment for this test (see `point_at_s3`) and a fresh prefix to upload into."""
    point_at_s3(monkeypatch, s3_server)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    return S3Prefix(url=f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:12]}", fs=fs)


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
