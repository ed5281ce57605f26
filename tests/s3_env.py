"""The environment that points boto and s3fs at an S3-compatible server: the session's moto server
(tests/conftest.py), and a Ray cluster started with it (tests/data_pipeline/test_job_remote.py);
and the faults that server injects when a test asks (`S3Faults`, fixture `s3_faults`)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest

from contract.retry_policy import STORE_ATTEMPTS_ENV

# Attempts per S3 request in tests (contract.storage): a permanent failure costs 3 requests and
# about 1.5 s of backoff, so a test can inject up to 2 failures into a request that then succeeds
TEST_STORE_ATTEMPTS = 3


def point_at_s3(mp: pytest.MonkeyPatch, endpoint: str) -> None:
    """The environment a user sets for an S3-compatible store (contract.storage): botocore
    reads AWS_ENDPOINT_URL; dummy credentials, no credential files, no instance metadata; and
    the tests' bound on attempts per request."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                 "https_proxy", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS"):  # fmt: skip
        mp.delenv(name, raising=False)
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("AWS_CONFIG_FILE", os.devnull)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")
    mp.setenv(STORE_ATTEMPTS_ENV, str(TEST_STORE_ATTEMPTS))


@dataclass
class Fault:
    """What the server does to requests whose target (path?query, unquoted) contains `match`."""

    match: str
    times: int | None  # how many requests it still hits; None: every one (a permanent failure)
    status: int = 500
    code: str = "InternalError"
    delay: float = 0.0  # > 0: answer normally, but only after this many seconds (a timeout)
    method: str | None = None  # only requests with this HTTP method (GET, PUT, HEAD, ...)


class S3Faults:
    """The faults the session's S3 server injects, on the server side, so that they reach every
    process (Ray workers, DataLoader workers, subprocesses). Thread-safe: the server answers
    each request on its own thread. While on (a test that uses the fixture), it also records
    every request's method and target; off, it lets every request through untouched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._on = False
        self._faults: list[Fault] = []
        self._seen: list[tuple[str, str]] = []

    def reset(self, on: bool) -> None:
        """No faults, nothing seen; then on (recording, injecting what is set) or off."""
        with self._lock:
            self._on, self._faults, self._seen = on, [], []

    def fail(
        self,
        match: str,
        times: int | None = 1,
        *,
        status: int = 500,
        code: str = "InternalError",
        method: str | None = None,
    ) -> None:
        """Answer the next `times` matching requests (None: all of them) with `status` and an
        S3 error body (500 InternalError; 503 SlowDown for throttling)."""
        with self._lock:
            self._faults.append(Fault(match, times, status, code, method=method))

    def delay(
        self, match: str, seconds: float, times: int | None = 1, *, method: str | None = None
    ) -> None:
        """Hold the next `times` matching requests `seconds` before answering them."""
        with self._lock:
            self._faults.append(Fault(match, times, delay=seconds, method=method))

    def requests(self, match: str = "", method: str | None = None) -> int:
        """How many requests the server saw (since the last reset) whose target contains
        `match`, failed ones included."""
        with self._lock:
            return sum(match in t and method in (None, m) for m, t in self._seen)

    def take(self, method: str, target: str) -> Fault | None:
        """The fault for one request (counted against its `times`), or None."""
        with self._lock:
            if not self._on:
                return None
            self._seen.append((method, target))
            for fault in self._faults:
                if fault.match in target and fault.method in (None, method):
                    if fault.times is not None:
                        if fault.times == 0:
                            continue
                        fault.times -= 1
                    return fault
            return None


class FaultyApp:
    """WSGI middleware in front of the S3 server's app that injects `S3Faults`."""

    def __init__(self, app: Callable[..., Iterable[bytes]], faults: S3Faults) -> None:
        self.app, self.faults = app, faults

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = str(environ.get("REQUEST_METHOD", ""))
        target = f"{environ.get('PATH_INFO', '')}?{unquote(environ.get('QUERY_STRING', ''))}"
        fault = self.faults.take(method, target)
        if fault is None:
            return self.app(environ, start_response)
        if fault.delay:
            time.sleep(fault.delay)  # the client has given up by now (its read timeout)
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)  # the request's body, unused
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
            f"<Message>injected by the test ({fault.code})</Message>"
            "<RequestId>injected</RequestId></Error>"
        ).encode()
        start_response(
            f"{fault.status} {fault.code}",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
        )
        return [body] if method != "HEAD" else []
