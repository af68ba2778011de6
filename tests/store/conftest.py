"""The store fixture: every behavioural test runs once per backend.

A backend is a name and a factory that builds an unopened store in a test's
temporary directory. Adding a backend is one more entry in
``STORE_FACTORIES``; the whole suite then runs against it. The PostgreSQL
backend gets a fresh schema per test (dropped afterwards), so parallel runs
against one server never collide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from nexus_schedd.store import MemoryStore, SQLiteStore, Store
from nexus_schedd.store.postgres import PostgresStore
from tests.store.factories import (
    POSTGRES_DSN,
    check_postgres_reachable,
    drop_schema,
    fresh_schema_name,
)

StoreFactory = Callable[[Path], Store]

STORE_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": lambda directory: SQLiteStore(directory / "state" / "schedd.db"),
    "memory": lambda directory: MemoryStore(),
    "postgres": lambda directory: PostgresStore(POSTGRES_DSN, schema=fresh_schema_name()),
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    return str(request.param)


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of the backend under test; closed afterwards."""
    if backend == "postgres":
        await check_postgres_reachable()
    opened = STORE_FACTORIES[backend](tmp_path)
    try:
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()
    finally:
        if isinstance(opened, PostgresStore):
            await drop_schema(opened.schema)
