"""Reliability fixtures: a real SQLite store for engine-level fault tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nexus_schedd.store import SQLiteStore
from tests.engine.harness import TrackedStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TrackedStore]:
    """An opened SQLite store on a real file that counts calls in flight."""
    tracked = TrackedStore(SQLiteStore(tmp_path / "schedd.db"))
    await tracked.open()
    try:
        yield tracked
    finally:
        await tracked.close()
