"""Fan-out of engine events to Watch subscribers, each with a bounded buffer."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

import anyio

from nexus_schedd.model.events import Event

DEFAULT_BUFFER = 1000


class _Subscriber:
    __slots__ = ("buffer", "dropped", "ready")

    def __init__(self, size: int) -> None:
        self.buffer: deque[Event] = deque(maxlen=size)
        self.ready = anyio.Event()
        self.dropped = 0


class EventHub:
    """Publishes events to every subscriber; a slow one loses its oldest events."""

    def __init__(self, buffer_size: int = DEFAULT_BUFFER) -> None:
        self._buffer_size = buffer_size
        self._subscribers: list[_Subscriber] = []

    @property
    def active(self) -> bool:
        """True while someone listens (callers skip building events otherwise)."""
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscriber without waiting for any of them."""
        for subscriber in self._subscribers:
            if len(subscriber.buffer) == subscriber.buffer.maxlen:
                subscriber.dropped += 1
            subscriber.buffer.append(event)
            subscriber.ready.set()

    async def subscribe(self) -> AsyncIterator[Event]:
        """Events published from now on, until the caller stops iterating."""
        subscriber = _Subscriber(self._buffer_size)
        self._subscribers.append(subscriber)
        try:
            while True:
                while subscriber.buffer:
                    yield subscriber.buffer.popleft()
                subscriber.ready = anyio.Event()
                await subscriber.ready.wait()
        finally:
            self._subscribers.remove(subscriber)
