"""Fan-out of engine events to Watch subscribers, each with a bounded buffer."""

from __future__ import annotations

from collections import deque

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

    def subscribe(self) -> Subscription:
        """Events published from now on: the subscription is in place when this returns
        (Watch's ``announce`` tells a client so), and ends when the caller stops
        iterating or closes it."""
        subscriber = _Subscriber(self._buffer_size)
        self._subscribers.append(subscriber)
        return Subscription(self, subscriber)

    def _leave(self, subscriber: _Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)


class Subscription:
    """One subscriber's events, in order; ``aclose()`` (or ending the iteration) leaves."""

    __slots__ = ("_hub", "_subscriber")

    def __init__(self, hub: EventHub, subscriber: _Subscriber) -> None:
        self._hub = hub
        self._subscriber = subscriber

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if not await self._wait():
            raise StopAsyncIteration
        return self._subscriber.buffer.popleft()

    async def next_batch(self) -> list[Event]:
        """Every event published since the last call, in order, waiting for one if
        there is none; an empty list once the subscription is closed.

        For a subscriber that writes what it gets: the events of one loop turn,
        or those published while it was busy with the last batch, come at once.
        """
        if not await self._wait():
            return []
        buffer = self._subscriber.buffer
        batch = list(buffer)
        buffer.clear()
        return batch

    async def _wait(self) -> bool:
        """Wait until an event is buffered; False once the subscription is closed."""
        subscriber = self._subscriber
        while not subscriber.buffer:
            if subscriber not in self._hub._subscribers:
                return False
            subscriber.ready = anyio.Event()
            await subscriber.ready.wait()
        return True

    async def aclose(self) -> None:
        """Stop receiving events (a task waiting in ``__anext__`` gets
        StopAsyncIteration, one in ``next_batch`` an empty list)."""
        self._hub._leave(self._subscriber)
        self._subscriber.ready.set()
