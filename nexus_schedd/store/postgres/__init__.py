"""The multi-node PostgreSQL store (:mod:`.store`) and its schema (:mod:`.schema`).

Imported only when a ``postgresql://`` URL is opened, so SQLite deployments never
load the driver.
"""

from __future__ import annotations

from nexus_schedd.store.postgres.store import PostgresStore, Wakeup, postgres_options_from_url

__all__ = ["PostgresStore", "Wakeup", "postgres_options_from_url"]
