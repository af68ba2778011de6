"""Tracing with OpenTelemetry (SPEC 15): every run is a span ``nexus_schedd.run``,
a child of the trace context the job was added with.

This module decides from the standard ``OTEL_*`` environment whether tracing is
on, and says what the engine asks of a tracer (:class:`RunTracer`); it never
imports OpenTelemetry. :mod:`.otel`, the implementation, is imported by
:func:`start_tracing` only when tracing is on, so a daemon without the extra
``otel`` (or with tracing off) loads none of it, and the engine's cost per run
is one ``is None`` test (see docs/performance.md).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from nexus_schedd.errors import ConfigError
from nexus_schedd.model.trace_context import KEYS, TRACEPARENT

if TYPE_CHECKING:
    from nexus_schedd.model import Job, Run, RunOutcome

EXTRA = "otel"
"""The optional extra that brings the OpenTelemetry SDK and its OTLP exporter."""
SPAN_NAME = "nexus_schedd.run"
DEFAULT_SERVICE_NAME = "nexus-schedd"
EXPORTERS = ("otlp", "console")
"""Values of ``OTEL_TRACES_EXPORTER`` this daemon knows (besides ``none``)."""
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
ENVIRONMENT = "<environment>"
"""The ``file`` of a ConfigError about an ``OTEL_*`` variable."""


class RunSpan(Protocol):
    """One run's span, from its handler's start to its outcome."""

    trace_context: dict[str, str]
    """The span's own W3C trace context: what the handler passes on (``ctx.trace_context``)."""

    def end(self, outcome: RunOutcome | None, error: str | None, at: datetime) -> None:
        """End the span at ``at`` with the run's outcome (None: the engine stopped
        under it, the run is recorded as crashed at the next start)."""
        ...


class RunTracer(Protocol):
    """What the engine's workers call when tracing is on (``Engine(tracer=...)``)."""

    def start(self, job: Job, run: Run, lateness_ms: float) -> RunSpan:
        """Start the span of ``run`` (a child of the job's stored trace context, else
        a root span), current until it ends; the caller ends it in the same task."""
        ...


