"""The celery handler with a real, unmodified Celery worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_schedd.handlers.queues.celery_tasks import CeleryHandler
from nexus_schedd.handlers.queues.envelope import task_id
from tests.handlers.queues.conftest import (
    AMQP_PORT,
    AMQP_URL,
    REDIS_PORT,
    REDIS_URL,
    TRACE_CONTEXT,
    MakeAttempt,
    need,
)

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[3]


class CeleryWorker:
    """``celery -A tests.handlers.queues.celery_app worker --pool solo -Q QUEUE``."""

    def __init__(self, broker: str, queue: str) -> None:
        self.broker, self.queue = broker, queue
        self.lines: list[str] = []
        self.ready = threading.Event()
        env = {**os.environ, "NXS_CELERY_BROKER": broker, "NXS_CELERY_BACKEND": REDIS_URL}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "tests.handlers.queues.celery_app",
                "worker", "--pool", "solo", "-Q", queue, "-n", f"{queue}@%h",
                "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "INFO",
            ],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if " ready." in line:
                self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(60):
            raise AssertionError("the Celery worker did not start:\n" + "".join(self.lines[-30:]))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def ran(self, task_id: str) -> bool:
        """True if the worker's log shows it received the task with this id."""
        return any(task_id in line for line in self.lines)


def _cleanup(broker: str, queue: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    if broker == "redis":
        r.delete(queue, f"_kombu.binding.{queue}")
    else:
        import kombu

        with kombu.Connection(AMQP_URL) as connection:
            channel = connection.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
    r.close()


@pytest.fixture(scope="module", params=["redis", "amqp"])
def worker(request: pytest.FixtureRequest) -> Iterator[CeleryWorker]:
    """A real Celery worker on its own queue, for each broker."""
    broker = request.param
    need("Redis", REDIS_PORT)
    if broker == "amqp":
        need("RabbitMQ", AMQP_PORT)
    queue = f"nxs-test-{uuid.uuid4().hex[:12]}"
    proc = CeleryWorker(REDIS_URL if broker == "redis" else AMQP_URL, queue)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        _cleanup(broker, queue)


@pytest.fixture
async def handler(worker: CeleryWorker) -> AsyncIterator[CeleryHandler]:
    handler = CeleryHandler(worker.broker, REDIS_URL, ("nxs.*",), reply_timeout_s=30)
    try:
        yield handler
    finally:
        await handler.aclose()


async def test_an_unmodified_worker_runs_the_task_by_name(
    handler: CeleryHandler, worker: CeleryWorker, redis_client: Any, attempt: MakeAttempt
) -> None:
    marker = f"nxs-test-marker-{uuid.uuid4().hex}"
    job, ctx = attempt(
        "celery",
        {"task": "nxs.record", "args": [marker], "kwargs": {"value": "ran"}, "queue": worker.queue},
    )
    result = await handler.handle(job, ctx)
    assert result.ok, result.error
    assert result.output["task_id"] == task_id(ctx.idempotency_key)
    try:
        # The task pushes onto the list; BLPOP waits for it (bounded).
        assert await redis_client.blpop(marker, timeout=30) == (marker.encode(), b"ran")
    finally:
        await redis_client.delete(marker)
    assert worker.ran(result.output["task_id"])


@pytest.mark.parametrize(
    ("task", "args", "expected"),
    [
        ("nxs.add", [2, 3], (True, None, 5)),
        ("nxs.fail", [], (False, False, None)),
        ("nxs.later", [], (False, True, None)),
        ("nxs.verdict", [], (False, True, None)),
    ],
)
async def test_wait_result_maps_the_task_state(
    handler: CeleryHandler,
    worker: CeleryWorker,
    redis_client: Any,
    attempt: MakeAttempt,
    task: str,
    args: list[Any],
    expected: tuple[bool, bool | None, Any],
) -> None:
    payload = {"task": task, "args": args, "queue": worker.queue, "wait_result": True}
    job, ctx = attempt("celery", payload)
    result = await handler.handle(job, ctx)
    await redis_client.delete(f"celery-task-meta-{task_id(f'{ctx.idempotency_key}:1')}")
    ok, should_retry, output = expected
    assert result.ok is ok, result.error
    if ok:
        assert result.output == output
    else:
        assert result.should_retry is should_retry
    if task == "nxs.fail":
        assert "ValueError: boom" in (result.error or "")
    if task == "nxs.verdict":
        assert (result.error, result.retry_delay_s) == ("quota", 60.0)


async def test_the_task_sees_the_trace_context_in_its_message_headers(
    handler: CeleryHandler, worker: CeleryWorker, redis_client: Any, attempt: MakeAttempt
) -> None:
    payload = {"task": "nxs.traceparent", "queue": worker.queue, "wait_result": True}
    job, ctx = attempt("celery", payload, trace_context=TRACE_CONTEXT)
    result = await handler.handle(job, ctx)
    await redis_client.delete(f"celery-task-meta-{task_id(f'{ctx.idempotency_key}:1')}")
    assert result.ok, result.error
    assert result.output == TRACE_CONTEXT["traceparent"]
