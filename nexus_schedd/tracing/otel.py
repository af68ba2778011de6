"""The OpenTelemetry side of tracing: the SDK set up from the environment, and the
run spans. Imported only when tracing is on (:func:`nexus_schedd.tracing.start_tracing`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextvars import Token
from datetime import UTC, datetime, timedelta

import anyio
import anyio.to_thread
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from nexus_schedd import __version__
from nexus_schedd.model import Job, Run, RunOutcome
from nexus_schedd.model.times import format_instant
from nexus_schedd.tracing import DEFAULT_SERVICE_NAME, SPAN_NAME, TracingSettings

FLUSH_TIMEOUT_S = 10.0
"""How long shutdown waits for the last spans to be exported (a collector that is
down must not hold the daemon's exit for the exporter's own retries)."""

_PROPAGATOR = TraceContextTextMapPropagator()
_ROOT = otel_context.Context()
"""An empty context: a job without a stored one starts a trace of its own, whatever
happens to be current in the worker."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@functools.lru_cache(maxsize=4096)
def _parent(traceparent: str, tracestate: str) -> otel_context.Context:
    """The context a stored trace context stands for. Cached: a recurring job's
    runs share their parent, and parsing it again cost 13 us of the ~80 us a traced
    run spent in tracing (in a loop on the 2-vCPU machine of docs/performance.md);
    contexts are immutable, so one can be shared."""
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier)


def _nanos(at: datetime) -> int:
    """``at`` as OpenTelemetry's nanoseconds since the epoch (exact to the microsecond)."""
    return (at - _EPOCH) // _MICROSECOND * 1000


class OtelRunSpan:
    """One run's span (see :class:`nexus_schedd.tracing.RunSpan`)."""

    __slots__ = ("_span", "_token", "trace_context")

    def __init__(
        self, span: trace.Span, token: Token[otel_context.Context], trace_context: dict[str, str]
    ) -> None:
        self._span = span
        self._token = token
        self.trace_context = trace_context

    def end(self, outcome: RunOutcome | None, error: str | None, at: datetime) -> None:
        """Record the outcome (any but success is an ERROR status) and end the span."""
        span = self._span
        if outcome is not None:
            span.set_attribute("nexus_schedd.run.outcome", outcome.value)
        if outcome is not RunOutcome.SUCCESS:
            kind = "aborted" if outcome is None else outcome.value
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, error or kind))
        span.end(end_time=_nanos(at))
        otel_context.detach(self._token)


class OtelRunTracer:
    """Starts one span ``nexus_schedd.run`` per run (see :class:`nexus_schedd.tracing.RunTracer`)."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer("nexus_schedd", __version__)

    def start(self, job: Job, run: Run, lateness_ms: float) -> OtelRunSpan:
        """Start the run's span, a child of the job's stored context, and make it
        current (a plugin's own spans become its children) until it ends."""
        extras = job.extras
        stored = None if extras is None else extras.trace_context
        parent = (
            _parent(stored.get("traceparent", ""), stored.get("tracestate", ""))
            if stored
            else _ROOT
        )
        attributes: dict[str, AttributeValue] = {
            "nexus_schedd.job.id": job.id,
            "nexus_schedd.job.type": job.job_type,
            "nexus_schedd.run.id": run.id,
            "nexus_schedd.run.attempt": run.attempt,
            "nexus_schedd.run.scheduled_for": format_instant(run.scheduled_for),
            "nexus_schedd.run.lateness_ms": lateness_ms,
        }
        if job.target_id is not None:
            attributes["nexus_schedd.job.target_id"] = job.target_id
        if run.node:
            attributes["nexus_schedd.node"] = run.node
        # CONSUMER: the run is the deferred processing of the add request, as a
        # message's processing is of its publication (the trace links the two).
        span = self._tracer.start_span(
            SPAN_NAME,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            start_time=_nanos(run.started_at),
        )
        current = trace.set_span_in_context(span, _ROOT)
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=current)
        return OtelRunSpan(span, otel_context.attach(current), carrier)


class OtelTracing:
    """The SDK's tracer provider with its exporters, and the engine's tracer."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.run_tracer = OtelRunTracer(provider)
        self.service_name = str(provider.resource.attributes.get("service.name", ""))

    @classmethod
    def from_settings(cls, settings: TracingSettings, environ: Mapping[str, str]) -> OtelTracing:
        """The standard set-up: a TracerProvider (its sampler from ``OTEL_TRACES_SAMPLER``)
        whose resource is ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` (default
        ``nexus-schedd``), one BatchSpanProcessor (``OTEL_BSP_*``) per exporter; made
        the global provider."""
        provider = TracerProvider(resource=service_resource(environ))
        for exporter in _exporters(settings):
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        return cls(provider)

    async def aclose(self) -> None:
        """Export what is buffered and close the exporters, within FLUSH_TIMEOUT_S
        (off the event loop: the SDK's shutdown blocks on its export thread)."""
        with anyio.move_on_after(FLUSH_TIMEOUT_S):
            await anyio.to_thread.run_sync(self.provider.shutdown, abandon_on_cancel=True)


def service_resource(environ: Mapping[str, str]) -> Resource:
    """The resource of the daemon's spans: what the environment says (the SDK reads
    ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``), service.name defaulting to
    ``nexus-schedd`` instead of the SDK's ``unknown_service``."""
    resource = Resource.create({"service.version": __version__})
    named = environ.get("OTEL_SERVICE_NAME", "").strip() or any(
        item.split("=", 1)[0].strip() == "service.name"
        for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    )
    if not named:
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return resource


def _exporters(settings: TracingSettings) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in settings.exporters:
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif settings.otlp_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcSpanExporter,
            )

            exporters.append(GrpcSpanExporter())
        else:
            # The exporter reads its endpoint, headers, timeout and TLS files from
            # the standard OTEL_EXPORTER_OTLP_* variables.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
    return exporters
