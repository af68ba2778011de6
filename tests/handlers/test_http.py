"""The http handler against a real HTTP server on 127.0.0.1: status mapping,
Retry-After, the host allow list and payload validation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import anyio
import anyio.abc
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.errors import ConfigError, InvalidSpec
from nexus_schedd.handlers.http import HttpHandler, make_handler
from tests.handlers.conftest import MakeJob

RESPONSES: dict[str, tuple[int, str, dict[str, str]]] = {
    "/ok": (200, "hello", {}),
    "/created": (201, "", {}),
    "/missing": (404, "no such thing", {}),
    "/busy": (429, "slow down", {"Retry-After": "7"}),
    "/down": (
        503,
        "maintenance",
        {"Retry-After": "Sat, 01 Mar 2025 12:02:00 GMT", "Date": "Sat, 01 Mar 2025 12:00:30 GMT"},
    ),
    "/flaky": (500, "", {}),
    "/moved": (302, "", {"Location": "https://elsewhere.example/"}),
}


@dataclass
class Server:
    """A minimal HTTP/1.1 server that records what it was sent."""

    port: int = 0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    async def serve(self, stream: anyio.abc.ByteStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode().split("\r\n")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                # Repeated headers combine, as HTTP says, so duplicates show.
                headers[key] = (
                    f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
                )
            while len(body) < int(headers.get("content-length", "0")):
                body += await stream.receive()
            method, path, _ = request_line.split(" ")
            self.requests.append((method, path, headers, body))
            status, text, extra = RESPONSES.get(path, (200, body.decode(), {}))
            lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(text.encode())}"]
            lines += ["Connection: close", *(f"{k}: {v}" for k, v in extra.items())]
            await stream.send(("\r\n".join(lines) + "\r\n\r\n" + text).encode())


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    state.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, state.serve)
        yield state
        tg.cancel_scope.cancel()


@pytest.fixture
async def handler() -> AsyncIterator[HttpHandler]:
    clock = VirtualClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    http = HttpHandler(["127.0.0.1"], timeout_s=10, clock=clock)
    yield http
    await http.aclose()


def url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


pytestmark = pytest.mark.anyio


async def test_2xx_is_success_with_status_and_body(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    job, ctx = make_job("http", {"url": url(server, "/ok")})
    result = await handler.handle(job, ctx)
    assert result.ok
    assert result.output == {"status": 200, "body": "hello"}


async def test_json_body_headers_and_idempotency_key_are_sent(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    payload = {
        "method": "post",
        "url": url(server, "/echo"),
        "headers": {"X-Team": "ops"},
        "json": {"a": 1},
    }
    job, ctx = make_job("http", payload)
    result = await handler.handle(job, ctx)
    assert result.ok
    method, path, headers, body = server.requests[-1]
    assert (method, path) == ("POST", "/echo")
    assert json.loads(body) == {"a": 1}
    assert headers["x-team"] == "ops"
    assert headers["idempotency-key"] == f"{job.id}:0"
    assert headers["content-type"] == "application/json"


async def test_a_payload_idempotency_key_wins(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    payload = {"url": url(server, "/ok"), "headers": {"idempotency-key": "mine"}}
    job, ctx = make_job("http", payload)
    await handler.handle(job, ctx)
    assert server.requests[-1][2]["idempotency-key"] == "mine"


async def test_the_trace_context_is_sent_as_w3c_headers(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    context = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=opaque",
    }
    job, ctx = make_job("http", {"url": url(server, "/ok")})
    await handler.handle(job, replace(ctx, trace_context=context))
    headers = server.requests[-1][2]
    assert {key: headers[key] for key in context} == context
    # A payload header of the same name wins (as for Idempotency-Key).
    job, ctx = make_job("http", {"url": url(server, "/ok"), "headers": {"TraceParent": "mine"}})
    await handler.handle(job, replace(ctx, trace_context=context))
    headers = server.requests[-1][2]
    assert headers["traceparent"] == "mine" and headers["tracestate"] == "vendor=opaque"
    # Without a trace context, no trace headers.
    job, ctx = make_job("http", {"url": url(server, "/ok")})
    await handler.handle(job, ctx)
    assert "traceparent" not in server.requests[-1][2]


async def test_raw_body_is_sent_as_is(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    job, ctx = make_job("http", {"method": "PUT", "url": url(server, "/echo"), "body": "raw"})
    result = await handler.handle(job, ctx)
    assert result.ok and result.output == {"status": 200, "body": "raw"}


async def test_a_notification_without_a_body_posts_its_event_as_json(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    """SPEC 15: an http notification whose payload has neither json nor body
    posts the event (a follow-up: its trigger) as its JSON body."""
    event = {"event": "failed_permanent", "job": {"id": "J1"}, "run": None}
    job, ctx = make_job("http", {"url": url(server, "/echo"), "event": event})
    assert (await handler.handle(job, ctx)).ok
    method, _, headers, body = server.requests[-1]
    assert (method, json.loads(body)) == ("POST", event)
    assert headers["content-type"] == "application/json"
    trigger = {"job_id": "J1", "run_id": "R1", "outcome": "success", "error": None, "output": 1}
    job, ctx = make_job("http", {"url": url(server, "/echo"), "trigger": trigger})
    assert (await handler.handle(job, ctx)).ok
    assert json.loads(server.requests[-1][3]) == trigger


async def test_a_notification_with_its_own_body_or_method_keeps_them(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    event = {"event": "retry"}
    job, ctx = make_job(
        "http",
        {"method": "PUT", "url": url(server, "/echo"), "json": {"text": "hi"}, "event": event},
    )
    assert (await handler.handle(job, ctx)).ok
    method, _, _, body = server.requests[-1]
    assert (method, json.loads(body)) == ("PUT", {"text": "hi"})
    job, ctx = make_job("http", {"method": "GET", "url": url(server, "/ok"), "event": event})
    assert (await handler.handle(job, ctx)).ok
    assert server.requests[-1][0] == "GET" and server.requests[-1][3] == b""


async def test_404_is_a_permanent_failure(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    job, ctx = make_job("http", {"url": url(server, "/missing")})
    result = await handler.handle(job, ctx)
    assert not result.ok and not result.should_retry
    assert result.error is not None and "404" in result.error and "no such thing" in result.error


async def test_429_is_retriable_after_retry_after_seconds(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    job, ctx = make_job("http", {"url": url(server, "/busy")})
    result = await handler.handle(job, ctx)
    assert not result.ok and result.should_retry
    assert result.retry_delay_s == 7.0


async def test_503_retry_after_http_date_is_measured_from_the_server_date(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    job, ctx = make_job("http", {"url": url(server, "/down")})
    result = await handler.handle(job, ctx)
    assert not result.ok and result.should_retry
    assert result.retry_delay_s == 90.0


async def test_5xx_without_retry_after_leaves_the_delay_to_the_backoff(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    job, ctx = make_job("http", {"url": url(server, "/flaky")})
    result = await handler.handle(job, ctx)
    assert not result.ok and result.should_retry and result.retry_delay_s is None


async def test_redirects_are_not_followed(
    server: Server, handler: HttpHandler, make_job: MakeJob
) -> None:
    job, ctx = make_job("http", {"url": url(server, "/moved")})
    result = await handler.handle(job, ctx)
    assert not result.ok and not result.should_retry
    assert "elsewhere.example" in (result.error or "")


async def test_connection_refused_is_retriable(handler: HttpHandler, make_job: MakeJob) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there any more
    job, ctx = make_job("http", {"url": f"http://127.0.0.1:{port}/"})
    result = await handler.handle(job, ctx)
    assert not result.ok and result.should_retry
    assert "ConnectError" in (result.error or "")


async def test_hosts_outside_allow_hosts_are_refused(server: Server, make_job: MakeJob) -> None:
    job, ctx = make_job("http", {"url": url(server, "/ok")})
    closed = make_handler({})
    result = await closed.handle(job, ctx)
    await closed.aclose()
    assert not result.ok and not result.should_retry
    assert "'127.0.0.1' is not allowed" in (result.error or "")
    assert server.requests == []


async def test_host_globs_match_subdomains_only() -> None:
    http = make_handler({"allow_hosts": ["*.example.com"]})
    assert http.allowed("hooks.Example.com")
    assert not http.allowed("example.com.evil.net")
    await http.aclose()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "url must be a non-empty string"),
        ({"url": "ftp://127.0.0.1/x"}, "http:// or https://"),
        ({"url": "/relative"}, "http:// or https://"),
        ({"url": "http://127.0.0.1/", "method": "BREW"}, "method must be one of"),
        ({"url": "http://127.0.0.1/", "json": {}, "body": "x"}, "not both"),
        ({"url": "http://127.0.0.1/", "headers": {"A": 1}}, "headers must be an object"),
        ({"url": "http://127.0.0.1/", "timeout": 3}, "unknown payload key(s): timeout"),
    ],
)
async def test_bad_payload_is_a_permanent_failure(
    handler: HttpHandler, make_job: MakeJob, payload: dict[str, object], message: str
) -> None:
    job, ctx = make_job("http", payload)
    result = await handler.handle(job, ctx)
    assert not result.ok and not result.should_retry
    assert message in (result.error or "")


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"allow_hosts": "example.com"}, "handlers.http.allow_hosts"),
        ({"timeout_s": 0}, "handlers.http.timeout_s"),
        ({"proxy": "x"}, "handlers.http.proxy"),
    ],
)
async def test_bad_handler_config_is_refused(config: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_handler(config)
    assert caught.value.key == key


def test_add_time_check_refuses_a_host_outside_allow_hosts() -> None:
    handler = HttpHandler(["hooks.example.com"])
    handler.validate("http", {"url": "https://hooks.example.com/x"})
    with pytest.raises(InvalidSpec) as refused:
        handler.validate("http", {"url": "https://evil.example.net/x"})
    assert refused.value.field == "payload.url"
    with pytest.raises(InvalidSpec) as bad:
        handler.validate("http", {"url": "https://hooks.example.com/x", "method": "BREW"})
    assert bad.value.field == "payload.method"
