"""Engine test fixtures: every test runs on asyncio and uvloop, against the memory
and the SQLite store (a real file), on a virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_schedd.store import MemoryStore, SQLiteStore
from tests.engine.harness import TrackedStore


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """The engine runs on plain asyncio and on uvloop (the daemon's default)."""
    return request.param


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[TrackedStore]:
    """An opened store (memory, or SQLite on a real file) that counts calls in flight."""
    inner = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "schedd.db")
    tracked = TrackedStore(inner)
    await tracked.open()
    try:
        yield tracked
    finally:
        await tracked.close()
