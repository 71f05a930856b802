"""A real S3-compatible server on loopback for tests: moto's threaded server, in this process."""

from __future__ import annotations

import socket
import threading
from typing import Any

import boto3
from botocore.config import Config

# moto accepts any credentials; they are set on every client so the environment never counts.
ACCESS_KEY = "test"
SECRET_KEY = "test"
REGION = "us-east-1"


class S3ServerError(RuntimeError):
    """The moto S3 server could not be started."""


class MotoS3Server:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port, with a bounded start."""

    def __init__(self, start_timeout: float = 10.0) -> None:
        self._start_timeout = start_timeout
        self._server: Any = None
        self.endpoint = ""

    def start(self) -> str:
        """Start the server and return its endpoint URL; raise ``S3ServerError`` if it fails."""
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise S3ServerError(f"moto[server] is not installed: {exc}") from exc
        _check_loopback_bind()
        # Port 0: the OS picks a free port at bind time, so parallel sessions cannot collide.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        # ThreadedMotoServer.start() waits forever if binding fails in its thread, so wait
        # for it from a helper thread with a deadline instead.
        starter = threading.Thread(target=server.start, name="moto-start", daemon=True)
        starter.start()
        starter.join(self._start_timeout)
        if starter.is_alive():
            raise S3ServerError(f"moto did not start within {self._start_timeout} s")
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        if self._server is not None:
            self._server.stop()
            self._server = None


def _check_loopback_bind() -> None:
    # A bind failure inside moto's thread would only print a traceback; find it out here.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
    except OSError as exc:
        raise S3ServerError(f"cannot listen on 127.0.0.1: {exc}") from exc


def s3_client(endpoint: str) -> Any:
    """Return a boto3 S3 client for ``endpoint`` with the fake credentials set explicitly."""
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    return session.client("s3", endpoint_url=endpoint, config=config)
