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

from tests.s3_env import FaultyApp, S3Faults, point_at_s3

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


S3_FAULTS = S3Faults()  # what the session's S3 server injects (fixture s3_faults)


def _faulty_moto_server() -> Any:
    """moto's ThreadedMotoServer with its app behind `FaultyApp` (moto 5.2.5's _server_entry,
    the app wrapped)."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class FaultyMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = FaultyApp(DomainDispatcherApplication(create_backend_app), S3_FAULTS)
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return FaultyMotoServer(ip_address="127.0.0.1", port=0, verbose=False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A local S3-compatible server (moto) on 127.0.0.1, one per session, with one bucket;
    yields its endpoint URL. It injects the faults a test sets through `s3_faults` (none
    otherwise). Skips when moto or s3fs is not installed."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = _faulty_moto_server()
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


@pytest.fixture
def s3_faults(s3: S3Prefix) -> Iterator[S3Faults]:
    """The faults the session's S3 server injects during this test (none at its start, none
    after it): `fail(match, times)` answers matching requests 500 InternalError (or another
    status and code), `delay(match, seconds)` holds them; `requests(match)` counts what the
    server saw. The server runs in this process, so the faults reach every process that talks
    to it."""
    S3_FAULTS.reset(on=True)
    yield S3_FAULTS
    S3_FAULTS.reset(on=False)


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