class Tracing(Protocol):
    """Tracing as the daemon holds it: the engine's tracer, and the exporters to flush."""

    @property
    def run_tracer(self) -> RunTracer:
        """What the engine's workers call."""
        ...

    async def aclose(self) -> None:
        """Export the spans still buffered and close the exporters (daemon shutdown)."""
        ...


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """Tracing as the ``OTEL_*`` environment asks for it.

    On when ``OTEL_TRACES_EXPORTER`` names exporters (``otlp``, ``console``, comma
    separated), or, when it is unset, when an OTLP endpoint is set
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Off
    when ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Everything
    else (sampler, batching, exporter headers, resource attributes) is read by the
    OpenTelemetry SDK itself from its standard variables.
    """

    exporters: tuple[str, ...] = ()
    """Empty: tracing is off."""
    reason: str = ""
    """Why tracing is on or off, for the start-up log."""
    otlp_protocol: str = "http/protobuf"
    otlp_endpoint: str = ""
    """Where the OTLP exporter sends spans (as the exporter resolves it), if it is used."""

    @property
    def enabled(self) -> bool:
        """Whether the environment asks for tracing."""
        return bool(self.exporters)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TracingSettings:
        """Read the environment; a value this daemon cannot honour is a ConfigError
        naming the variable (the daemon refuses to start, as for a bad config key)."""

        def get(name: str) -> str:
            return environ.get(name, "").strip()

        if get("OTEL_SDK_DISABLED").lower() == "true":
            return cls(reason="OTEL_SDK_DISABLED=true")
        named = get("OTEL_TRACES_EXPORTER").lower()
        traces_endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        base_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if named:
            exporters = tuple(dict.fromkeys(part.strip() for part in named.split(",") if part))
            if exporters == ("none",):
                return cls(reason="OTEL_TRACES_EXPORTER=none")
            unknown = [name for name in exporters if name not in EXPORTERS]
            if unknown:
                raise ConfigError(
                    ENVIRONMENT,
                    "OTEL_TRACES_EXPORTER",
                    f"unknown exporter {unknown[0]!r} (use {', '.join(EXPORTERS)} or none)",
                )
            reason = f"OTEL_TRACES_EXPORTER={named}"
        elif traces_endpoint or base_endpoint:
            exporters = ("otlp",)
            variable = (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                if traces_endpoint
                else "OTEL_EXPORTER_OTLP_ENDPOINT"
            )
            reason = f"{variable} is set"
        else:
            return cls(reason="no OTEL_TRACES_EXPORTER or OTLP endpoint in the environment")
        if "otlp" not in exporters:
            return cls(exporters, reason)
        protocol_variable = (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
            if get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            else "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        protocol = get(protocol_variable) or "http/protobuf"
        if protocol not in OTLP_PROTOCOLS:
            raise ConfigError(
                ENVIRONMENT,
                protocol_variable,
                f"unsupported OTLP protocol {protocol!r} (use {' or '.join(OTLP_PROTOCOLS)})",
            )
        if traces_endpoint:
            endpoint = traces_endpoint
        elif protocol == "grpc":
            endpoint = base_endpoint or "http://localhost:4317"
        else:
            endpoint = f"{(base_endpoint or DEFAULT_OTLP_ENDPOINT).removesuffix('/')}/v1/traces"
        return cls(exporters, reason, protocol, endpoint)

    def missing(self) -> str | None:
        """What is not installed that these settings need, or None. Looks the
        modules up without importing them (the packages' roots excepted)."""
        needed = ["opentelemetry.sdk.trace"]
        if "otlp" in self.exporters:
            needed.append(
                "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
                if self.otlp_protocol == "grpc"
                else "opentelemetry.exporter.otlp.proto.http.trace_exporter"
            )
        for module in needed:
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if not found:
                if "grpc" in module:
                    return f"{module} (pip install opentelemetry-exporter-otlp-proto-grpc)"
                return f"{module} (pip install 'nexus-schedd[{EXTRA}]')"
        return None

    def describe(self) -> dict[str, Any]:
        """The start-up log's fields."""
        fields: dict[str, Any] = {"exporters": list(self.exporters), "reason": self.reason}
        if "otlp" in self.exporters:
            fields.update(otlp_protocol=self.otlp_protocol, otlp_endpoint=self.otlp_endpoint)
        return fields


def start_tracing(
    settings: TracingSettings, environ: Mapping[str, str], log: Any
) -> Tracing | None:
    """Tracing as ``settings`` (read from ``environ``) ask for it, set up and logged
    once (``tracing_enabled`` or ``tracing_disabled``); None when off, or when the
    extra is not installed (logged as ``tracing_unavailable``).

    When on, the SDK's tracer provider becomes the process's global one, so spans
    a plugin makes with the OpenTelemetry API are exported too (children of the run
    span while its handler runs).
    """
    if not settings.enabled:
        log.info("tracing_disabled", reason=settings.reason)
        return None
    missing = settings.missing()
    if missing is not None:
        log.warning("tracing_unavailable", reason=f"{settings.reason}, but {missing} is missing")
        return None
    from nexus_schedd.tracing.otel import OtelTracing  # only now: see the module docstring

    tracing = OtelTracing.from_settings(settings, environ)
    log.info("tracing_enabled", service_name=tracing.service_name, **settings.describe())
    return tracing


def current_trace_context() -> dict[str, str] | None:
    """The W3C trace context of the caller's current OpenTelemetry span, or None.

    For the client library: an application that traces with OpenTelemetry has
    imported its API, and a span can only be current if it has; one that has not
    pays a dictionary lookup and nothing is imported.
    """
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    if TRACEPARENT not in carrier:
        return None
    return {key: carrier[key] for key in KEYS if carrier.get(key)}


__all__ = [
    "EXTRA",
    "SPAN_NAME",
    "RunSpan",
    "RunTracer",
    "Tracing",
    "TracingSettings",
    "current_trace_context",
    "start_tracing",
]
