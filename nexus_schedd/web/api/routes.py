"""The server of ``/api/v1``: :class:`Api` serves the route table of :mod:`.table`
(which also builds the OpenAPI document).

Every request goes: query token check, authentication and scope, query
parameters, body (size, content type, JSON), ``Idempotency-Key``, then one or
two control-protocol calls. Job and run objects are passed through exactly as
the daemon sends them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route

from nexus_schedd.clock import Clock
from nexus_schedd.errors import (
    INTERFACE,
    JobExists,
    JobNotFound,
    PermissionDenied,
    SchedulerError,
    UnknownJobType,
)
from nexus_schedd.model.trace_context import from_headers
from nexus_schedd.web.api.config import ApiConfig, ApiToken
from nexus_schedd.web.api.events import EventLog, JsonSource, NumberedEvent
from nexus_schedd.web.api.idempotency import (
    IdempotencyStore,
    StoredReply,
    fingerprint,
    reply_headers,
    valid_key,
)
from nexus_schedd.web.api.openapi import PREFIX, SCHEMAS, build_document
from nexus_schedd.web.api.pool import DaemonPool
from nexus_schedd.web.api.problems import (
    ApiProblem,
    api_error,
    bad_request,
    from_scheduler_error,
    not_found,
)
from nexus_schedd.web.api.table import (
    DEFAULT_LIMIT,
    ICS_MEDIA,
    JSON_MEDIA,
    MAX_TEXT,
    OPERATIONS,
    Operation,
)

log = structlog.get_logger("nexus_schedd.web.api")

CLIENT_TIMEOUT_S = 10.0
MAX_SCAN_CALLS = 20
SSE_KEEPALIVE_S = 15.0
SSE_RETRY_MS = 2000
URL_TOKEN_PARAMS = ("token", "access_token")
_EVERY = re.compile(r"^\s*(?:(\d{1,6})\s*)?([a-z]+?)s?\s*$")
_UNITS = {
    "minute": "minutely",
    "hour": "hourly",
    "day": "daily",
    "week": "weekly",
    "month": "monthly",
    "year": "yearly",
}


@dataclass(slots=True)
class Call:
    """One authenticated request, parsed."""

    request: Request
    token: ApiToken | None
    query: dict[str, Any]
    body: Any
    ref: str = ""


@dataclass(slots=True)
class Reply:
    """A JSON (or text) reply before encoding."""

    status: int
    content: Any
    headers: dict[str, str] = field(default_factory=dict)
    media: str = JSON_MEDIA

    def response(self) -> Response:
        """The HTTP response."""
        if self.media == JSON_MEDIA:
            body = json.dumps(self.content, separators=(",", ":")).encode()
        else:
            body = str(self.content).encode()
        media = self.media if self.media == JSON_MEDIA else f"{self.media}; charset=utf-8"
        return Response(body, status_code=self.status, media_type=media, headers=self.headers)


Handler = Callable[[Call], Awaitable[Reply | Response]]


class ApiMount(Mount):
    """``Mount`` whose pattern also matches paths with a (percent-encoded) newline, so
    that every path under the prefix gets the API's problem+json, never a dashboard page."""

    def __init__(self, path: str, app: Starlette) -> None:
        super().__init__(path, app=app)
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


