"""``Idempotency-Key``: the first reply to a POST, kept durably for 24 hours.

The keys live in a small SQLite file owned by ``nexus-schedweb`` (``[api]
idempotency_db``), so a restart of the dashboard or of the daemon forgets
nothing. A key belongs to one token: the same key from two tokens is two keys.

* first use: the row is claimed (``state = 'pending'``) before the request is
  forwarded, then completed with the reply's status, headers and body;
* same key, same request (method, path and body bytes): the stored reply, with
  its status, and nothing is done again; a duplicate that arrives while the
  first is still in flight waits for it (same process) or gets 409 (a row a
  previous process left pending: its outcome is unknown);
* same key, another request: 422.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiosqlite
import anyio

from nexus_schedd.clock import Clock

KEEP = timedelta(hours=24)
MAX_KEY_CHARS = 255
PRUNE_EVERY = timedelta(minutes=10)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    token TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    status INTEGER,
    headers TEXT,
    body BLOB,
    PRIMARY KEY (token, key)
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created_at);
"""


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A reply as first sent."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`IdempotencyStore.claim` found: ``fresh`` (go ahead), a ``stored``
    reply to repeat, a ``conflict`` (another body: 422) or ``in_flight`` (409)."""

    fresh: bool = False
    stored: StoredReply | None = None
    conflict: bool = False
    in_flight: bool = False


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same" for a key."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    """The SQLite file of keys; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        # One per process: rows it left pending belong to a dead process after a restart.
        self.owner = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._db: aiosqlite.Connection | None = None
        self._locks: dict[tuple[str, str], tuple[anyio.Lock, int]] = {}
        self._last_prune: datetime | None = None

    async def open(self) -> None:
        """Create the folder and the file (mode 0600) and prune expired keys."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            self.path.touch(mode=0o600)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()
        await self._prune()

    async def close(self) -> None:
        """Close the file."""
        if self._db is not None:
            await self._db.close()
            self._db = None

    def lock(self, token: str, key: str) -> _KeyLock:
        """The in-process lock of one key (duplicates in flight wait for the first)."""
        return _KeyLock(self, (token, key))

    async def claim(self, token: str, key: str, request_fingerprint: str) -> Claim:
        """Claim ``key`` for this request, or say what it already holds."""
        db = self._connection()
        now = self.clock.now()
        await self._prune_now_and_then(now)
        cursor = await db.execute(
            "SELECT fingerprint, created_at, state, owner, status, headers, body"
            " FROM idempotency WHERE token = ? AND key = ?",
            (token, key),
        )
        row = await cursor.fetchone()
        await cursor.close()
        if row is not None and row[1] < (now - KEEP).timestamp():
            await db.execute("DELETE FROM idempotency WHERE token = ? AND key = ?", (token, key))
            row = None
        if row is None:
            await db.execute(
                "INSERT INTO idempotency (token, key, fingerprint, created_at, state, owner)"
                " VALUES (?, ?, ?, ?, 'pending', ?)",
                (token, key, request_fingerprint, now.timestamp(), self.owner),
            )
            await db.commit()
            return Claim(fresh=True)
        stored_fingerprint, _, state, _owner, status, headers, body = row
        if stored_fingerprint != request_fingerprint:
            return Claim(conflict=True)
        if state != "done":
            return Claim(in_flight=True)
        return Claim(stored=StoredReply(int(status), json.loads(headers), bytes(body)))

    async def complete(self, token: str, key: str, reply: StoredReply) -> None:
        """Keep the reply of a claimed key (fsync'd before the reply is sent)."""
        db = self._connection()
        await db.execute(
            "UPDATE idempotency SET state = 'done', status = ?, headers = ?, body = ?"
            " WHERE token = ? AND key = ? AND owner = ?",
            (reply.status, json.dumps(reply.headers), reply.body, token, key, self.owner),
        )
        await db.commit()

    async def release(self, token: str, key: str) -> None:
        """Forget a claim whose request failed before reaching the daemon (retry allowed)."""
        db = self._connection()
        await db.execute(
            "DELETE FROM idempotency WHERE token = ? AND key = ? AND owner = ? AND state = 'pending'",
            (token, key, self.owner),
        )
        await db.commit()

    async def _prune_now_and_then(self, now: datetime) -> None:
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
            await self._prune()

    async def _prune(self) -> None:
        db = self._connection()
        now = self.clock.now()
        self._last_prune = now
        await db.execute(
            "DELETE FROM idempotency WHERE created_at < ?", ((now - KEEP).timestamp(),)
        )
        await db.commit()

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the idempotency store is not open")
        return self._db


class _KeyLock:
    """``async with``: hold the in-process lock of one key."""

    def __init__(self, store: IdempotencyStore, ident: tuple[str, str]) -> None:
        self._store = store
        self._ident = ident

    async def __aenter__(self) -> None:
        locks = self._store._locks
        lock, users = locks.get(self._ident, (anyio.Lock(), 0))
        locks[self._ident] = (lock, users + 1)
        await lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        locks = self._store._locks
        lock, users = locks[self._ident]
        lock.release()
        if users <= 1:
            del locks[self._ident]
        else:
            locks[self._ident] = (lock, users - 1)


def valid_key(key: str) -> bool:
    """1 to 255 visible ASCII characters."""
    return 0 < len(key) <= MAX_KEY_CHARS and all(33 <= ord(char) <= 126 for char in key)


def reply_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth repeating with a stored reply."""
    keep = ("content-type", "location")
    return {name: value for name, value in headers.items() if name.lower() in keep}


__all__ = ["Claim", "IdempotencyStore", "StoredReply", "fingerprint", "valid_key"]
