"""The redis handler against a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from nexus_schedd.handlers.queues.redis_streams import RedisHandler
from tests.handlers.queues.conftest import REDIS_PORT, REDIS_URL, TRACE_CONTEXT, MakeAttempt
from tests.handlers.queues.proxy import TcpProxy, running_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def handler() -> AsyncIterator[RedisHandler]:
    handler = RedisHandler(REDIS_URL, ("nxs-test-*",), reply_timeout_s=5)
    try:
        yield handler
    finally:
        await handler.aclose()


@pytest.fixture
async def stream(redis_client: Any, name: str) -> AsyncIterator[str]:
    try:
        yield name
    finally:
        await redis_client.delete(name)


async def test_publish_succeeds_on_the_xadd_reply_with_the_message_id_field(
    handler: RedisHandler, stream: str, redis_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("redis", {"stream": stream, "maxlen": 100, "body": {"n": 1}})
    result = await handler.handle(job, ctx)
    assert result.ok, result.error
    [(entry_id, fields)] = await redis_client.xrange(stream)
    assert result.output == {"message_id": ctx.idempotency_key, "stream_id": entry_id.decode()}
    assert fields[b"message_id"].decode() == ctx.idempotency_key
    envelope = json.loads(fields[b"body"])
    assert envelope["payload"]["body"] == {"n": 1}
    assert envelope["run_id"] == ctx.run_id and envelope["job_id"] == job.id


async def test_the_trace_context_goes_in_the_entry_s_fields(
    handler: RedisHandler, stream: str, redis_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("redis", {"stream": stream, "body": 1}, trace_context=TRACE_CONTEXT)
    assert (await handler.handle(job, ctx)).ok
    [(_id, fields)] = await redis_client.xrange(stream)
    assert set(fields) == {b"message_id", b"body", b"traceparent", b"tracestate"}
    assert {key: fields[key.encode()].decode() for key in TRACE_CONTEXT} == TRACE_CONTEXT


async def test_envelope_false_sends_the_body_alone(
    handler: RedisHandler, stream: str, redis_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("redis", {"stream": stream, "envelope": False, "body": {"n": 1}})
    assert (await handler.handle(job, ctx)).ok
    [(_id, fields)] = await redis_client.xrange(stream)
    assert json.loads(fields[b"body"]) == {"n": 1}


async def _worker(redis_client: Any, stream: str, reply: dict[str, Any] | bytes) -> None:
    """A consumer: read one request, XADD the reply to its reply_to stream."""
    found = await redis_client.xread({stream: "0"}, count=1, block=10_000)
    _stream, [(_id, fields)] = found[0]
    envelope = json.loads(fields[b"body"])
    assert envelope["reply_to"] == fields[b"reply_to"].decode()
    raw = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
    await redis_client.xadd(envelope["reply_to"], {"result": raw})


async def test_request_mode_takes_the_workers_result_with_retry_intent_and_delay(
    handler: RedisHandler, stream: str, redis_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("redis", {"stream": stream, "mode": "request"})
    reply = {"success": False, "error": "later", "should_retry": True, "retry_delay_s": 7}
    async with anyio.create_task_group() as tg:
        tg.start_soon(_worker, redis_client, stream, reply)
        result = await handler.handle(job, ctx)
    assert (result.ok, result.error, result.should_retry, result.retry_delay_s) == (
        False,
        "later",
        True,
        7.0,
    )
    # The reply stream is removed once read.
    assert await redis_client.exists(f"nexus:reply:{ctx.run_id}") == 0


async def test_a_reply_that_is_not_a_job_result_is_a_retriable_failure(
    handler: RedisHandler, stream: str, redis_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("redis", {"stream": stream, "mode": "request"})
    async with anyio.create_task_group() as tg:
        tg.start_soon(_worker, redis_client, stream, b"not json")
        result = await handler.handle(job, ctx)
    assert not result.ok and result.should_retry and "not JSON" in (result.error or "")


async def test_no_reply_within_the_timeout_is_a_retriable_failure(
    stream: str, attempt: MakeAttempt
) -> None:
    handler = RedisHandler(REDIS_URL, ("nxs-test-*",), reply_timeout_s=0.3)
    try:
        job, ctx = attempt("redis", {"stream": stream, "mode": "request"})
        result = await handler.handle(job, ctx)
    finally:
        await handler.aclose()
    assert not result.ok and result.should_retry and "no reply" in (result.error or "")


async def test_a_key_that_is_not_a_stream_is_a_permanent_failure(
    handler: RedisHandler, stream: str, redis_client: Any, attempt: MakeAttempt
) -> None:
    await redis_client.set(stream, "a string")
    job, ctx = attempt("redis", {"stream": stream})
    result = await handler.handle(job, ctx)
    assert not result.ok and not result.should_retry and "WRONGTYPE" in (result.error or "")


async def test_broker_down_at_start_up_is_retriable_then_recovers(
    stream: str, redis_client: Any, attempt: MakeAttempt
) -> None:
    async with running_proxy(REDIS_PORT) as proxy:
        proxy.up = False
        handler = RedisHandler(f"redis://127.0.0.1:{proxy.port}/0", ("nxs-test-*",))
        handler.link.backoff_min_s = handler.link.backoff_max_s = 0.0
        try:
            job, ctx = attempt("redis", {"stream": stream})
            down = await handler.handle(job, ctx)
            assert not down.ok and down.should_retry and "cannot connect" in (down.error or "")
            proxy.up = True
            assert (await handler.handle(job, ctx)).ok
        finally:
            await handler.aclose()
    assert await redis_client.xlen(stream) == 1


async def test_a_connection_killed_by_the_server_is_reopened(
    handler: RedisHandler, stream: str, redis_client: Any, attempt: MakeAttempt
) -> None:
    job, ctx = attempt("redis", {"stream": stream})
    assert (await handler.handle(job, ctx)).ok
    # Only the handler's own connection (the server is shared): CLIENT KILL ID.
    own = await (await handler.link.get()).client_id()
    assert await redis_client.execute_command("CLIENT", "KILL", "ID", own) == 1
    outcomes = [await handler.handle(job, ctx) for _ in range(2)]
    assert all(r.ok or r.should_retry for r in outcomes) and outcomes[-1].ok


async def test_a_stalled_broker_is_a_retriable_failure_within_the_publish_timeout(
    stream: str, attempt: MakeAttempt
) -> None:
    async with running_proxy(REDIS_PORT) as proxy:
        handler = RedisHandler(
            f"redis://127.0.0.1:{proxy.port}/0", ("nxs-test-*",), publish_timeout_s=0.5
        )
        try:
            job, ctx = attempt("redis", {"stream": stream})
            assert (await handler.handle(job, ctx)).ok
            await _stall(proxy)
            result = await handler.handle(job, ctx)
        finally:
            await handler.aclose()
    assert not result.ok and result.should_retry


async def _stall(proxy: TcpProxy) -> None:
    proxy.stall = True
    await proxy.drop()
