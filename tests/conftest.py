"""Shared test configuration: anyio's built-in pytest plugin, pinned to asyncio."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the engine's tests add a uvloop variant)."""
    return "asyncio"
