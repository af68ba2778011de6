"""AddJob and AddJobs take the caller's W3C trace context (SPEC 15); the client
library passes it on, by default from the caller's current OpenTelemetry span."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from nexus_schedd.client import Client
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import JobSpec
from tests.control.harness import Daemon

pytestmark = pytest.mark.anyio

FUTURE = "2031-01-01T09:00:00Z"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONTEXT = {"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"}


async def test_add_job_keeps_the_trace_context_on_the_job(daemon: Daemon) -> None:
    async with Client(daemon.socket_path, timeout=10) as client:
        reply = await client.call(
            "AddJob", {"job": {"job_type": "log", "run_at": FUTURE}, "trace_context": CONTEXT}
        )
        assert reply["job"]["trace_context"] == CONTEXT
        job = await client.get_job(reply["job"]["id"])
        assert job.extras is not None and job.extras.trace_context == CONTEXT
        plain = await client.call("AddJob", {"job": {"job_type": "log", "run_at": FUTURE}})
        assert "trace_context" not in plain["job"] or plain["job"]["trace_context"] is None


async def test_add_jobs_gives_every_job_of_the_batch_the_trace_context(daemon: Daemon) -> None:
    async with Client(daemon.socket_path, timeout=10) as client:
        reply = await client.call(
            "AddJobs",
            {
                "jobs": [{"job_type": "log", "run_at": FUTURE}] * 2,
                "trace_context": {"traceparent": TRACEPARENT},
            },
        )
    assert [job["trace_context"] for job in reply["jobs"]] == [{"traceparent": TRACEPARENT}] * 2


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"}, "traceparent"),
        ({"traceparent": TRACEPARENT.upper()}, "traceparent"),
        ({"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}, "traceparent"),
        ({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}, "traceparent"),
        ({"traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "traceparent"),
        ({"traceparent": TRACEPARENT + "-extra"}, "traceparent"),
        ({"traceparent": TRACEPARENT, "tracestate": "x" * 513}, "tracestate"),
        ({"tracestate": "vendor=opaque"}, "traceparent"),
        ({"traceparent": TRACEPARENT, "baggage": "k=v"}, "baggage"),
        ({"traceparent": 1}, None),
    ],
    ids=[
        "three-fields",
        "uppercase",
        "zero-trace",
        "zero-parent",
        "version-ff",
        "v00-extra-field",
        "long-state",
        "no-parent",
        "unknown-key",
        "not-a-string",
    ],
)
async def test_a_malformed_trace_context_is_invalid_spec_naming_the_key(
    daemon: Daemon, context: dict[str, Any], field: str | None
) -> None:
    async with Client(daemon.socket_path, timeout=10) as client:
        with pytest.raises(InvalidSpec) as refused:
            await client.call(
                "AddJob", {"job": {"job_type": "log", "run_at": FUTURE}, "trace_context": context}
            )
        assert refused.value.field == (
            "trace_context" if field is None else f"trace_context.{field}"
        )
        with pytest.raises(InvalidSpec):
            await client.call(
                "AddJobs",
                {"jobs": [{"job_type": "log", "run_at": FUTURE}], "trace_context": context},
            )
        assert (await client.list_jobs()).items == []


async def test_a_later_traceparent_version_with_more_fields_is_kept(daemon: Daemon) -> None:
    future_version = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes"
    async with Client(daemon.socket_path, timeout=10) as client:
        job = await client.add_job(
            {"job_type": "log", "run_at": FUTURE}, trace_context={"traceparent": future_version}
        )
    assert job.extras is not None and job.extras.trace_context == {"traceparent": future_version}


async def test_the_client_passes_the_context_given_or_the_spec_s_own(daemon: Daemon) -> None:
    async with Client(daemon.socket_path, timeout=10) as client:
        given = await client.add_job({"job_type": "log", "run_at": FUTURE}, trace_context=CONTEXT)
        spec = JobSpec(
            job_type="log",
            run_at=datetime(2031, 1, 1, tzinfo=UTC),
            trace_context={"traceparent": TRACEPARENT},
        )
        own = await client.add_job(spec)
        batch = await client.add_jobs(
            [{"job_type": "log", "run_at": FUTURE}], trace_context=CONTEXT
        )
    assert given.extras is not None and given.extras.trace_context == CONTEXT
    assert own.extras is not None and own.extras.trace_context == {"traceparent": TRACEPARENT}
    assert batch[0].extras is not None and batch[0].extras.trace_context == CONTEXT


async def test_the_client_passes_the_callers_current_span_on(daemon: Daemon) -> None:
    tracer = TracerProvider().get_tracer("an application")
    async with Client(daemon.socket_path, timeout=10) as client:
        with tracer.start_as_current_span("schedule the report") as span:
            job = await client.add_job({"job_type": "log", "run_at": FUTURE})
            [batched] = await client.add_jobs([{"job_type": "log", "run_at": FUTURE}])
            opted_out = await client.add_job(
                {"job_type": "log", "run_at": FUTURE}, trace_context={}
            )
        outside = await client.add_job({"job_type": "log", "run_at": FUTURE})
    context = span.get_span_context()
    flags = int(context.trace_flags)
    expected = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"}
    assert job.extras is not None and job.extras.trace_context == expected
    assert batched.extras is not None and batched.extras.trace_context == expected
    assert opted_out.extras is None
    assert outside.extras is None
