"""Local stand-ins of Cloud Storage and Blob Storage for the blob store tests.

Cloud Storage: gcp-storage-emulator (PyPI), in this process. Blob Storage: Azurite (npm,
deploy/local/azurite), a child process. Both on loopback and a port the OS picks.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AZURITE = ROOT / "deploy" / "local" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented development account and key (the same in every Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class StandInError(RuntimeError):
    """A stand-in could not be started."""


class GcsEmulator:
    """gcp-storage-emulator on 127.0.0.1, in memory."""

    def __init__(self) -> None:
        self._server: Any = None
        self.endpoint = ""

    def start(self) -> str:
        """Start it and return its endpoint URL."""
        try:
            from gcp_storage_emulator.server import create_server
        except ImportError as exc:
            raise StandInError(f"gcp-storage-emulator is not installed: {exc}") from exc
        self._server = create_server("127.0.0.1", 0, in_memory=True)
        self._server.start()
        port = self._server._api._httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        return self.endpoint

    def stop(self) -> None:
        """Stop it."""
        if self._server is not None:
            self._server.stop()


class Azurite:
    """Azurite's Blob service on 127.0.0.1, in memory, as a child process."""

    def __init__(self, log: Path, start_timeout: float = 20.0) -> None:
        self._log = log
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self) -> str:
        """Start it and return the development account's endpoint URL."""
        binary = Path(os.environ.get("TASKQ_TEST_AZURITE") or AZURITE)
        if not binary.is_file():
            raise StandInError(f"Azurite is not installed at {binary}")
        command = [str(binary), "--blobHost", "127.0.0.1", "--blobPort", "0"]
        command += ["--inMemoryPersistence", "--skipApiVersionCheck", "--silent"]
        # Its output goes to a file, so a chatty Azurite can never block on a full pipe.
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            found = re.search(r"listens on (http://127\.0\.0\.1:\d+)", self._log.read_text())
            if found:
                self.endpoint = f"{found.group(1)}/{AZURITE_ACCOUNT}"
                return self.endpoint
            time.sleep(0.05)
        self.stop()
        raise StandInError(
            f"Azurite did not start within {self._start_timeout} s: {self._log.read_text()[-500:]}"
        )

    def stop(self) -> None:
        """Stop it and wait for it to exit (killed: it keeps nothing, and lingers on SIGTERM)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
