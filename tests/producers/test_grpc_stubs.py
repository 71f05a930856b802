"""The checked-in gRPC modules are what the .proto generates today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "producers/grpc_api/v1/jobs.proto"
GENERATED = ("jobs_pb2.py", "jobs_pb2.pyi", "jobs_pb2_grpc.py", "jobs_pb2_grpc.pyi")


def generate(into: Path) -> list[str]:
    """Return the command that writes the modules of ``PROTO`` under ``into`` (mirroring its path)."""
    bin_dir = Path(sys.executable).parent
    return [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={into}",
        f"--grpc_python_out={into}",
        f"--mypy_out={into}",
        f"--mypy_grpc_out={into}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        str(ROOT / PROTO),
    ]


def test_the_checked_in_stubs_match_the_proto(tmp_path: Path):
    done = subprocess.run(generate(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    folder = Path(PROTO).parent
    stale = [
        name
        for name in GENERATED
        if (tmp_path / folder / name).read_bytes() != (ROOT / folder / name).read_bytes()
    ]
    assert stale == [], (
        "regenerate them (docs/development.md): PATH=.venv/bin:$PATH python -m "
        "grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --mypy_out=. "
        "--mypy_grpc_out=. " + PROTO
    )
