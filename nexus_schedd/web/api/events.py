"""Server-Sent Events for ``/api/v1/events``: the daemon's Watch stream, numbered.

Watch itself has no event ids and no replay, so ``nexus-schedweb`` numbers what
it receives and keeps the last :data:`REPLAY_BUFFER` events in memory. A client
that reconnects with ``Last-Event-ID`` gets every event it missed, as long as
it is still in that buffer and the process is the same (ids carry a per-process
prefix). Otherwise it first gets a ``reset`` event: events were missed (the
buffer moved on, ``nexus-schedweb`` restarted, or the daemon was unreachable for
a while) and it should re-read what it cares about (``GET /api/v1/jobs``).
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

REPLAY_BUFFER = 1024
SUBSCRIBER_BUFFER = 1024


class JsonSource(Protocol):
    """Anything with the JSON form of an event (a Watch event)."""

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Fixed:
    """A JSON object that is already built (daemon up/down)."""

    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.data


@dataclass(slots=True)
class NumberedEvent:
    """One SSE message: its id, its event name and its JSON data (built on first use:
    with nobody listening, an event costs the API almost nothing)."""

    id: str
    kind: str
    source: JsonSource
    _encoded: str | None = field(default=None, repr=False)
    _data: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def data(self) -> dict[str, Any]:
        """The event's JSON object."""
        if self._data is None:
            self._data = self.source.to_json()
        return self._data

    def encode(self) -> str:
        """The wire form."""
        if self._encoded is None:
            payload = json.dumps(self.data, separators=(",", ":"))
            self._encoded = f"id: {self.id}\nevent: {self.kind}\ndata: {payload}\n\n"
        return self._encoded


@dataclass(slots=True)
class Subscription:
    """What a new stream starts with (replayed events, or a reset) and what follows."""

    replay: list[NumberedEvent]
    reset_reason: str | None
    receive: MemoryObjectReceiveStream[NumberedEvent]


class EventLog:
    """Numbers events, keeps the recent ones and fans them out to subscribers."""

    def __init__(self, buffer: int = REPLAY_BUFFER) -> None:
        self.boot = os.urandom(4).hex()
        self._seq = 0
        self._recent: deque[NumberedEvent] = deque(maxlen=buffer)
        self._subscribers: set[MemoryObjectSendStream[NumberedEvent]] = set()
        self._closed = False

    def publish(self, kind: str, source: JsonSource) -> None:
        """Number the event and hand it to every subscriber that keeps up.

        A subscriber whose buffer is full is disconnected (its stream ends), so
        its client reconnects with Last-Event-ID instead of silently losing events.
        """
        self._seq += 1
        event = NumberedEvent(f"{self.boot}-{self._seq}", kind, source)
        self._recent.append(event)
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self._subscribers.discard(send)
                send.close()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)

    @contextmanager
    def subscribe(self, last_event_id: str | None) -> Iterator[Subscription]:
        """Events after ``last_event_id`` (when still known), then live ones."""
        replay: list[NumberedEvent] = []
        reset: str | None = None
        if last_event_id:
            boot, _, seq_text = last_event_id.partition("-")
            seq = int(seq_text) if seq_text.isdigit() else -1
            oldest = int(self._recent[0].id.partition("-")[2]) if self._recent else self._seq + 1
            if boot != self.boot or seq < 0 or seq > self._seq:
                reset = "unknown Last-Event-ID (nexus-schedweb restarted?): events may be missed"
            elif seq + 1 < oldest:
                reset = "events since Last-Event-ID are no longer kept: some were missed"
            else:
                replay = [e for e in self._recent if int(e.id.partition("-")[2]) > seq]
        send, receive = anyio.create_memory_object_stream[NumberedEvent](SUBSCRIBER_BUFFER)
        if self._closed:
            send.close()
        else:
            self._subscribers.add(send)
        try:
            yield Subscription(replay, reset, receive)
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()

    def close(self) -> None:
        """End every stream (on shutdown)."""
        self._closed = True
        for send in list(self._subscribers):
            send.close()
        self._subscribers.clear()
