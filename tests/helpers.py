"""Small helpers shared by the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

MINIMAL = """
groups:
  email:
    jobs: [email]
"""


def write_topology(tmp_path: Path, text: str, name: str = "topology.yaml") -> Path:
    """Write dedented YAML ``text`` under ``tmp_path`` and return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path
