"""Shared test configuration: anyio's built-in pytest plugin, pinned to asyncio,
and the logging set-up restored after tests that change it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the engine's tests add a uvloop variant)."""
    return "asyncio"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo ``configure_logging``: the root logger's handlers and level, and
    structlog's defaults."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
