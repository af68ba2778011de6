"""Helpers for handler tests: a job of a given type and payload, and its context."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobDefaults, JobSpec

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

MakeJob = Callable[..., tuple[Job, HandlerContext]]


@pytest.fixture
def make_job() -> MakeJob:
    """``make_job(job_type, payload)`` -> a pending job and the context of its first attempt."""

    def build(job_type: str, payload: dict[str, Any], **spec: Any) -> tuple[Job, HandlerContext]:
        job = Job.create(JobSpec(job_type=job_type, payload=payload, **spec), NOW, JobDefaults())
        ctx = HandlerContext(
            attempt=1,
            idempotency_key=job.idempotency_key,
            deadline=None,
            scheduled_for=NOW,
            log=structlog.get_logger().bind(job_id=job.id, job_type=job_type, attempt=1),
        )
        return job, ctx

    return build
