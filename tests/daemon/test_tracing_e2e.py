"""End-to-end tracing (SPEC 15): the real daemon, started with the standard OTEL_*
variables, exports each run as a span over OTLP/HTTP to a receiver in this test,
parented by the trace context given at add time over Varlink and over the HTTP
API, and flushes what it holds when it shuts down."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from nexus_schedd.client import Client
from tests.daemon.daemon_process import console_script
from tests.daemon.test_daemon_e2e import base_config
from tests.web.conftest import ADMIN_TOKEN, api_web_config, bearer, serve_in_process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
API_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
API_PARENT_ID = "b7ad6b7169203331"


@dataclass(frozen=True)
class ExportedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


class OtlpReceiver:
    """A minimal OTLP/HTTP (protobuf) trace receiver on 127.0.0.1, as a collector is."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._take(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, request: ExportTraceServiceRequest) -> None:
        with self._changed:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ExportedSpan(
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                {a.key: _value(a.value) for a in span.attributes},
                                span.status.code,
                                resource,
                            )
                        )
            self._changed.notify_all()

    def wait_for(
        self, found: Callable[[list[ExportedSpan]], bool], *, timeout: float, what: str
    ) -> list[ExportedSpan]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not found(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout} s; got {self.spans}")
                self._changed.wait(left)
            return list(self.spans)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    found = OtlpReceiver()
    yield found
    found.close()


def run_spans(spans: list[ExportedSpan], job_id: str) -> list[ExportedSpan]:
    return [
        span
        for span in spans
        if span.name == "nexus_schedd.run" and span.attributes.get("nexus_schedd.job.id") == job_id
    ]


@pytest.mark.anyio
async def test_runs_are_exported_as_spans_of_the_trace_they_were_added_in(
    tmp_path: Path, daemon_factory: Any, receiver: OtlpReceiver
) -> None:
    daemon = daemon_factory(
        base_config(tmp_path),
        extra_env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "schedd-under-test",
            # Exported within 50 ms of a run's end (the default is 5 s).
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
    )
    daemon.start()
    [enabled] = daemon.wait_event("tracing_enabled")
    assert enabled["exporters"] == ["otlp"] and enabled["otlp_endpoint"] == receiver.endpoint
    assert enabled["service_name"] == "schedd-under-test"

    async with Client(daemon.socket_path, timeout=30) as client:
        traced = await client.add_job(
            {"job_type": "log", "payload": {"message": "traced"}},
            trace_context={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "t=1"},
        )
        plain = await client.add_job({"job_type": "log", "payload": {"message": "plain"}})
    async with serve_in_process(
        api_web_config(str(daemon.socket_path), tmp_path / "idempotency.db")
    ) as api:
        added = await api.post(
            "/api/v1/jobs",
            json={"job_type": "log", "payload": {"message": "over http"}},
            headers={**bearer(ADMIN_TOKEN), "traceparent": f"00-{API_TRACE_ID}-{API_PARENT_ID}-01"},
        )
    assert added.status_code == 201, added.text
    from_api = added.json()["id"]

    # Waited for in a thread, off the event loop.
    spans = await anyio.to_thread.run_sync(
        lambda: receiver.wait_for(
            lambda spans: all(run_spans(spans, job) for job in (traced.id, plain.id, from_api)),
            timeout=60,
            what="run spans of the three jobs",
        )
    )
    [span] = run_spans(spans, traced.id)
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, PARENT_ID)
    assert span.attributes["nexus_schedd.job.type"] == "log"
    assert span.attributes["nexus_schedd.run.attempt"] == 1
    assert span.attributes["nexus_schedd.run.outcome"] == "success"
    assert span.attributes["nexus_schedd.run.lateness_ms"] >= 0
    assert span.status_code == 0  # unset: no error
    assert span.resource["service.name"] == "schedd-under-test"
    [root] = run_spans(spans, plain.id)
    assert root.parent_span_id == "" and root.trace_id != TRACE_ID
    [over_http] = run_spans(spans, from_api)
    assert (over_http.trace_id, over_http.parent_span_id) == (API_TRACE_ID, API_PARENT_ID)


@pytest.mark.anyio
async def test_spans_still_buffered_are_exported_at_shutdown(
    tmp_path: Path, daemon_factory: Any, receiver: OtlpReceiver
) -> None:
    daemon = daemon_factory(
        base_config(tmp_path),
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint.removesuffix("/v1/traces"),
            # Nothing is exported on the processor's schedule during this test.
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
        },
    )
    daemon.start()
    async with Client(daemon.socket_path, timeout=30) as client:
        job = await client.add_job(
            {"job_type": "log"}, trace_context={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        )
    # Blocking waits in a thread, off the event loop.
    await anyio.to_thread.run_sync(lambda: daemon.wait_event("run_finished", job_id=job.id))
    assert run_spans(receiver.spans, job.id) == []
    daemon.send(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(daemon.wait_exit) == 0
    [span] = run_spans(receiver.spans, job.id)
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, PARENT_ID)
    assert span.resource["service.name"] == "nexus-schedd"


def test_an_otel_value_the_daemon_cannot_honour_stops_it_before_it_starts(
    tmp_path: Path, daemon_factory: Any
) -> None:
    environment = {"OTEL_TRACES_EXPORTER": "zipkin"}
    daemon = daemon_factory(base_config(tmp_path), extra_env=environment)
    checked = subprocess.run(
        [console_script("nexus-schedd"), "--config", str(daemon.config_path), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **environment},
    )
    assert checked.returncode == 2
    assert "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'" in checked.stderr
    daemon.start(wait_ready=False)
    assert daemon.wait_exit() == 2
    daemon.wait_until(
        lambda: "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'" in daemon.stderr_tail(),
        timeout=10,
        what="the refusal on stderr",
    )
    assert not daemon.state_dir.exists()  # refused before the store was opened
