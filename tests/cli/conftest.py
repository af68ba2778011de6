"""Fixtures for the CLI tests: a real daemon (engine, SQLite, control server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.control.harness import Daemon, running_daemon


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """A running daemon for one test."""
    async with running_daemon(tmp_path / "schedd.db") as running:
        yield running
