"""Whether tracing is on, from the standard OTEL_* environment (SPEC 15)."""

from __future__ import annotations

import pytest

from nexus_schedd.errors import ConfigError
from nexus_schedd.model.trace_context import from_headers
from nexus_schedd.tracing import TracingSettings
from nexus_schedd.tracing.otel import service_resource

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("environ", "exporters", "endpoint"),
    [
        ({}, (), ""),
        ({"OTEL_TRACES_EXPORTER": "none"}, (), ""),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",), ""),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",), "http://localhost:4318/v1/traces"),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp,console",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/",
            },
            ("otlp", "console"),
            "http://c:4318/v1/traces",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9999/traces"},
            ("otlp",),
            "http://c:9999/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp",), "http://c:4318/v1/traces"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            ("otlp",),
            "http://c:4317",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, (), ""),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "TRUE"}, (), ""),
    ],
    ids=[
        "nothing",
        "none",
        "console",
        "otlp-default-endpoint",
        "two-exporters",
        "traces-endpoint-alone",
        "base-endpoint-alone",
        "grpc",
        "none-wins-over-endpoint",
        "sdk-disabled",
    ],
)
def test_tracing_is_on_when_the_standard_environment_says_so(
    environ: dict[str, str], exporters: tuple[str, ...], endpoint: str
) -> None:
    settings = TracingSettings.from_env(environ)
    assert settings.exporters == exporters
    assert settings.enabled is bool(exporters)
    assert settings.otlp_endpoint == endpoint
    assert settings.reason


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "carrier-pigeon",
            },
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_a_value_the_daemon_cannot_honour_is_a_config_error_naming_the_variable(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        TracingSettings.from_env(environ)
    assert refused.value.key == variable


def test_grpc_without_its_exporter_installed_is_reported_missing() -> None:
    grpc = TracingSettings.from_env(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    missing = grpc.missing()
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        assert missing is not None and "opentelemetry-exporter-otlp-proto-grpc" in missing
    else:  # pragma: no cover - only where the gRPC exporter happens to be installed
        assert missing is None
    assert TracingSettings.from_env({"OTEL_TRACES_EXPORTER": "otlp"}).missing() is None


def test_the_service_is_named_nexus_schedd_unless_the_environment_names_it() -> None:
    assert service_resource({}).attributes["service.name"] == "nexus-schedd"


def test_request_headers_give_a_trace_context_only_when_the_traceparent_is_valid() -> None:
    assert from_headers(TRACEPARENT, "a=b") == {"traceparent": TRACEPARENT, "tracestate": "a=b"}
    assert from_headers(f" {TRACEPARENT} ", None) == {"traceparent": TRACEPARENT}
    assert from_headers(TRACEPARENT, "") == {"traceparent": TRACEPARENT}
    assert from_headers("00-abc", "a=b") is None
    assert from_headers(None, "a=b") is None
    assert from_headers(TRACEPARENT, "x" * 600) == {"traceparent": TRACEPARENT}