class Api:
    """The JSON API of one ``nexus-schedweb``: tokens, idempotency, events."""

    def __init__(
        self,
        config: ApiConfig,
        socket: str | None,
        clock: Clock,
        *,
        daemon_up: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self.socket = socket
        self.clock = clock
        self.daemon_up = daemon_up
        self.idempotency = IdempotencyStore(config.idempotency_db, clock)
        self.pool = DaemonPool(socket, CLIENT_TIMEOUT_S, clock)
        self.event_log = EventLog()
        self._document: dict[str, Any] = build_document(OPERATIONS)

    # -- the application ---------------------------------------------------------

    def asgi(self) -> Starlette:
        """The Starlette app to mount at ``/api/v1`` (its lifespan is :meth:`running`)."""
        routes = [
            Route(
                operation.path.replace("{ref}", "{ref:str}"),
                self._endpoint(operation),
                methods=[operation.method],
                name=operation.operation_id,
            )
            for operation in OPERATIONS
        ]
        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error, Exception: self._crash},
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the idempotency file for as long as the app runs."""
        async with AsyncExitStack() as stack:
            await self.idempotency.open()
            stack.push_async_callback(self.idempotency.close)
            stack.push_async_callback(self.pool.aclose)
            log.info(
                "api_enabled",
                tokens=len(self.config.tokens),
                idempotency_db=str(self.config.idempotency_db),
            )
            yield

    def publish(self, kind: str, source: JsonSource) -> None:
        """Feed one Watch event (or daemon up/down) to the SSE streams."""
        self.event_log.publish(kind, source)

    def close_streams(self) -> None:
        """End the open SSE streams (shutdown)."""
        self.event_log.close()

    # -- request pipeline ---------------------------------------------------------

    def _endpoint(self, operation: Operation) -> Callable[[Request], Awaitable[Response]]:
        handler: Handler = getattr(self, operation.handler)

        async def endpoint(request: Request) -> Response:
            try:
                return await self._serve(operation, handler, request)
            except ApiProblem as problem:
                return problem.response(request.url.path)
            except SchedulerError as exc:
                return from_scheduler_error(exc).response(request.url.path)
            except Exception as exc:
                # Not raised on: Starlette's error middleware would log it a second time.
                return await self._crash(request, exc)

        return endpoint

    async def _serve(self, operation: Operation, handler: Handler, request: Request) -> Response:
        if not operation.query_token:
            for name in URL_TOKEN_PARAMS:
                if name in request.query_params:
                    raise ApiProblem(
                        400,
                        api_error("TokenInURL"),
                        "tokens are accepted in the URL only on /calendar.ics; send"
                        " 'Authorization: Bearer TOKEN' (URLs end up in logs)",
                    )
        token = self._authenticate(request, operation)
        query = _parse_query(request, operation)
        raw = b""
        body: Any = None
        if operation.method == "POST":
            raw = await self._read_body(request)
            body = _parse_body(raw, request, operation)
        call = Call(request, token, query, body, str(request.path_params.get("ref", "")))
        if call.ref and len(call.ref) > MAX_TEXT:
            raise not_found(call.ref[:MAX_TEXT])
        key = request.headers.get("idempotency-key")
        if operation.method == "POST" and key is not None and token is not None:
            return await self._idempotent(handler, call, token, key, raw)
        reply = await handler(call)
        return reply if isinstance(reply, Response) else reply.response()

    def _authenticate(self, request: Request, operation: Operation) -> ApiToken | None:
        if operation.scope == "public":
            return None
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        presented = credential.strip() if scheme.lower() == "bearer" else ""
        if not presented and operation.query_token:
            presented = request.query_params.get("token", "")
        token = self._match(presented) if presented else None
        if token is None:
            challenge = 'Bearer realm="nexus-schedd"'
            if presented:
                challenge += ', error="invalid_token"'
            raise ApiProblem(
                401,
                api_error("Unauthorized"),
                "a valid bearer token is required" if not presented else "unknown token",
                headers={"WWW-Authenticate": challenge},
            )
        if operation.scope == "admin" and token.scope != "admin":
            raise ApiProblem(
                403,
                PermissionDenied.varlink_error,
                f"token {token.name!r} has scope read; this needs an admin token",
            )
        return token

    def _match(self, presented: str) -> ApiToken | None:
        """The token whose SHA-256 equals the presented one's; every token is compared,
        each in constant time, so timing tells nothing about which one (nearly) matched."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: ApiToken | None = None
        for token in self.config.tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        too_large = ApiProblem(
            413, api_error("PayloadTooLarge"), f"the body is larger than {limit} bytes"
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise too_large
        return bytes(body)

    async def _idempotent(
        self, handler: Handler, call: Call, token: ApiToken, key: str, raw: bytes
    ) -> Response:
        if not valid_key(key):
            raise bad_request("Idempotency-Key", "must be 1 to 255 visible ASCII characters")
        request_fingerprint = fingerprint(call.request.method, call.request.url.path, raw)
        async with self.idempotency.lock(token.name, key):
            claim = await self.idempotency.claim(token.name, key, request_fingerprint)
            if claim.conflict:
                raise ApiProblem(
                    422,
                    api_error("IdempotencyKeyReused"),
                    "this Idempotency-Key was used with another request in the last 24 h",
                )
            if claim.in_flight:
                raise ApiProblem(
                    409,
                    api_error("IdempotencyKeyInFlight"),
                    "a request with this Idempotency-Key was interrupted before its reply"
                    " was kept; its outcome is unknown (read the job back, or use a new key)",
                )
            if claim.stored is not None:
                stored = claim.stored
                return Response(
                    stored.body,
                    status_code=stored.status,
                    headers={**stored.headers, "Idempotent-Replayed": "true"},
                )
            try:
                try:
                    reply = await handler(call)
                    response = reply if isinstance(reply, Response) else reply.response()
                except ApiProblem as problem:
                    response = problem.response(call.request.url.path)
                except SchedulerError as exc:
                    response = from_scheduler_error(exc).response(call.request.url.path)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.idempotency.release(token.name, key)
                raise
            if response.status_code >= 500:
                # Nothing was done (daemon down) or the outcome is unknown: a retry may run.
                await self.idempotency.release(token.name, key)
                return response
            await self.idempotency.complete(
                token.name,
                key,
                StoredReply(
                    response.status_code, reply_headers(response.headers), bytes(response.body)
                ),
            )
            return response

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            problem = ApiProblem(404, api_error("NotFound"), f"no route {request.url.path}")
        elif exc.status_code == 405:
            problem = ApiProblem(
                405,
                api_error("MethodNotAllowed"),
                f"{request.method} is not allowed on {request.url.path}",
                headers=headers,
            )
        else:
            problem = ApiProblem(exc.status_code, api_error("HttpError"), str(exc.detail))
        return problem.response(request.url.path)

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("api_request_failed", path=request.url.path, error=repr(exc), exc_info=exc)
        return ApiProblem(
            500, f"{INTERFACE}.InternalError", "unexpected error; it was logged"
        ).response(request.url.path)

    # -- the daemon ---------------------------------------------------------------

    async def daemon(self, method: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """One control-protocol call (pooled connection); returns its reply parameters."""
        return await self.pool.call(method, parameters)

    async def _visible_job(self, call: Call) -> dict[str, Any]:
        """The job the path names, if the token may see it (else 404 as if absent)."""
        job: dict[str, Any] = (await self.daemon("GetJob", {"id": call.ref}))["job"]
        if call.token is not None and not call.token.sees(str(job.get("job_type"))):
            raise not_found(call.ref)
        return job

    # -- handlers ------------------------------------------------------------------

    async def openapi(self, call: Call) -> Reply:
        """GET /openapi.json."""
        return Reply(200, self._document)

    async def status(self, call: Call) -> Reply:
        """GET /status."""
        return Reply(200, (await self.daemon("GetStatus"))["status"])

    async def add_job(self, call: Call) -> Reply:
        """POST /jobs: 201 + Location, or 200 for an equal named job that exists."""
        spec = call.body
        _check_type(call.token, spec, "job_type")
        existing: str | None = None
        name = spec.get("name")
        if isinstance(name, str) and name:
            try:
                existing = (await self.daemon("GetJob", {"id": name}))["job"]["id"]
            except JobNotFound:
                existing = None
        try:
            job = (await self.daemon("AddJob", _with_trace({"job": spec}, call)))["job"]
        except JobExists as exc:
            if call.token is not None and call.token.confined:
                # The holder may be of a type this token must not see: name no id.
                raise ApiProblem(
                    409, exc.varlink_error, f"the name {exc.name!r} is taken"
                ) from None
            raise
        if job["id"] == existing:
            return Reply(200, job)
        return Reply(201, job, {"Location": f"{PREFIX}/jobs/{quote(job['id'], safe='')}"})

    async def add_jobs(self, call: Call) -> Reply:
        """POST /jobs/batch."""
        specs = call.body.get("jobs")
        if not isinstance(specs, list):
            raise bad_request("jobs", "must be an array of job specs")
        for index, spec in enumerate(specs):
            if not isinstance(spec, dict):
                raise bad_request(f"jobs[{index}]", "must be a JSON object")
            _check_type(call.token, spec, f"jobs[{index}].job_type")
        added = await self.daemon("AddJobs", _with_trace({"jobs": specs}, call))
        return Reply(200, {"jobs": added["jobs"]})

    async def list_jobs(self, call: Call) -> Reply:
        """GET /jobs."""
        query = call.query
        parameters = _without_none(
            status=query.get("status") or None,
            job_type=query.get("job_type"),
            target_id=query.get("target_id"),
            overdue=query.get("overdue") or None,
            cursor=query.get("cursor"),
        )
        items, cursor = await self._page(
            "ListJobs", "jobs", parameters, query.get("limit", DEFAULT_LIMIT), call.token
        )
        return Reply(200, {"jobs": items, "next_cursor": cursor})

    async def get_job(self, call: Call) -> Reply:
        """GET /jobs/{ref}."""
        return Reply(200, await self._visible_job(call))

    async def _act(self, call: Call, method: str, extra: Mapping[str, Any]) -> Reply:
        job = await self._visible_job(call)
        reply = await self.daemon(method, {"id": job["id"], **extra})
        return Reply(200, reply["job"])

    async def cancel(self, call: Call) -> Reply:
        """POST /jobs/{ref}/cancel."""
        return await self._act(call, "CancelJob", {})

    async def pause(self, call: Call) -> Reply:
        """POST /jobs/{ref}/pause."""
        return await self._act(call, "PauseJob", _without_none(**call.body))

    async def resume(self, call: Call) -> Reply:
        """POST /jobs/{ref}/resume."""
        return await self._act(call, "ResumeJob", {})

    async def trigger(self, call: Call) -> Reply:
        """POST /jobs/{ref}/trigger."""
        return await self._act(call, "TriggerJob", {})

    async def reschedule(self, call: Call) -> Reply:
        """POST /jobs/{ref}/reschedule."""
        return await self._act(call, "RescheduleJob", _without_none(**call.body))

    async def requeue(self, call: Call) -> Reply:
        """POST /jobs/{ref}/requeue."""
        return await self._act(call, "RequeueJob", _without_none(**call.body))

    async def requeue_jobs(self, call: Call) -> Reply:
        """POST /jobs/requeue: bulk, by filter."""
        body = call.body
        token = call.token
        if token is not None and token.confined:
            if not isinstance(body.get("job_type"), str):
                raise bad_request(
                    "job_type", "a token confined to job types must name one it may touch"
                )
            _check_type(token, body, "job_type")
        return Reply(200, await self.daemon("RequeueJobs", _without_none(**body)))

    async def backfill(self, call: Call) -> Reply:
        """POST /jobs/{ref}/backfill."""
        job = await self._visible_job(call)
        return Reply(200, await self.daemon("BackfillJob", {**call.body, "id": job["id"]}))

    async def list_runs(self, call: Call) -> Reply:
        """GET /runs."""
        query = call.query
        job_id = query.get("job_id")
        token = call.token
        if job_id is not None and token is not None and token.confined:
            job = (await self.daemon("GetJob", {"id": job_id}))["job"]
            if not token.sees(str(job.get("job_type"))):
                raise not_found(job_id)
            job_id = job["id"]
            token = None  # one visible job: no filtering needed
        parameters = _without_none(
            job_id=job_id, outcome=query.get("outcome") or None, cursor=query.get("cursor")
        )
        items, cursor = await self._page(
            "ListRuns", "runs", parameters, query.get("limit", DEFAULT_LIMIT), token
        )
        return Reply(200, {"runs": items, "next_cursor": cursor})

    async def _page(
        self,
        method: str,
        key: str,
        parameters: dict[str, Any],
        limit: int,
        token: ApiToken | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page; for a confined token, the daemon's pages filtered by job type.

        Filtering asks for at most the missing count each time, so the daemon's
        cursor always points just after the last item returned. After
        :data:`MAX_SCAN_CALLS` calls a page may be short (even empty) while
        ``next_cursor`` is not null.
        """
        if token is None or not token.confined:
            reply = await self.daemon(method, {**parameters, "limit": limit})
            return reply[key], reply.get("next_cursor")
        job_type = parameters.get("job_type")
        if job_type is not None and not token.sees(job_type):
            return [], None
        items: list[dict[str, Any]] = []
        cursor = parameters.get("cursor")
        for _ in range(MAX_SCAN_CALLS):
            reply = await self.daemon(
                method, {**parameters, "cursor": cursor, "limit": limit - len(items)}
            )
            items.extend(item for item in reply[key] if token.sees(str(item.get("job_type"))))
            cursor = reply.get("next_cursor")
            if cursor is None or len(items) >= limit:
                break
        return items, cursor

    async def preview(self, call: Call) -> Reply:
        """GET /preview."""
        query = call.query
        cron, every = query.get("cron"), query.get("every")
        if (cron is None) == (every is None):
            raise bad_request("cron", "give exactly one of cron or every")
        recurrence: dict[str, Any]
        if cron is not None:
            recurrence = {"kind": "cron", "cron": cron}
        else:
            found = _EVERY.match(str(every).lower())
            if not found or found.group(2) not in _UNITS:
                raise bad_request("every", '"N UNIT", UNIT minute|hour|day|week|month|year')
            interval = int(found.group(1) or 1)
            if interval < 1:
                raise bad_request("every", "N must be at least 1")
            recurrence = {"kind": _UNITS[found.group(2)], "interval": interval}
        if query.get("tz") is not None:
            recurrence["timezone"] = query["tz"]
        parameters = _without_none(
            recurrence=recurrence,
            start=query.get("from"),
            count=query.get("count"),
            # Exclusion calendars live in the daemon's config: it checks the names.
            exclude=list(query["exclude"]) if query.get("exclude") else None,
        )
        return Reply(
            200, {"occurrences": (await self.daemon("Preview", parameters))["occurrences"]}
        )

    async def calendar(self, call: Call) -> Reply:
        """GET /calendar.ics."""
        text: str = (
            await self.daemon("ExportCalendar", _without_none(days=call.query.get("days")))
        )["ical"]
        if call.token is not None and call.token.confined:
            text = _confine_calendar(text, call.token)
        return Reply(200, text, {"Cache-Control": "private, max-age=300"}, ICS_MEDIA)

    async def events(self, call: Call) -> Response:
        """GET /events: SSE, with replay after Last-Event-ID."""
        # Fail now (503) rather than open a stream that says nothing.
        if not self.daemon_up():
            await self.daemon("GetStatus")
        token = call.token
        job_type = call.query.get("job_type")
        job_id = call.query.get("job_id")
        last_event_id = call.request.headers.get("last-event-id")

        def visible(event: NumberedEvent) -> bool:
            if event.kind == "daemon":
                return True
            job = event.data.get("job") or {}
            run = event.data.get("run") or {}
            types = {t for t in (job.get("job_type"), run.get("job_type")) if t}
            ids = {i for i in (job.get("id"), run.get("job_id")) if i}
            if token is not None and not any(token.sees(t) for t in types):
                return False
            if job_type is not None and job_type not in types:
                return False
            return job_id is None or job_id in ids

        async def stream() -> AsyncIterator[str]:
            with self.event_log.subscribe(last_event_id) as subscription:
                yield f"retry: {SSE_RETRY_MS}\n\n"
                if subscription.reset_reason:
                    reset = {"reason": subscription.reset_reason}
                    yield f"event: reset\ndata: {json.dumps(reset)}\n\n"
                for event in subscription.replay:
                    if visible(event):
                        yield event.encode()
                while True:
                    message: str | None = None
                    with anyio.move_on_after(SSE_KEEPALIVE_S):
                        try:
                            event = await subscription.receive.receive()
                        except anyio.EndOfStream:
                            return
                        message = event.encode() if visible(event) else ""
                    yield ": keep-alive\n\n" if message is None else message

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def _check_type(token: ApiToken | None, spec: Any, field_name: str) -> None:
    """A confined token cannot add jobs of other types: UnknownJobType, as if absent."""
    if token is None or not isinstance(spec, dict):
        return
    job_type = spec.get("job_type")
    if isinstance(job_type, str) and not token.sees(job_type):
        raise from_scheduler_error(UnknownJobType(job_type))


def _parse_query(request: Request, operation: Operation) -> dict[str, Any]:
    known = {param.name: param for param in operation.query}
    values: dict[str, Any] = {}
    for name, raw in request.query_params.multi_items():
        param = known.get(name)
        if param is None:
            raise bad_request(name, "unknown query parameter")
        value = param.parse(raw)
        if param.repeated:
            values.setdefault(name, []).append(value)
        elif name in values:
            raise bad_request(name, "given twice")
        else:
            values[name] = value
    values.pop("token", None)
    return values


def _parse_body(raw: bytes, request: Request, operation: Operation) -> Any:
    """The JSON body: an object of the route's schema's fields (an empty body is {})."""
    if not raw.strip():
        if operation.body_required:
            raise bad_request("body", "a JSON object is required")
        return {}
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != JSON_MEDIA and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiProblem(
            415,
            api_error("UnsupportedMediaType"),
            f"send the body as {JSON_MEDIA}, not {media or 'no Content-Type'}",
        )
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad_request("body", f"not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise bad_request("body", "must be a JSON object")
    schema = SCHEMAS.get(operation.body or "", {})
    if schema.get("additionalProperties") is False:
        allowed = set(schema.get("properties", {}))
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise bad_request(unknown[0][:MAX_TEXT], "unknown field")
    for name in schema.get("required", []):
        if name not in body:
            raise bad_request(name, "is required")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _confine_calendar(text: str, token: ApiToken) -> str:
    """The calendar without the events of job types the token may not see."""
    from icalendar import Calendar

    calendar = Calendar.from_ical(text)
    kept = []
    for component in calendar.subcomponents:
        if component.name == "VEVENT":
            categories = component.get("categories")
            names: list[str] = []
            for entry in categories if isinstance(categories, list) else [categories]:
                if entry is not None:
                    names.extend(str(category) for category in entry.cats)
            if not any(token.sees(name) for name in names):
                continue
        kept.append(component)
    calendar.subcomponents = kept
    result: bytes = calendar.to_ical()
    return result.decode("utf-8")


def _with_trace(parameters: dict[str, Any], call: Call) -> dict[str, Any]:
    """AddJob(s) parameters with the request's W3C trace context (SPEC 15), if it
    sent a valid ``traceparent`` (a malformed one is ignored, as the W3C asks)."""
    headers = call.request.headers
    context = from_headers(headers.get("traceparent"), headers.get("tracestate"))
    if context is not None:
        parameters["trace_context"] = context
    return parameters


def _without_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


__all__ = ["Api", "ApiMount"]
