"""One broker connection per handler, opened on first use and reopened with backoff."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
import structlog

from nexus_schedd.model import JobResult

_log = structlog.get_logger("nexus_schedd.handlers.queues")

C = TypeVar("C")

CLOSE_TIMEOUT_S = 5.0


class BrokerUnavailable(Exception):
    """The broker cannot be reached now; the attempt is a retriable failure."""


class BrokerLink(Generic[C]):
    """The handler's one connection to its broker.

    ``get()`` returns the open connection or opens it (bounded by
    ``connect_timeout_s``); concurrent callers share one connect. After a failed
    connect, callers fail at once with :class:`BrokerUnavailable` until the
    backoff (``backoff_min_s`` doubling up to ``backoff_max_s``, with jitter) has
    passed, so a dead broker costs each attempt nothing and is not hammered.
    ``discard(conn)`` drops a connection found broken (the next ``get()`` reopens
    it); ``aclose()`` closes it for good (shutdown, reload).
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[C]],
        close: Callable[[C], Awaitable[None]],
        is_open: Callable[[C], bool],
        *,
        connect_timeout_s: float = 10.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.name = name
        self._connect = connect
        self._close = close
        self._is_open = is_open
        self.connect_timeout_s = connect_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._conn: C | None = None
        self._lock = anyio.Lock()
        self._failures = 0
        self._retry_at = -math.inf
        self._last_error = ""
        self._closed = False
        self._discarded: C | None = None
        self.connects = 0
        """How many connections were opened (for tests and logs)."""

    async def get(self) -> C:
        """The open connection, opened now if needed; raises BrokerUnavailable."""
        conn = self._conn
        if conn is not None and not self.broken(conn):
            return conn
        async with self._lock:
            if self._closed:
                raise BrokerUnavailable(f"the {self.name} handler is closed")
            conn = self._conn
            if conn is not None and not self.broken(conn):
                return conn
            if conn is not None:
                self._conn = None
                await self._close_quietly(conn)
            wait = self._retry_at - anyio.current_time()
            if wait > 0:
                raise BrokerUnavailable(
                    f"{self.name} broker unavailable ({self._last_error}); "
                    f"next connect in {wait:.1f} s"
                )
            try:
                with anyio.fail_after(self.connect_timeout_s):
                    conn = await self._connect()
            except Exception as exc:
                self._failures += 1
                delay = min(self.backoff_max_s, self.backoff_min_s * 2 ** (self._failures - 1))
                delay *= random.uniform(0.5, 1.0)  # jitter: handlers do not retry in step
                self._retry_at = anyio.current_time() + delay
                if isinstance(exc, TimeoutError):
                    self._last_error = f"connect timed out after {self.connect_timeout_s:g} s"
                else:
                    self._last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                _log.warning(
                    "broker_connect_failed",
                    handler=self.name,
                    error=self._last_error,
                    failures=self._failures,
                    retry_in_s=round(delay, 3),
                )
                raise BrokerUnavailable(
                    f"cannot connect to the {self.name} broker: {self._last_error}"
                ) from None
            self._failures = 0
            self._retry_at = -math.inf
            self._conn = conn
            self._discarded = None
            self.connects += 1
            _log.info("broker_connected", handler=self.name, connects=self.connects)
            return conn

    def discard(self, conn: C) -> None:
        """Forget ``conn`` (found broken); the next ``get()`` closes it and reconnects."""
        if self._conn is conn:
            self._discarded = conn

    def broken(self, conn: C) -> bool:
        """True if ``conn`` is no longer this link's open connection."""
        return self._conn is not conn or conn is self._discarded or not self._is_open(conn)

    async def aclose(self) -> None:
        """Close the connection; later ``get()`` calls fail."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._close_quietly(conn)

    async def _close_quietly(self, conn: C) -> None:
        await cleanup(lambda: self._close(conn))


async def cleanup(call: Callable[[], Awaitable[object]]) -> None:
    """Run a clean-up call (close, unsubscribe, delete) even when the attempt is being
    cancelled, bounded by CLOSE_TIMEOUT_S; its failure is ignored (the broker or the
    connection is gone, and with it what there was to clean up)."""
    with (
        anyio.CancelScope(shield=True),
        anyio.move_on_after(CLOSE_TIMEOUT_S),
        contextlib.suppress(Exception),
    ):
        await call()


def unavailable(exc: BrokerUnavailable) -> JobResult:
    """The retriable failure of an attempt that found its broker unavailable."""
    return JobResult.failure(str(exc))


__all__ = ["BrokerLink", "BrokerUnavailable", "cleanup", "unavailable"]
