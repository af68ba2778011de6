"""The fan-out of engine events to Watch subscribers (nexus_schedd.engine.events)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from nexus_schedd.engine.events import EventHub
from nexus_schedd.model.events import Event, EventKind

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 29, tzinfo=UTC)


def event(n: int) -> Event:
    return Event(EventKind.JOB_UPDATED, T0 + timedelta(seconds=n))


async def test_a_batch_is_every_event_published_since_the_last_in_order() -> None:
    hub = EventHub()
    subscription = hub.subscribe()
    for n in range(5):
        hub.publish(event(n))
    assert await subscription.next_batch() == [event(n) for n in range(5)]
    got: list[list[Event]] = []

    async def take() -> None:
        got.append(await subscription.next_batch())

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await anyio.wait_all_tasks_blocked()  # nothing buffered: it waits
        assert got == []
        hub.publish(event(5))
        hub.publish(event(6))
    assert got == [[event(5), event(6)]]


async def test_a_subscriber_that_falls_behind_loses_its_oldest_events() -> None:
    hub = EventHub(buffer_size=3)
    subscription = hub.subscribe()
    for n in range(5):
        hub.publish(event(n))
    assert await subscription.next_batch() == [event(2), event(3), event(4)]


async def test_closing_ends_batches_and_wakes_a_waiting_one() -> None:
    hub = EventHub()
    subscription = hub.subscribe()
    got: list[list[Event]] = []

    async def take() -> None:
        got.append(await subscription.next_batch())

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await anyio.wait_all_tasks_blocked()
        await subscription.aclose()
    assert got == [[]]
    hub.publish(event(1))  # no longer delivered
    assert not hub.active
    assert await subscription.next_batch() == []
