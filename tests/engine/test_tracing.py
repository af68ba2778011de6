"""Tracing (SPEC 15): each run is a span ``nexus_schedd.run``, a child of the trace
context the job was added with, recorded by the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import EngineSettings
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult, JobSpec, JobStatus
from nexus_schedd.tracing.otel import OtelRunTracer
from tests.engine.harness import (
    EXACT,
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    is_final,
    sleeper,
    wait_until,
)

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
CONTEXT = {"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    yield found
    found.shutdown()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[OtelRunTracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield OtelRunTracer(provider)
    provider.shutdown()


def nanos(instant: datetime) -> int:
    return round((instant - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6) * 1000


def runs(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    spans = [span for span in exporter.get_finished_spans() if span.name == "nexus_schedd.run"]
    return sorted(spans, key=lambda span: span.start_time or 0)


async def test_a_run_is_a_span_child_of_the_context_the_job_was_added_with(
    store: TrackedStore, exporter: InMemorySpanExporter, tracer: OtelRunTracer
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, tracer=tracer) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(60), trace_context=CONTEXT))
        await wait_until(engine, job.id, is_final, store)
    [run] = await store.runs_of(job.id)
    [span] = runs(exporter)
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    assert span.context.trace_state.to_header() == "vendor=opaque"
    assert span.kind is SpanKind.CONSUMER
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "nexus_schedd.job.id": job.id,
        "nexus_schedd.job.type": "work",
        "nexus_schedd.run.id": run.id,
        "nexus_schedd.run.attempt": 1,
        "nexus_schedd.run.scheduled_for": "2025-01-06T08:01:00+00:00",
        "nexus_schedd.run.lateness_ms": 0.0,
        "nexus_schedd.run.outcome": "success",
    }
    assert run.finished_at is not None
    assert span.start_time == nanos(run.started_at) == nanos(at(60))
    assert span.end_time == nanos(run.finished_at)


async def test_a_failed_run_has_an_error_span_and_each_attempt_a_span_of_its_own(
    store: TrackedStore, exporter: InMemorySpanExporter, tracer: OtelRunTracer
) -> None:
    clock = VirtualClock(T0)

    async def fail(job: Job, ctx: HandlerContext) -> Any:
        return JobResult.failure(f"upstream down ({ctx.attempt})", retry_delay_s=10)

    handler = ScriptedHandler(clock, behaviour=fail)
    async with engine_running(store, clock, handler, tracer=tracer) as engine:
        job = await engine.add_job(
            JobSpec(job_type="work", run_at=at(0), max_retries=1, trace_context=CONTEXT)
        )
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.FAILED_PERMANENT
    spans = runs(exporter)
    assert [(span.attributes or {}).get("nexus_schedd.run.attempt") for span in spans] == [1, 2]
    for number, span in enumerate(spans, start=1):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == f"upstream down ({number})"
        assert (span.attributes or {})["nexus_schedd.run.outcome"] == "failure"
        assert (span.attributes or {})["error.type"] == "failure"
        assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID


async def test_a_timed_out_run_has_an_error_span(
    store: TrackedStore, exporter: InMemorySpanExporter, tracer: OtelRunTracer
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 60))
    async with engine_running(store, clock, handler, tracer=tracer) as engine:
        job = await engine.add_job(
            JobSpec(job_type="work", run_at=at(0), max_retries=0, timeout_s=5)
        )
        await wait_until(engine, job.id, is_final, store)
    [span] = runs(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "timed out after 5 s"
    assert (span.attributes or {})["nexus_schedd.run.outcome"] == "timeout"


async def test_a_job_added_without_context_gets_a_root_span(
    store: TrackedStore, exporter: InMemorySpanExporter, tracer: OtelRunTracer
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, tracer=tracer) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0)))
        await wait_until(engine, job.id, is_final, store)
    [span] = runs(exporter)
    assert span.parent is None
    assert span.context is not None and format(span.context.trace_id, "032x") != TRACE_ID


async def test_the_span_records_how_late_the_run_started(
    store: TrackedStore, exporter: InMemorySpanExporter, tracer: OtelRunTracer
) -> None:
    """One slot: the second job, due with the first, starts when the first ends."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 5))
    settings = EngineSettings(defaults=EXACT, max_concurrency=1)
    async with engine_running(store, clock, handler, settings=settings, tracer=tracer) as engine:
        first = await engine.add_job(JobSpec(job_type="work", run_at=at(10), priority=1))
        second = await engine.add_job(JobSpec(job_type="work", run_at=at(10)))
        await wait_until(engine, second.id, is_final, store)
        await wait_until(engine, first.id, is_final, store)
    lateness = {
        (span.attributes or {})["nexus_schedd.job.id"]: (span.attributes or {})[
            "nexus_schedd.run.lateness_ms"
        ]
        for span in runs(exporter)
    }
    assert lateness == {first.id: 0.0, second.id: 5000.0}


async def test_the_handler_gets_the_run_span_context_and_runs_under_the_span(
    store: TrackedStore, exporter: InMemorySpanExporter, tracer: OtelRunTracer
) -> None:
    clock = VirtualClock(T0)
    seen: list[tuple[dict[str, str] | None, int]] = []

    async def look(job: Job, ctx: HandlerContext) -> Any:
        seen.append((ctx.trace_context, trace.get_current_span().get_span_context().span_id))
        return JobResult.success()

    handler = ScriptedHandler(clock, behaviour=look)
    async with engine_running(store, clock, handler, tracer=tracer) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0), trace_context=CONTEXT))
        await wait_until(engine, job.id, is_final, store)
    [span] = runs(exporter)
    assert span.context is not None
    span_id = format(span.context.span_id, "016x")
    assert seen == [
        (
            {"traceparent": f"00-{TRACE_ID}-{span_id}-01", "tracestate": "vendor=opaque"},
            span.context.span_id,
        )
    ]
    # Once the run has ended, its span is no longer current.
    assert not trace.get_current_span().get_span_context().is_valid


async def test_without_tracing_the_handler_gets_the_context_the_job_was_added_with(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    seen: list[dict[str, str] | None] = []

    async def look(job: Job, ctx: HandlerContext) -> Any:
        seen.append(ctx.trace_context)
        return JobResult.success()

    handler = ScriptedHandler(clock, behaviour=look)
    async with engine_running(store, clock, handler) as engine:
        traced = await engine.add_job(JobSpec(job_type="work", run_at=at(0), trace_context=CONTEXT))
        await wait_until(engine, traced.id, is_final, store)
        plain = await engine.add_job(JobSpec(job_type="work", run_at=at(10)))
        await wait_until(engine, plain.id, is_final, store)
    assert seen == [CONTEXT, None]
