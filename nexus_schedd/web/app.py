"""The dashboard's ASGI application: pages, actions, live events and metrics.

Every page opens its own short connection to the control socket through
:class:`nexus_schedd.client.Client`; the daemon's errors become pages with the
matching HTTP status (unknown job 404, bad filter 400, daemon down 503), and
anything unexpected is logged and shown as a plain 500 page, never a traceback.
"""

from __future__ import annotations

import http
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

import anyio
import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus_schedd import __version__
from nexus_schedd.client import Client
from nexus_schedd.clock import Clock, SystemClock
from nexus_schedd.errors import (
    DaemonUnreachable,
    InvalidJobState,
    InvalidSpec,
    JobNotFound,
    PermissionDenied,
    SchedulerError,
)
from nexus_schedd.model import Job, JobStatus, Run, RunOutcome
from nexus_schedd.model.status import REQUEUABLE
from nexus_schedd.web import metrics
from nexus_schedd.web.api import Api
from nexus_schedd.web.api.routes import ApiMount
from nexus_schedd.web.config import WebConfig
from nexus_schedd.web.formatting import (
    describe_recurrence,
    display_zone,
    format_duration,
    format_json,
    format_relative,
    format_time,
)
from nexus_schedd.web.live import Broadcaster, EventPump, sse_message
from nexus_schedd.web.security import AUTH_COOKIE, CSRF_FIELD, SESSION_COOKIE, Guard
from nexus_schedd.web.timeline import Lane, render_timeline

log = structlog.get_logger("nexus_schedd.web")

_E = TypeVar("_E", bound=StrEnum)

CLIENT_TIMEOUT_S = 10.0
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_PARAM_CHARS = 200
MAX_CURSOR_CHARS = 1000
MAX_FORM_BYTES = 8192
PREVIEW_COUNT = 10
TIMELINE_HOURS = 24
TIMELINE_MAX_JOBS = 200
TIMELINE_MAX_MARKS = 300
SSE_KEEPALIVE_S = 15.0
FAILED_OUTCOMES = (RunOutcome.FAILURE, RunOutcome.TIMEOUT, RunOutcome.CRASHED)
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Same-origin form posts keep their Referer (a CSRF check falls back on it).
    (b"referrer-policy", b"same-origin"),
)

ActionCall = Callable[[Client, str], Awaitable[Job]]
ACTIONS: Mapping[str, ActionCall] = {
    "pause": Client.pause_job,
    "resume": Client.resume_job,
    "trigger": Client.trigger_job,
    "cancel": Client.cancel_job,
    "requeue": Client.requeue_job,
}
ACTION_DONE = {
    "pause": "paused",
    "resume": "resumed",
    "trigger": "triggered",
    "cancel": "canceled",
    "requeue": "requeued",
}


