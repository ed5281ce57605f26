"""The environment that points boto and s3fs at an S3-compatible server: the session's moto server
(tests/conftest.py), and a Ray cluster started with it (tests/data_pipeline/test_job_remote.py)."""

from __future__ import annotations

import os

import pytest


def point_at_s3(mp: pytest.MonkeyPatch, endpoint: str) -> None:
    """The environment a user sets for an S3-compatible store (contract.storage): botocore
    reads AWS_ENDPOINT_URL; dummy credentials, no credential files, no instance metadata."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                 "https_proxy"):  # fmt: skip
        mp.delenv(name, raising=False)
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("AWS_CONFIG_FILE", os.devnull)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")
