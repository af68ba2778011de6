"""The Celery app the tests' real worker runs (``celery -A ... worker --pool solo``).

An unmodified Celery app: it knows nothing of nexus-schedd. The broker and result
backend come from the environment the test starts the worker with.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from celery.exceptions import Retry

app = Celery(
    "nxs_test",
    broker=os.environ.get("NXS_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("NXS_CELERY_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="nxs.record")
def record(key: str, value: str, **extra: Any) -> str:
    """Push ``value`` onto the Redis list ``key``, so the test sees the task ran."""
    redis.Redis.from_url("redis://127.0.0.1:6379/0").lpush(key, value)
    return value


@app.task(name="nxs.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="nxs.fail")
def fail() -> None:
    raise ValueError("boom")


@app.task(name="nxs.later")
def later() -> None:
    raise Retry("not yet")


@app.task(name="nxs.verdict")
def verdict() -> dict[str, Any]:
    return {"success": False, "error": "quota", "should_retry": True, "retry_delay_s": 60}


@app.task(name="nxs.traceparent", bind=True)
def traceparent(self: Any) -> str | None:
    """The ``traceparent`` message header, where Celery's OpenTelemetry instrumentation reads it."""
    return getattr(self.request, "traceparent", None)
