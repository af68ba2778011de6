"""Durable storage of jobs and runs: one interface (:mod:`.base`), one module per backend."""

from __future__ import annotations

from nexus_schedd.errors import StoreError
from nexus_schedd.store.base import Durability, Store
from nexus_schedd.store.memory import MemoryStore
from nexus_schedd.store.sqlite import SQLiteStore, sqlite_path_from_url

__all__ = [
    "Durability",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "open_store",
    "sqlite_path_from_url",
]


def open_store(url: str, *, durability: Durability = "full", node: str = "") -> Store:
    """The store a ``[store] url`` names, not yet opened (``await store.open()`` next).

    ``sqlite:///abs/path.db`` and ``sqlite://relative/path.db`` (or
    ``sqlite:relative/path.db``; see :func:`sqlite_path_from_url`) give an
    :class:`SQLiteStore`; ``postgresql://...`` (or ``postgres://``) a
    :class:`~nexus_schedd.store.postgres.PostgresStore` in the URL's ``?schema=``
    (default ``public``), whose notifications name ``node``; ``memory:`` a
    :class:`MemoryStore` (tests only).
    """
    if url == "memory:":
        return MemoryStore()
    if url.startswith("sqlite:"):
        return SQLiteStore(sqlite_path_from_url(url), durability=durability)
    if url.startswith(("postgresql://", "postgres://")):
        # Imported here so that SQLite deployments never load the PostgreSQL driver.
        from nexus_schedd.store.postgres import PostgresStore, postgres_options_from_url

        dsn, schema = postgres_options_from_url(url)
        return PostgresStore(dsn, schema=schema, durability=durability, node=node)
    raise StoreError(
        f"unsupported store URL {url!r}: use sqlite:///absolute/path.db, "
        "sqlite://relative/path.db, postgresql://user@host/db?schema=name or memory:"
    )
