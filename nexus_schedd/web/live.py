"""Live updates: one Watch stream per dashboard, fanned out to every browser.

:class:`EventPump` keeps a Watch call open on the daemon (reconnecting with
backoff while it is down), counts each event into the run metrics, and
publishes it through a :class:`Broadcaster` to the ``/events`` Server-Sent
Events streams of the open pages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from nexus_schedd.client import Client
from nexus_schedd.errors import SchedulerError
from nexus_schedd.model.events import Event
from nexus_schedd.model.times import format_instant
from nexus_schedd.web.metrics import RunMetrics

log = structlog.get_logger("nexus_schedd.web")

SUBSCRIBER_BUFFER = 256
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0


class Broadcaster:
    """Fans messages out to subscribers; a subscriber that falls behind loses messages
    rather than holding up the others."""

    def __init__(self, buffer: int = SUBSCRIBER_BUFFER) -> None:
        self._buffer = buffer
        self._subscribers: set[MemoryObjectSendStream[str]] = set()
        self._closed = False

    @contextmanager
    def subscribe(self) -> Iterator[MemoryObjectReceiveStream[str]]:
        """A stream of messages from now on; it ends when the broadcaster closes."""
        send, receive = anyio.create_memory_object_stream[str](self._buffer)
        if self._closed:
            send.close()
        else:
            self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()

    @property
    def subscriber_count(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)

    def publish(self, message: str) -> None:
        """Queue ``message`` for every subscriber that has room."""
        for send in list(self._subscribers):
            try:
                send.send_nowait(message)
            except anyio.WouldBlock:
                pass
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)

    def close(self) -> None:
        """End every subscriber's stream (on shutdown, so open pages let go)."""
        self._closed = True
        for send in list(self._subscribers):
            send.close()
        self._subscribers.clear()


def sse_message(kind: str, data: dict[str, Any]) -> str:
    """One Server-Sent Events message."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def event_summary(event: Event) -> dict[str, Any]:
    """The fields of a Watch event the pages show (not payloads or outputs)."""
    job = event.job
    run = event.run
    return {
        "kind": event.kind.value,
        "at": format_instant(event.at),
        "job": None
        if job is None
        else {
            "id": job.id,
            "name": job.name,
            "job_type": job.job_type,
            "status": job.status.value,
            "run_at": None if job.run_at is None else format_instant(job.run_at),
        },
        "run": None
        if run is None
        else {
            "id": run.id,
            "job_id": run.job_id,
            "job_type": run.job_type,
            "attempt": run.attempt,
            "outcome": None if run.outcome is None else run.outcome.value,
            "duration_ms": run.duration_ms,
            "error": run.error,
        },
    }


@dataclass(frozen=True, slots=True)
class DaemonState:
    """The daemon went up or down, for listeners that want JSON."""

    up: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"up": self.up, "reason": self.reason}


class EventPump:
    """Feeds the daemon's Watch events to the run metrics and the broadcaster."""

    def __init__(
        self, socket: str | None, run_metrics: RunMetrics, broadcaster: Broadcaster
    ) -> None:
        self.socket = socket
        self.run_metrics = run_metrics
        self.broadcaster = broadcaster
        self.connected = False
        self.sessions = 0
        self.listeners: list[Callable[[str, Any], None]] = []
        """Called with (the event's kind, the Watch :class:`Event`), or with ("daemon",
        an object whose ``to_json()`` is {"up", "reason"})."""

    async def run(self) -> None:
        """Watch forever; while the daemon is down, retry with capped exponential backoff."""
        delay = RETRY_MIN_S
        while True:
            sessions = self.sessions
            try:
                await self._watch_once()
            except SchedulerError as exc:
                self._set_connected(False, str(exc))
            if self.sessions != sessions:
                # It was up: a restart should be noticed quickly, not after a long backoff.
                delay = RETRY_MIN_S
            await anyio.sleep(delay)
            delay = min(RETRY_MAX_S, delay * 2)

    async def _watch_once(self) -> None:
        client = Client(self.socket, timeout=10.0)
        # GetStatus first: Watch itself is silent until something happens, and the
        # pages should learn at once that the daemon is back.
        async with client:
            await client.status()
        self._set_connected(True, "")
        async with aclosing(client.watch()) as events:
            async for event in events:
                self.run_metrics.observe(event)
                if self.broadcaster.subscriber_count:
                    # Built only for open pages: every add and run sends events.
                    self.broadcaster.publish(sse_message("change", event_summary(event)))
                for listener in self.listeners:
                    listener(event.kind.value, event)
        self._set_connected(False, "the daemon ended the Watch stream")

    def _set_connected(self, connected: bool, reason: str) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        if connected:
            self.sessions += 1
            log.info("web_watching_daemon", socket=str(self.socket or "default"))
        else:
            log.warning("web_daemon_lost", reason=reason)
        self.broadcaster.publish(sse_message("daemon", {"up": connected, "reason": reason}))
        for listener in self.listeners:
            listener("daemon", DaemonState(connected, reason))
