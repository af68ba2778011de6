"""A small pool of control-socket connections for the API.

A new connection costs the daemon a peer-credential and group lookup, so API
requests reuse idle connections (one request at a time each). A connection idle
for longer than :data:`MAX_IDLE` (well under the daemon's idle timeout), or one
the daemon has closed (it restarted: seen before anything is sent, by peeking
at the socket), is dropped rather than reused. Should a reused connection still
fail, a read is retried once on a new one; a write is not, since its outcome is
unknown: it answers 503 and the client decides (with an Idempotency-Key, safely).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from nexus_schedd.client import Client
from nexus_schedd.clock import Clock
from nexus_schedd.errors import DaemonUnreachable, ProtocolError, SchedulerError

MAX_IDLE_CONNECTIONS = 32
MAX_IDLE = timedelta(seconds=60)
READ_METHODS = frozenset(
    {"GetStatus", "GetJob", "ListJobs", "ListRuns", "Preview", "ListHandlers", "ExportCalendar"}
)


class DaemonPool:
    """Reusable :class:`Client` connections to one socket."""

    def __init__(self, socket: str | None, timeout: float, clock: Clock) -> None:
        self.socket = socket
        self.timeout = timeout
        self.clock = clock
        self._idle: list[tuple[datetime, Client]] = []

    async def call(self, method: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """One call on a pooled connection; returns its reply parameters."""
        client, reused = await self._acquire()
        try:
            try:
                result = await client.call(method, parameters)
            except (DaemonUnreachable, ProtocolError):
                await client.aclose()
                if not (reused and method in READ_METHODS):
                    raise
                client = await self._connect()
                result = await client.call(method, parameters)
        except SchedulerError as exc:
            if isinstance(exc, DaemonUnreachable | ProtocolError):
                await client.aclose()
            else:
                # The daemon's answer (JobNotFound, InvalidSpec, ...): the connection is fine.
                await self._release(client)
            raise
        except BaseException:
            # A cancelled call may leave a reply in flight: never reuse that connection.
            await client.aclose()
            raise
        await self._release(client)
        return result

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for _, client in idle:
            await client.aclose()

    async def _acquire(self) -> tuple[Client, bool]:
        now = self.clock.now()
        while self._idle:
            since, client = self._idle.pop()
            if now - since < MAX_IDLE and not client.closed_by_daemon():
                return client, True
            await client.aclose()
        return await self._connect(), False

    async def _connect(self) -> Client:
        client = Client(self.socket, timeout=self.timeout)
        await client.__aenter__()
        return client

    async def _release(self, client: Client) -> None:
        if len(self._idle) >= MAX_IDLE_CONNECTIONS:
            await client.aclose()
        else:
            self._idle.append((self.clock.now(), client))
