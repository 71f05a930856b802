"""Fixtures for the producers tests: a real S3 server for the blob store contract."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.s3server import MotoS3Server, S3ServerError


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start a moto S3 server once per session and yield its endpoint URL; fail under CI=true."""
    server = MotoS3Server()
    try:
        endpoint = server.start()
    except S3ServerError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the moto S3 server did not start: {exc}")
        pytest.skip(f"the moto S3 server did not start: {exc}")
    try:
        yield endpoint
    finally:
        server.stop()
