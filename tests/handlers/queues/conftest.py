"""Real brokers for the queue handler tests: RabbitMQ, Redis and NATS JetStream on
their standard local ports. Each test gets its own names (uuid) and removes what it
made. A broker that does not answer fails the test with its name (SPEC 14: the
brokers run on the project's machines; ``.ci/run`` checks them first)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobDefaults, JobSpec

AMQP_PORT, REDIS_PORT, NATS_PORT = 5672, 6379, 4222
AMQP_URL = f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}/"
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
NATS_URL = f"nats://127.0.0.1:{NATS_PORT}"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRACE_CONTEXT = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "vendor=opaque",
}
"""What a handler's ``ctx.trace_context`` holds when the job's run is traced (SPEC 15)."""

MakeAttempt = Callable[..., tuple[Job, HandlerContext]]


def broker_answers(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def need(name: str, port: int) -> None:
    if not broker_answers(port):
        pytest.fail(
            f"{name} does not answer on 127.0.0.1:{port} (see .ci/run for its start command)"
        )


@pytest.fixture
def name() -> str:
    """A fresh queue/stream/subject name for this test."""
    return f"nxs-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def attempt() -> MakeAttempt:
    """``attempt(job_type, payload, attempt=1, deadline=None, trace_context=None)`` -> a
    job and its context."""

    def build(
        job_type: str,
        payload: dict[str, Any],
        *,
        attempt: int = 1,
        deadline: datetime | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> tuple[Job, HandlerContext]:
        job = Job.create(JobSpec(job_type=job_type, payload=payload), NOW, JobDefaults())
        ctx = HandlerContext(
            attempt=attempt,
            idempotency_key=job.idempotency_key,
            deadline=deadline,
            scheduled_for=NOW,
            log=structlog.get_logger().bind(job_id=job.id, job_type=job_type, attempt=attempt),
            run_id=f"run-{uuid.uuid4().hex}",
            trace_context=trace_context,
        )
        return job, ctx

    return build


@pytest.fixture
async def amqp_channel() -> AsyncIterator[Any]:
    """A plain aio-pika channel, as a consumer would have."""
    need("RabbitMQ", AMQP_PORT)
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    """A plain redis.asyncio client, as a consumer would have."""
    need("Redis", REDIS_PORT)
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def nats_client() -> AsyncIterator[Any]:
    """A plain nats-py client, as a consumer would have."""
    need("NATS", NATS_PORT)
    import nats

    client = await nats.connect(NATS_URL)
    try:
        yield client
    finally:
        await client.close()
