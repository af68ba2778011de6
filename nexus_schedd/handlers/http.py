"""The built-in ``http`` handler: one HTTP request per attempt (SPEC section 6).

Payload: ``{"method": "POST", "url": "https://hooks.example.com/beat",
"headers": {...}, "json": ... | "body": "..."}``. Only hosts matching an
``allow_hosts`` entry of ``[handlers.http]`` may be called (none by default).
2xx is success; 429 and 5xx are retriable, honouring ``Retry-After``; other
statuses are permanent failures; network errors are retriable. Redirects are not
followed, so a redirect cannot lead past the allow list.

The handler owns one ``httpx.AsyncClient`` (connection pooling across jobs); the
daemon calls :meth:`HttpHandler.aclose` when it unloads the handler.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from nexus_schedd.clock import Clock, SystemClock
from nexus_schedd.errors import ConfigError, InvalidSpec
from nexus_schedd.handlers.base import (
    ENGINE_KEYS,
    HandlerContext,
    payload_error,
    with_trace_headers,
)
from nexus_schedd.model import Job, JobResult

EXCERPT_CHARS = 1024
_PAYLOAD_KEYS = frozenset({"method", "url", "headers", "json", "body"})
_CONFIG_KEYS = frozenset({"allow_hosts", "timeout_s"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_RETRY_AFTER_S = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class HttpPayload:
    """A validated ``http`` payload."""

    method: str
    url: httpx.URL
    headers: Mapping[str, str]
    json: Any
    body: str | None
    has_json: bool

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> HttpPayload:
        """Check the payload; raises ValueError with a message for the job's error."""
        unknown = set(payload) - _PAYLOAD_KEYS - ENGINE_KEYS
        if unknown:
            raise ValueError(f"unknown payload key(s): {', '.join(sorted(unknown))}")
        # A notification (or follow-up) without a body of its own posts its event
        # (or trigger) as JSON (SPEC 15).
        added = next((key for key in ("event", "trigger") if key in payload), None)
        posts_added = added is not None and "json" not in payload and "body" not in payload
        method = payload.get("method", "POST" if posts_added else "GET")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise ValueError(f"payload.method must be one of {', '.join(sorted(_METHODS))}")
        raw_url = payload.get("url")
        if not isinstance(raw_url, str) or not raw_url:
            raise ValueError("payload.url must be a non-empty string")
        try:
            url = httpx.URL(raw_url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"payload.url is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("payload.url must be an absolute http:// or https:// URL")
        headers = payload.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("payload.headers must be an object of strings")
        if "json" in payload and "body" in payload:
            raise ValueError("give payload.json or payload.body, not both")
        body = payload.get("body")
        if body is not None and not isinstance(body, str):
            raise ValueError("payload.body must be a string")
        if posts_added and method.upper() in ("POST", "PUT", "PATCH"):
            assert added is not None
            return cls(method.upper(), url, dict(headers), payload[added], None, True)
        return cls(method.upper(), url, dict(headers), payload.get("json"), body, "json" in payload)


class HttpHandler:
    """Runs ``http`` jobs against the hosts in ``allow_hosts``."""

    def __init__(
        self,
        allow_hosts: Sequence[str] = (),
        *,
        timeout_s: float = 30.0,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.allow_hosts = tuple(host.lower() for host in allow_hosts)
        self.timeout_s = timeout_s
        self.clock: Clock = clock or SystemClock()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def supports(self, job_type: str) -> bool:
        """Only the ``http`` job type."""
        return job_type == "http"

    def allowed(self, host: str) -> bool:
        """True if ``host`` matches an ``allow_hosts`` entry (a name or a glob like ``*.example.com``)."""
        host = host.lower()
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.allow_hosts)

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Add-time check: a well-formed payload whose URL host ``allow_hosts`` permits."""
        try:
            request = HttpPayload.parse(payload)
        except ValueError as exc:
            raise payload_error(str(exc)) from None
        if not self.allowed(request.url.host):
            raise InvalidSpec("payload.url", self._refusal(request.url.host))

    def _refusal(self, host: str) -> str:
        allow = ", ".join(self.allow_hosts) if self.allow_hosts else "nothing"
        return f"host {host!r} is not allowed: [handlers.http] allow_hosts permits {allow}"

    async def aclose(self) -> None:
        """Close the connection pool; the daemon calls this when it unloads the handler."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, inside the event loop that will use it.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s,
                follow_redirects=False,
                transport=self._transport,
                headers={"User-Agent": "nexus-schedd"},
            )
        return self._client

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """Send the payload's request and map the response status to a result."""
        try:
            request = HttpPayload.parse(job.payload)
        except ValueError as exc:
            return JobResult.failure(f"bad http payload: {exc}", should_retry=False)
        if not self.allowed(request.url.host):
            return JobResult.failure(self._refusal(request.url.host), should_retry=False)
        headers = dict(request.headers)
        if not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = ctx.idempotency_key
        with_trace_headers(headers, ctx)
        try:
            response = await self._http().request(
                request.method,
                request.url,
                headers=headers,
                json=request.json if request.has_json else None,
                content=request.body,
            )
        except httpx.TransportError as exc:
            return JobResult.failure(f"{type(exc).__name__}: {exc}".rstrip(": "))
        return self._result(response)

    def _result(self, response: httpx.Response) -> JobResult:
        excerpt = response.text[:EXCERPT_CHARS]
        status = response.status_code
        if 200 <= status < 300:
            return JobResult.success({"status": status, "body": excerpt})
        error = f"HTTP {status} {response.reason_phrase}".rstrip()
        if excerpt.strip():
            error = f"{error}: {excerpt.strip()}"
        if status == 429 or status >= 500:
            return JobResult.failure(error, retry_delay_s=self._retry_after(response))
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            error = f"{error} (redirect to {location!r} not followed)"
        return JobResult.failure(error, should_retry=False)

    def _retry_after(self, response: httpx.Response) -> float | None:
        """``Retry-After`` as seconds (delta-seconds or an HTTP date), else None."""
        raw = response.headers.get("Retry-After", "").strip()
        if not raw:
            return None
        if raw.isdigit():
            return min(float(raw), _MAX_RETRY_AFTER_S)
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        # Measure against the server's own Date header when it sent one, so a
        # skewed local clock does not stretch or shrink the wait.
        now: datetime = self.clock.now()
        server_date = response.headers.get("Date")
        if server_date:
            try:
                parsed = parsedate_to_datetime(server_date)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None and parsed.tzinfo is not None:
                now = parsed
        delay = (when - now).total_seconds()
        if not math.isfinite(delay):
            return None
        return min(max(delay, 0.0), _MAX_RETRY_AFTER_S)


def make_handler(config: Mapping[str, Any]) -> HttpHandler:
    """Entry point ``http``: ``[handlers.http]`` takes ``allow_hosts`` and ``timeout_s``."""
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise ConfigError(
            "<config>",
            f"handlers.http.{sorted(unknown)[0]}",
            "unknown key (use allow_hosts, timeout_s)",
        )
    hosts = config.get("allow_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError("<config>", "handlers.http.allow_hosts", "must be a list of host names")
    timeout = config.get("timeout_s", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError("<config>", "handlers.http.timeout_s", "must be a positive number")
    return HttpHandler(hosts, timeout_s=float(timeout))


__all__ = ["HttpHandler", "HttpPayload", "make_handler"]
