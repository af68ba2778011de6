"""The nats handler against a real NATS server with JetStream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from nexus_schedd.handlers.queues.nats_jetstream import REPLY_HEADER, NatsHandler
from tests.handlers.queues.conftest import NATS_PORT, NATS_URL, TRACE_CONTEXT, MakeAttempt
from tests.handlers.queues.proxy import running_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def handler() -> AsyncIterator[NatsHandler]:
    handler = NatsHandler(NATS_URL, ("nxs-test-*",), reply_timeout_s=5)
    try:
        yield handler
    finally:
        await handler.aclose()


@pytest.fixture
async def subject(nats_client: Any, name: str) -> AsyncIterator[str]:
    """A subject captured by a stream of its own (removed afterwards)."""
    js = nats_client.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    try:
        yield f"{name}.jobs"
    finally:
        await js.delete_stream(name)


async def test_publish_succeeds_on_the_puback_and_the_stream_drops_a_repeat(
    handler: NatsHandler, subject: str, nats_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("nats", {"subject": subject, "body": [1, 2]})
    first = await handler.handle(job, ctx)
    again = await handler.handle(job, ctx)  # a hand-off repeated after a crash
    assert first.ok and again.ok
    assert first.output["duplicate"] is False and again.output["duplicate"] is True
    js = nats_client.jetstream()
    info = await js.stream_info(subject.split(".")[0])
    assert info.state.messages == 1
    message = await js.get_last_msg(subject.split(".")[0], subject)
    assert message.headers["Nats-Msg-Id"] == ctx.idempotency_key
    assert json.loads(message.data)["payload"]["body"] == [1, 2]


async def test_the_trace_context_goes_in_the_message_headers(
    handler: NatsHandler, subject: str, nats_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("nats", {"subject": subject}, trace_context=TRACE_CONTEXT)
    assert (await handler.handle(job, ctx)).ok
    message = await nats_client.jetstream().get_last_msg(subject.split(".")[0], subject)
    assert message.headers == {"Nats-Msg-Id": ctx.idempotency_key, **TRACE_CONTEXT}


async def test_a_subject_no_stream_captures_is_a_permanent_failure(
    handler: NatsHandler, name: str, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("nats", {"subject": f"{name}.nowhere"})
    result = await handler.handle(job, ctx)
    assert (
        not result.ok and not result.should_retry and "no JetStream stream" in (result.error or "")
    )


async def test_a_full_stream_refusing_the_message_is_a_retriable_failure(
    handler: NatsHandler, nats_client: Any, name: str, attempt: MakeAttempt
) -> None:
    js = nats_client.jetstream()
    from nats.js.api import DiscardPolicy, StreamConfig

    await js.add_stream(
        StreamConfig(name=name, subjects=[f"{name}.>"], max_msgs=1, discard=DiscardPolicy.NEW)
    )
    try:
        for n in (1, 2):
            job, ctx = attempt("nats", {"subject": f"{name}.jobs", "body": n})
            result = await handler.handle(job, ctx)
        assert not result.ok and result.should_retry and "refused" in (result.error or "")
    finally:
        await js.delete_stream(name)


async def _worker(nats_client: Any, subject: str, reply: bytes) -> None:
    """A JetStream consumer: take one request, answer on its Nexus-Reply-To subject."""
    js = nats_client.jetstream()
    sub = await js.pull_subscribe(subject, durable=None)
    try:
        [message] = await sub.fetch(1, timeout=10)
        await nats_client.publish(message.headers[REPLY_HEADER], reply)
        await message.ack()
    finally:
        await sub.unsubscribe()


async def test_request_mode_takes_the_workers_result(
    handler: NatsHandler, subject: str, nats_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("nats", {"subject": subject, "mode": "request"})
    reply = json.dumps({"success": False, "error": "no", "should_retry": False}).encode()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_worker, nats_client, subject, reply)
        result = await handler.handle(job, ctx)
    assert (result.ok, result.error, result.should_retry) == (False, "no", False)


async def test_a_reply_that_is_not_a_job_result_is_a_retriable_failure(
    handler: NatsHandler, subject: str, nats_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("nats", {"subject": subject, "mode": "request"})
    async with anyio.create_task_group() as tg:
        tg.start_soon(_worker, nats_client, subject, b"[1, 2, 3]")
        result = await handler.handle(job, ctx)
    assert not result.ok and result.should_retry and "not a JobResult" in (result.error or "")


async def test_no_reply_within_the_timeout_is_a_retriable_failure(
    subject: str, attempt: MakeAttempt
) -> None:
    handler = NatsHandler(NATS_URL, ("nxs-test-*",), reply_timeout_s=0.3)
    try:
        job, ctx = attempt("nats", {"subject": subject, "mode": "request"})
        result = await handler.handle(job, ctx)
    finally:
        await handler.aclose()
    assert not result.ok and result.should_retry and "no reply" in (result.error or "")


async def test_broker_down_then_dropping_the_connection_are_retriable_and_recovered(
    subject: str, attempt: MakeAttempt
) -> None:
    async with running_proxy(NATS_PORT) as proxy:
        proxy.up = False
        handler = NatsHandler(f"nats://127.0.0.1:{proxy.port}", ("nxs-test-*",))
        handler.link.backoff_min_s = handler.link.backoff_max_s = 0.0
        try:
            job, ctx = attempt("nats", {"subject": subject})
            down = await handler.handle(job, ctx)
            assert not down.ok and down.should_retry and "cannot connect" in (down.error or "")
            proxy.up = True
            assert (await handler.handle(job, ctx)).ok
            await proxy.drop()
            outcomes = [await handler.handle(job, ctx) for _ in range(2)]
            assert all(r.ok or r.should_retry for r in outcomes) and outcomes[-1].ok
            assert handler.link.connects == 2
        finally:
            await handler.aclose()
