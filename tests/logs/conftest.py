"""Fixtures for the logging tests: a captured sink, and the process's logging put back after."""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Callable, Iterator

import orjson
import pytest
from loguru import logger

from telemetry.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo what configure_logging() changes process-wide, so later tests log as before."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    logger.remove()
    logger.configure(patcher=lambda record: None)
    logger.add(sys.stderr)
    root.handlers, root.level = handlers, level
    sys.excepthook, threading.excepthook = hooks
    logging.captureWarnings(False)


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


Lines = Callable[[], list[dict]]


@pytest.fixture
def json_lines() -> Lines:
    """Configure JSON logging into a buffer; return a function parsing every line written."""
    stream = io.StringIO()
    assert configure_logging("INFO", "json", stream=stream) == "json"

    def parsed() -> list[dict]:
        return [orjson.loads(line) for line in stream.getvalue().splitlines()]

    return parsed