class Dashboard:
    """One dashboard: its config, security guard, metrics, live events and templates."""

    def __init__(
        self, config: WebConfig, *, clock: Clock | None = None, secret: bytes | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.guard = Guard(config, secret)
        self.zone = display_zone(config.timezone)
        self.run_metrics = metrics.RunMetrics()
        self.broadcaster = Broadcaster()
        self.pump = EventPump(config.socket, self.run_metrics, self.broadcaster)
        self.api: Api | None = None
        if config.api.enabled:
            self.api = Api(
                config.api, config.socket, self.clock, daemon_up=lambda: self.pump.connected
            )
            self.pump.listeners.append(self.api.publish)
        self.templates = Environment(
            loader=PackageLoader("nexus_schedd.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            time=lambda value: format_time(value, self.zone),
            relative=lambda value: format_relative(value, self.clock.now()),
            duration=format_duration,
            recurrence=describe_recurrence,
            json=format_json,
        )

    # -- the application ---------------------------------------------------------

    def asgi(self) -> Starlette:
        """The Starlette application serving this dashboard."""
        routes = [
            Route("/", self.overview, name="overview"),
            Route("/jobs", self.jobs, name="jobs"),
            Route("/jobs/{ref:str}", self.job, name="job"),
            Route("/jobs/{ref:str}/{action:str}", self.action, methods=["POST"], name="action"),
            Route("/runs", self.runs, name="runs"),
            Route("/timeline", self.timeline, name="timeline"),
            Route("/events", self.events, name="events"),
            Route("/metrics", self.metrics, name="metrics"),
            Route("/login", self.login_form, name="login"),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"], name="logout"),
            *([ApiMount("/api/v1", self.api.asgi())] if self.api is not None else []),
            Mount(
                "/static",
                StaticFiles(packages=[("nexus_schedd.web", "static")]),
                name="static",
            ),
        ]
        handlers: dict[Any, Any] = {
            HTTPException: self._http_error,
            DaemonUnreachable: self._daemon_down,
            JobNotFound: self._scheduler_error(404, "Not found"),
            InvalidSpec: self._scheduler_error(400, "Bad request"),
            InvalidJobState: self._scheduler_error(409, "Not possible in this state"),
            PermissionDenied: self._scheduler_error(
                403,
                "The daemon refused this dashboard's user (control.read_group may read,"
                " control.admin_group may also act)",
            ),
            SchedulerError: self._scheduler_error(502, "The daemon refused the request"),
        }
        return Starlette(
            routes=routes,
            exception_handlers=handlers,
            middleware=[Middleware(ResponseSafety, render_error=self._plain_error)],
            lifespan=self.lifespan,
        )

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Watch the daemon for as long as the application runs."""
        async with AsyncExitStack() as stack:
            if self.api is not None:
                await stack.enter_async_context(self.api.running())
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.pump.run)
                try:
                    yield
                finally:
                    self.close_streams()
                    tg.cancel_scope.cancel()

    def close_streams(self) -> None:
        """End every open Server-Sent Events stream (pages and API), on shutdown."""
        self.broadcaster.close()
        if self.api is not None:
            self.api.close_streams()

    def client(self) -> Client:
        """A new control-socket client (use it as ``async with``)."""
        return Client(self.config.socket, timeout=CLIENT_TIMEOUT_S)

    # -- pages ---------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Counts by status, running now, backlog, lateness and recent failures."""
        async with self.client() as client:
            status = await client.status()
            running = await client.list_jobs(status=[JobStatus.RUNNING.value], limit=20)
            failures = await client.list_runs(
                outcome=[outcome.value for outcome in FAILED_OUTCOMES], limit=10
            )
            names, requeuable = await self._run_jobs(client, failures.items)
        return self.render(
            request,
            "overview.html",
            status=status,
            counts=[(JobStatus(name), count) for name, count in status["counts"].items()],
            running=running.items,
            failures=failures.items,
            names=names,
            requeuable=requeuable,
            next_due=_instant(status.get("next_due")),
            started_at=_instant(status.get("started_at")),
        )

    async def jobs(self, request: Request) -> Response:
        """Jobs filtered by status, type, target and overdue, one cursor page at a time."""
        params = request.query_params
        statuses = _choices(params.getlist("status"), JobStatus, "status")
        job_type = _text(params.get("type"), "type")
        target = _text(params.get("target"), "target")
        overdue = _flag(params.get("overdue"), "overdue")
        limit = _limit(params.get("limit"))
        cursor = _text(params.get("cursor"), "cursor", MAX_CURSOR_CHARS)
        async with self.client() as client:
            page = await client.list_jobs(
                status=[status.value for status in statuses],
                job_type=job_type,
                target_id=target,
                overdue=overdue,
                limit=limit,
                cursor=cursor,
            )
        filters: dict[str, str | list[str]] = {
            "status": [status.value for status in statuses],
            "type": job_type or "",
            "target": target or "",
            "overdue": "1" if overdue else "",
            "limit": str(limit) if params.get("limit") else "",
        }
        return self.render(
            request,
            "jobs.html",
            jobs=page.items,
            filters=filters,
            all_statuses=list(JobStatus),
            next_url=_next_url("/jobs", filters, page.next_cursor),
            first_url=_page_url("/jobs", filters, None) if cursor else None,
        )

    async def job(self, request: Request) -> Response:
        """One job: its definition, next occurrences (Preview) and runs."""
        ref = _ref(request)
        limit = _limit(request.query_params.get("limit"))
        cursor = _text(request.query_params.get("cursor"), "cursor", MAX_CURSOR_CHARS)
        async with self.client() as client:
            job = await client.get_job(ref)
            upcoming = await self._upcoming(client, job, PREVIEW_COUNT)
            runs = await client.list_runs(job.id, limit=limit, cursor=cursor)
        done = request.query_params.get("done", "")
        base = f"/jobs/{quote(job.id, safe='')}"
        return self.render(
            request,
            "job.html",
            job=job,
            upcoming=upcoming,
            runs=runs.items,
            names={job.id: job.name or job.id},
            done=ACTION_DONE.get(done, ""),
            actions=list(ACTIONS),
            available=_available_actions(job),
            next_url=_next_url(base, {}, runs.next_cursor),
            first_url=base if cursor else None,
        )

    async def runs(self, request: Request) -> Response:
        """Recent runs of all jobs (or one), filtered by outcome."""
        params = request.query_params
        outcomes = _choices(params.getlist("outcome"), RunOutcome, "outcome")
        job_ref = _text(params.get("job"), "job")
        limit = _limit(params.get("limit"))
        cursor = _text(params.get("cursor"), "cursor", MAX_CURSOR_CHARS)
        async with self.client() as client:
            page = await client.list_runs(
                job_ref,
                outcome=[outcome.value for outcome in outcomes],
                limit=limit,
                cursor=cursor,
            )
            names, requeuable = await self._run_jobs(client, page.items)
        filters: dict[str, str | list[str]] = {
            "outcome": [outcome.value for outcome in outcomes],
            "job": job_ref or "",
            "limit": str(limit) if params.get("limit") else "",
        }
        return self.render(
            request,
            "runs.html",
            runs=page.items,
            names=names,
            requeuable=requeuable,
            filters=filters,
            all_outcomes=list(RunOutcome),
            next_url=_next_url("/runs", filters, page.next_cursor),
            first_url=_page_url("/runs", filters, None) if cursor else None,
        )

    async def timeline(self, request: Request) -> Response:
        """The next 24 hours of pending and running jobs as server-side SVG."""
        start = self.clock.now()
        end = start + timedelta(hours=TIMELINE_HOURS)
        jobs: list[Job] = []
        cursor: str | None = None
        async with self.client() as client:
            while len(jobs) < TIMELINE_MAX_JOBS:
                page = await client.list_jobs(
                    status=[JobStatus.PENDING.value, JobStatus.RUNNING.value],
                    limit=min(200, TIMELINE_MAX_JOBS - len(jobs)),
                    cursor=cursor,
                )
                jobs.extend(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
            lanes = []
            for job in jobs:
                upcoming = await self._upcoming(client, job, TIMELINE_MAX_MARKS)
                inside = tuple(
                    min(max(instant, start), end) for instant in upcoming if instant < end
                )
                if inside:
                    more = len(upcoming) == TIMELINE_MAX_MARKS and upcoming[-1] < end
                    lanes.append(
                        Lane(
                            label=job.name or job.id,
                            href=f"/jobs/{quote(job.id, safe='')}",
                            job_type=job.job_type,
                            status=job.status.value,
                            occurrences=inside,
                            more=more,
                        )
                    )
        lanes.sort(key=lambda lane: (lane.occurrences[0], lane.label))
        return self.render(
            request,
            "timeline.html",
            svg=render_timeline(lanes, start, end, self.zone),
            lanes=lanes,
            start=start,
            end=end,
            jobs_truncated=cursor is not None,
            max_jobs=TIMELINE_MAX_JOBS,
        )

    # -- live events and metrics -----------------------------------------------------

    async def events(self, request: Request) -> Response:
        """Server-Sent Events: every Watch event, plus the daemon going down or up."""

        async def stream() -> AsyncIterator[str]:
            with self.broadcaster.subscribe() as messages:
                yield sse_message("daemon", {"up": self.pump.connected, "reason": ""})
                while True:
                    message: str | None = None
                    # Never yield inside the scope: the consumer would run inside it.
                    with anyio.move_on_after(SSE_KEEPALIVE_S):
                        try:
                            message = await messages.receive()
                        except anyio.EndOfStream:
                            return
                    # On timeout a comment line keeps proxies from closing an idle stream.
                    yield message if message is not None else ": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def metrics(self, request: Request) -> Response:
        """Prometheus text format; ``nexus_schedd_up 0`` while the daemon is unreachable."""
        status: dict[str, Any] | None
        try:
            async with self.client() as client:
                status = await client.status()
        except SchedulerError as exc:
            log.debug("web_metrics_without_daemon", reason=str(exc))
            status = None
        return Response(metrics.render(self.run_metrics, status), media_type=metrics.CONTENT_TYPE)

    # -- actions and login ----------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        """POST /jobs/{ref}/{pause|resume|trigger|cancel|requeue}, behind the guard."""
        ref = _ref(request)
        name = request.path_params["action"]
        call = ACTIONS.get(name)
        if call is None:
            raise HTTPException(404, f"There is no action {name!r}.")
        form = await _form(request)
        verdict = self.guard.check_action(request, form.get(CSRF_FIELD, ""))
        if not verdict.ok:
            headers = (
                {"WWW-Authenticate": 'Bearer realm="nexus-schedweb"'}
                if verdict.status == 401
                else None
            )
            log.warning("web_action_refused", action=name, ref=ref, status=verdict.status)
            return self.error_page(
                request, verdict.status, _phrase(verdict.status), verdict.reason, headers=headers
            )
        async with self.client() as client:
            job = await call(client, ref)
        log.info(
            "web_action", action=name, job_id=job.id, user=self.guard.user(request) or "unknown"
        )
        return RedirectResponse(f"/jobs/{quote(job.id, safe='')}?done={name}", status_code=303)

    async def login_form(self, request: Request) -> Response:
        """The token login form."""
        return self.render(
            request, "login.html", next=_safe_next(request.query_params.get("next")), error=""
        )

    async def login(self, request: Request) -> Response:
        """Check the token and set the login cookie for this session."""
        form = await _form(request)
        verdict = self.guard.check_csrf(request, form.get(CSRF_FIELD, ""))
        if not verdict.ok:
            return self.error_page(request, verdict.status, _phrase(verdict.status), verdict.reason)
        target = _safe_next(form.get("next"))
        if not self.config.token:
            return self.error_page(
                request, 403, "Forbidden", "This dashboard has no token: login is not available."
            )
        if not self.guard.token_matches(form.get("token", "")):
            log.warning("web_login_failed")
            return self.render(
                request,
                "login.html",
                status_code=401,
                next=target,
                error="That token is not valid.",
            )
        response = RedirectResponse(target, status_code=303)
        session_id = request.cookies[SESSION_COOKIE]
        response.set_cookie(
            AUTH_COOKIE,
            self.guard.auth_cookie(session_id),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        log.info("web_login")
        return response

    async def logout(self, request: Request) -> Response:
        """Forget the login cookie."""
        form = await _form(request)
        verdict = self.guard.check_csrf(request, form.get(CSRF_FIELD, ""))
        if not verdict.ok:
            return self.error_page(request, verdict.status, _phrase(verdict.status), verdict.reason)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(AUTH_COOKIE)
        return response

    # -- rendering ---------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """A page from ``template``; gives the browser a session cookie if it has none."""
        session_id = request.cookies.get(SESSION_COOKIE, "")
        new_session = not _SESSION_ID.match(session_id)
        if new_session:
            session_id = self.guard.new_session_id()
        html = self.templates.get_template(template).render(
            path=request.url.path,
            now=self.clock.now(),
            zone_name=format_time(self.clock.now(), self.zone).rsplit(" ", 1)[-1],
            actions_enabled=self.config.actions_enabled,
            user=self.guard.user(request),
            token_login=bool(self.config.token),
            csrf_field=CSRF_FIELD,
            csrf=self.guard.csrf_token(session_id),
            daemon_up=self.pump.connected,
            version=__version__,
            **context,
        )
        response = HTMLResponse(html, status_code=status_code, headers=headers)
        if new_session:
            response.set_cookie(
                SESSION_COOKIE,
                session_id,
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
            )
        return response

    def error_page(
        self,
        request: Request,
        status: int,
        title: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        """A page that explains a refusal or failure, with the right status."""
        return self.render(
            request,
            "error.html",
            status_code=status,
            headers=headers,
            code=status,
            title=title,
            message=message,
        )

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = exc.detail if exc.detail != _phrase(exc.status_code) else ""
        if exc.status_code == 404 and not message:
            message = f"There is no page at {request.url.path}."
        return self.error_page(
            request, exc.status_code, _phrase(exc.status_code), message, headers=exc.headers
        )

    async def _daemon_down(self, request: Request, exc: Exception) -> Response:
        log.warning("web_daemon_unreachable", path=request.url.path, reason=str(exc))
        return self.error_page(
            request,
            503,
            "The scheduler daemon is not reachable",
            f"{exc} — the dashboard will work again as soon as the daemon is back.",
            headers={"Retry-After": "5"},
        )

    def _scheduler_error(
        self, status: int, title: str
    ) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def handle(request: Request, exc: Exception) -> Response:
            return self.error_page(request, status, title, str(exc))

        return handle

    def _plain_error(self) -> bytes:
        return self.templates.get_template("500.html").render().encode()

    # -- data helpers ----------------------------------------------------------------

    async def _upcoming(self, client: Client, job: Job, count: int) -> list[datetime]:
        """The job's next occurrences, starting with the current one (via Preview)."""
        if job.status.is_final or job.run_at is None:
            return []
        recurrence = job.recurrence
        if recurrence is None or not recurrence.repeats:
            return [job.run_at]
        if recurrence.max_occurrences is not None:
            remaining = recurrence.max_occurrences - job.occurrence_count
            if remaining < 1:
                return [job.run_at]
            recurrence = replace(recurrence, max_occurrences=remaining)
        current = job.scheduled_for or job.run_at
        try:
            following = await client.preview(recurrence, start=current, count=count)
        except InvalidSpec:
            # A schedule whose end has passed has no further occurrences.
            return [job.run_at]
        # Preview lists cron matches strictly after the start: the current
        # occurrence comes first either way.
        if not following or following[0] != current:
            following = [current, *following]
        return following[:count]

    async def _run_jobs(
        self, client: Client, runs: Sequence[Run]
    ) -> tuple[dict[str, str], set[str]]:
        """Names (else ids) of the jobs of ``runs`` (a pruned job keeps its id), and
        the ids of those a requeue can bring back (failed_permanent or canceled)."""
        names: dict[str, str] = {}
        requeuable: set[str] = set()
        for run in runs:
            if run.job_id in names:
                continue
            try:
                job = await client.get_job(run.job_id)
            except JobNotFound:
                names[run.job_id] = run.job_id
            else:
                names[run.job_id] = job.name or job.id
                if job.status in REQUEUABLE:
                    requeuable.add(job.id)
        return names, requeuable


class ResponseSafety:
    """Adds the security headers to every response and turns any unexpected error
    into a logged, plain 500 page instead of a traceback."""

    def __init__(self, app: ASGIApp, render_error: Callable[[], bytes]) -> None:
        self.app = app
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("web_request_failed", path=scope.get("path", ""))
            if started:
                raise
            body = self.render_error()
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


def create_app(config: WebConfig, **options: Any) -> Starlette:
    """The ASGI application for ``config`` (``options`` go to :class:`Dashboard`)."""
    return Dashboard(config, **options).asgi()


# -- request parsing -------------------------------------------------------------------


def _ref(request: Request) -> str:
    ref = str(request.path_params["ref"])
    if not ref or len(ref) > MAX_PARAM_CHARS:
        raise HTTPException(404, "There is no job with that id or name.")
    return ref


def _text(value: str | None, name: str, maximum: int = MAX_PARAM_CHARS) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > maximum:
        raise HTTPException(400, f"The {name} filter is longer than {maximum} characters.")
    return value


def _flag(value: str | None, name: str) -> bool:
    if value in (None, "", "0", "false", "off"):
        return False
    if value in ("1", "true", "on"):
        return True
    raise HTTPException(400, f"The {name} filter takes 1 or 0, not {value!r}.")


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise HTTPException(400, f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return int(value)


def _choices(values: Sequence[str], enum: type[_E], name: str) -> list[_E]:
    chosen: list[_E] = []
    for value in values:
        if value == "":
            continue
        try:
            chosen.append(enum(value))
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            raise HTTPException(
                400, f"Unknown {name} {value[:50]!r}; use one of {allowed}."
            ) from None
    return chosen


async def _form(request: Request) -> dict[str, str]:
    """The first value of each field of a url-encoded form body (at most 8 KiB)."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "The form is too large.")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        return {}
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "The form could not be read.") from None
    return {key: values[0] for key, values in fields.items()}


def _safe_next(value: str | None) -> str:
    """A local path to go back to after login (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _next_url(path: str, filters: Mapping[str, str | list[str]], cursor: str | None) -> str | None:
    """The URL of the next page (None on the last page), keeping the filters."""
    return None if cursor is None else _page_url(path, filters, cursor)


def _page_url(path: str, filters: Mapping[str, str | list[str]], cursor: str | None) -> str:
    """The URL of the page that starts at ``cursor`` (None: the first) with the filters."""
    pairs: list[tuple[str, str]] = []
    for key, value in filters.items():
        values = value if isinstance(value, list) else [value]
        pairs.extend((key, item) for item in values if item)
    if cursor is not None:
        pairs.append(("cursor", cursor))
    return f"{path}?{urlencode(pairs)}" if pairs else path


def _available_actions(job: Job) -> set[str]:
    """The actions the job's status allows (the daemon re-checks them)."""
    if job.status in REQUEUABLE:
        return {"requeue"}
    if job.status.is_final:
        return set()
    available = {"cancel"}
    if job.status is JobStatus.PENDING:
        available |= {"pause", "trigger"}
    elif job.status is JobStatus.PAUSED:
        available.add("resume")
    return available


def _instant(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"
