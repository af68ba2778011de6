"""The embedded SQLite store, one file per side of its process boundary:

- :mod:`.store`: :class:`SQLiteStore`, in the daemon (reads, the write queue and
  group commit);
- :mod:`.writer_client`: the daemon's handle on the writer process;
- :mod:`.writer_process`: the writer process itself (stdlib only) and the typed
  messages both sides exchange;
- :mod:`.schema`: the schema and its migrations.
"""

from __future__ import annotations

from nexus_schedd.store.sqlite.store import SWITCH_INTERVAL_S, SQLiteStore, sqlite_path_from_url

__all__ = ["SWITCH_INTERVAL_S", "SQLiteStore", "sqlite_path_from_url"]
