"""The store fixture: every behavioural test runs once per backend.

A backend is a name and a factory that builds an unopened store in a test's
temporary directory. Adding a backend (PostgreSQL) is one more entry in
``STORE_FACTORIES``; the whole suite then runs against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from nexus_schedd.store import MemoryStore, SQLiteStore, Store

StoreFactory = Callable[[Path], Store]

STORE_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": lambda directory: SQLiteStore(directory / "state" / "schedd.db"),
    "memory": lambda directory: MemoryStore(),
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    return str(request.param)


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of the backend under test; closed afterwards."""
    opened = STORE_FACTORIES[backend](tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
