"""The amqp handler against a real RabbitMQ."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from nexus_schedd.handlers.queues.amqp import AmqpHandler
from tests.handlers.queues.conftest import AMQP_PORT, AMQP_URL, TRACE_CONTEXT, MakeAttempt
from tests.handlers.queues.proxy import TcpProxy, running_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def handler() -> AsyncIterator[AmqpHandler]:
    handler = AmqpHandler(AMQP_URL, ("nxs-test-*",), reply_timeout_s=5)
    try:
        yield handler
    finally:
        await handler.aclose()


@pytest.fixture
async def queue(amqp_channel: Any, name: str) -> AsyncIterator[Any]:
    queue = await amqp_channel.declare_queue(name, durable=True)
    try:
        yield queue
    finally:
        await queue.delete(if_unused=False, if_empty=False)


async def test_publish_succeeds_on_the_confirm_with_the_envelope_and_message_id(
    handler: AmqpHandler, queue: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("amqp", {"routing_key": queue.name, "headers": {"tenant": "a"}})
    result = await handler.handle(job, ctx)
    assert result.ok, result.error
    message = await queue.get(timeout=5)
    await message.ack()
    assert message.message_id == ctx.idempotency_key
    assert message.delivery_mode == 2  # persistent
    assert message.headers["tenant"] == "a"
    envelope = json.loads(message.body)
    assert envelope == {
        "job_id": job.id,
        "job_type": "amqp",
        "target_id": None,
        "payload": job.payload,
        "run_id": ctx.run_id,
        "attempt": 1,
        "scheduled_for": "2026-03-01T12:00:00+00:00",
        "idempotency_key": ctx.idempotency_key,
    }


async def test_the_trace_context_goes_in_the_message_headers(
    handler: AmqpHandler, queue: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt(
        "amqp", {"routing_key": queue.name, "headers": {"tenant": "a"}}, trace_context=TRACE_CONTEXT
    )
    assert (await handler.handle(job, ctx)).ok
    message = await queue.get(timeout=5)
    await message.ack()
    assert message.headers == {"tenant": "a", **TRACE_CONTEXT}


async def test_a_repeated_hand_off_carries_the_same_message_id(
    handler: AmqpHandler, queue: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("amqp", {"routing_key": queue.name, "envelope": False, "body": "hi"})
    assert (await handler.handle(job, ctx)).ok
    assert (await handler.handle(job, ctx)).ok
    first, second = await queue.get(timeout=5), await queue.get(timeout=5)
    assert first.message_id == second.message_id == ctx.idempotency_key
    assert first.body == b"hi"


async def test_an_unroutable_message_is_a_permanent_failure(
    handler: AmqpHandler, name: str, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("amqp", {"routing_key": name})  # no queue of that name
    result = await handler.handle(job, ctx)
    assert not result.ok and not result.should_retry
    assert "unroutable" in (result.error or "")
    # The channel survives a return: the next hand-off works on the same connection.
    assert handler.link.connects == 1


async def test_a_nack_is_a_retriable_failure(
    handler: AmqpHandler, amqp_channel: Any, name: str, attempt: MakeAttempt
) -> None:
    # A full queue that rejects publishes: RabbitMQ nacks them.
    full = await amqp_channel.declare_queue(
        name, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    try:
        job, ctx = attempt("amqp", {"routing_key": name})
        result = await handler.handle(job, ctx)
        assert not result.ok and result.should_retry
        assert "nack" in (result.error or "")
    finally:
        await full.delete(if_unused=False, if_empty=False)


async def _reply_with(queue: Any, channel: Any, reply: bytes, seen: list[Any]) -> None:
    """A worker: take one request and answer it on its reply_to with ``reply``."""
    import aio_pika

    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                seen.append(message)
                await channel.default_exchange.publish(
                    aio_pika.Message(reply, correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                )
            return


async def test_request_mode_takes_the_workers_result_with_retry_intent_and_delay(
    handler: AmqpHandler, queue: Any, amqp_channel: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("amqp", {"routing_key": queue.name, "mode": "request"}, attempt=2)
    reply = {"success": False, "error": "db busy", "should_retry": True, "retry_delay_s": 42}
    seen: list[Any] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_reply_with, queue, amqp_channel, json.dumps(reply).encode(), seen)
        result = await handler.handle(job, ctx)
    assert (result.ok, result.error, result.should_retry, result.retry_delay_s) == (
        False,
        "db busy",
        True,
        42.0,
    )
    assert seen[0].correlation_id == ctx.run_id
    # A retry the worker asked for is a new request: the attempt number is in its id.
    assert seen[0].message_id == f"{ctx.idempotency_key}:2"


async def test_request_mode_success_output_is_the_workers(
    handler: AmqpHandler, queue: Any, amqp_channel: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("amqp", {"routing_key": queue.name, "mode": "request"})
    reply = json.dumps({"success": True, "output": {"rows": 3}}).encode()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_reply_with, queue, amqp_channel, reply, [])
        result = await handler.handle(job, ctx)
    assert result.ok and result.output == {"rows": 3}


async def test_a_reply_that_is_not_a_job_result_is_a_retriable_failure(
    handler: AmqpHandler, queue: Any, amqp_channel: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("amqp", {"routing_key": queue.name, "mode": "request"})
    async with anyio.create_task_group() as tg:
        tg.start_soon(_reply_with, queue, amqp_channel, b'{"status": "done"}', [])
        result = await handler.handle(job, ctx)
    assert not result.ok and result.should_retry
    assert "not a JobResult" in (result.error or "")


async def test_no_reply_within_the_timeout_is_a_retriable_failure(
    queue: Any, attempt: MakeAttempt
) -> None:
    handler = AmqpHandler(AMQP_URL, ("nxs-test-*",), reply_timeout_s=0.5)
    try:
        job, ctx = attempt("amqp", {"routing_key": queue.name, "mode": "request"})
        result = await handler.handle(job, ctx)
    finally:
        await handler.aclose()
    assert not result.ok and result.should_retry
    assert "no reply" in (result.error or "")


async def test_broker_down_at_start_up_is_retriable_then_recovers(
    queue: Any, attempt: MakeAttempt
) -> None:
    async with running_proxy(AMQP_PORT) as proxy:
        proxy.up = False
        handler = AmqpHandler(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", ("nxs-test-*",))
        handler.link.backoff_min_s = handler.link.backoff_max_s = 0.0
        await _down_then_up(handler, proxy, queue, attempt)


async def _down_then_up(
    handler: AmqpHandler, proxy: TcpProxy, queue: Any, attempt: MakeAttempt
) -> None:
    try:
        job, ctx = attempt("amqp", {"routing_key": queue.name})
        down = await handler.handle(job, ctx)
        assert not down.ok and down.should_retry
        assert "cannot connect" in (down.error or "")
        proxy.up = True
        assert (await handler.handle(job, ctx)).ok
    finally:
        await handler.aclose()
    assert (await queue.get(timeout=5)).message_id == ctx.idempotency_key


async def test_a_connection_dropped_mid_run_is_reopened(queue: Any, attempt: MakeAttempt) -> None:
    async with running_proxy(AMQP_PORT) as proxy:
        handler = AmqpHandler(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", ("nxs-test-*",))
        await _dropped(handler, proxy, queue, attempt)


async def _dropped(handler: AmqpHandler, proxy: TcpProxy, queue: Any, attempt: MakeAttempt) -> None:
    try:
        job, ctx = attempt("amqp", {"routing_key": queue.name})
        assert (await handler.handle(job, ctx)).ok
        await proxy.drop()
        # The drop is met by at most one retriable failure, then a new connection.
        outcomes = [await handler.handle(job, ctx) for _ in range(2)]
        assert all(r.ok or r.should_retry for r in outcomes)
        assert outcomes[-1].ok
        assert handler.link.connects == 2
    finally:
        await handler.aclose()


async def test_a_missing_exchange_is_a_permanent_failure_and_the_channel_is_reopened(
    handler: AmqpHandler, queue: Any, name: str, attempt: MakeAttempt
) -> None:
    handler.allow = ("nxs-test-*",)
    job, ctx = attempt("amqp", {"exchange": f"{name}-none", "routing_key": "x"})
    result = await handler.handle(job, ctx)
    assert not result.ok and not result.should_retry and "no exchange" in (result.error or "")
    # RabbitMQ closed the channel; the next hand-off gets a new one.
    good, good_ctx = attempt("amqp", {"routing_key": queue.name})
    assert (await handler.handle(good, good_ctx)).ok


async def test_after_aclose_an_attempt_is_a_retriable_failure(
    queue: Any, attempt: MakeAttempt
) -> None:
    handler = AmqpHandler(AMQP_URL, ("nxs-test-*",))
    job, ctx = attempt("amqp", {"routing_key": queue.name})
    assert (await handler.handle(job, ctx)).ok
    await handler.aclose()
    closed = await handler.handle(job, ctx)
    assert not closed.ok and closed.should_retry and "closed" in (closed.error or "")
