"""The route table of ``/api/v1``: every operation with its method, path, scope,
query parameters, body and replies. :mod:`.routes` serves it and :mod:`.openapi`
describes it, so the server and its document cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nexus_schedd.web.api.openapi import JOB_STATUSES
from nexus_schedd.web.api.problems import bad_request

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_TEXT = 200
MAX_CURSOR = 1000
JSON_MEDIA = "application/json"
ICS_MEDIA = "text/calendar"

ScopeName = Literal["public", "read", "admin"]


@dataclass(frozen=True, slots=True)
class Query:
    """A query parameter: its type and bounds (checked here, described in OpenAPI)."""

    name: str
    kind: Literal["string", "integer", "boolean"] = "string"
    description: str = ""
    choices: tuple[str, ...] = ()
    repeated: bool = False
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = MAX_TEXT

    def schema(self) -> dict[str, Any]:
        """The JSON schema of one value."""
        if self.kind == "integer":
            bounds = {"minimum": self.minimum, "maximum": self.maximum}
            return {"type": "integer", **{k: v for k, v in bounds.items() if v is not None}}
        if self.kind == "boolean":
            return {"type": "boolean"}
        if self.choices:
            return {"type": "string", "enum": list(self.choices)}
        return {"type": "string", "minLength": 1, "maxLength": self.max_length}

    def parse(self, raw: str) -> Any:
        """One value from the URL, or a 400."""
        if self.kind == "integer":
            if not re.fullmatch(r"-?\d{1,9}", raw):
                raise bad_request(self.name, "must be a whole number")
            value = int(raw)
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise bad_request(self.name, f"must be between {self.minimum} and {self.maximum}")
            return value
        if self.kind == "boolean":
            if raw in ("true", "1"):
                return True
            if raw in ("false", "0"):
                return False
            raise bad_request(self.name, "must be true or false")
        if self.choices and raw not in self.choices:
            raise bad_request(self.name, f"must be one of {', '.join(self.choices)}")
        if not raw or len(raw) > self.max_length:
            raise bad_request(self.name, f"must be 1 to {self.max_length} characters")
        return raw


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the API, as served and as described in OpenAPI."""

    method: Literal["GET", "POST"]
    path: str
    operation_id: str
    handler: str
    scope: ScopeName
    summary: str
    success: Mapping[int, tuple[str, str, str | None]]
    errors: tuple[int, ...]
    query: tuple[Query, ...] = ()
    body: str | None = None
    body_required: bool = False
    description: str = ""
    varlink: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Request headers it reads besides Authorization: (name, description)."""

    @property
    def path_params(self) -> list[str]:
        """Names of the ``{...}`` segments."""
        return re.findall(r"\{(\w+)\}", self.path)

    @property
    def query_token(self) -> bool:
        """Whether ``?token=`` is accepted (the calendar feed only)."""
        return self.path == "/calendar.ics"


READ_ERRORS = (400, 401, 403, 502, 503)
REF_ERRORS = (400, 401, 403, 404, 502, 503)
WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422, 502, 503)
_LIMIT = Query(
    "limit", "integer", f"page size (default {DEFAULT_LIMIT})", minimum=1, maximum=MAX_LIMIT
)
_CURSOR = Query("cursor", description="next_cursor of the previous page", max_length=MAX_CURSOR)
_JOB = ("Job", JSON_MEDIA, "Job")
TRACE_HEADERS = (
    (
        "traceparent",
        "W3C Trace Context of the caller: with tracing on, the job's runs are spans of"
        " this trace (a malformed value is ignored)",
    ),
    ("tracestate", "W3C tracestate, kept with a valid traceparent"),
)


def _action(name: str, varlink: str, summary: str, body: str = "Empty") -> Operation:
    return Operation(
        "POST",
        f"/jobs/{{ref}}/{name}",
        f"{name}Job",
        name,
        "admin",
        summary,
        {200: ("The job after the change", JSON_MEDIA, "Job")},
        WRITE_ERRORS,
        body=body,
        varlink=varlink,
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/openapi.json",
        "openapi",
        "openapi",
        "public",
        "This document (no token needed)",
        {200: ("OpenAPI 3.1", JSON_MEDIA, None)},
        (),
    ),
    Operation(
        "GET",
        "/status",
        "getStatus",
        "status",
        "read",
        "The daemon's status: counts, running, backlog, lateness",
        {200: ("Status", JSON_MEDIA, "Status")},
        READ_ERRORS,
        varlink="GetStatus",
    ),
    Operation(
        "POST",
        "/jobs",
        "addJob",
        "add_job",
        "admin",
        "Schedule one job",
        {
            201: ("Added; Location names the job", JSON_MEDIA, "Job"),
            200: ("A job with this name and an equal definition exists", JSON_MEDIA, "Job"),
        },
        WRITE_ERRORS,
        body="JobSpec",
        body_required=True,
        varlink="AddJob",
        headers=TRACE_HEADERS,
    ),
    Operation(
        "POST",
        "/jobs/batch",
        "addJobs",
        "add_jobs",
        "admin",
        "Schedule several jobs atomically (all or none)",
        {200: ("The jobs, in the order given", JSON_MEDIA, "JobList")},
        WRITE_ERRORS,
        body="JobBatch",
        body_required=True,
        varlink="AddJobs",
        headers=TRACE_HEADERS,
    ),
    Operation(
        "GET",
        "/jobs",
        "listJobs",
        "list_jobs",
        "read",
        "A page of jobs in creation order",
        {200: ("One page; pass next_cursor back as cursor", JSON_MEDIA, "JobPage")},
        READ_ERRORS,
        query=(
            Query(
                "status",
                description="job status (repeatable)",
                choices=tuple(JOB_STATUSES),
                repeated=True,
            ),
            Query("job_type", description="exact job type"),
            Query("target_id", description="exact target id"),
            Query("overdue", "boolean", "only pending jobs past the overdue time"),
            _LIMIT,
            _CURSOR,
        ),
        varlink="ListJobs",
    ),
    Operation(
        "GET",
        "/jobs/{ref}",
        "getJob",
        "get_job",
        "read",
        "One job by id or name",
        {200: _JOB},
        REF_ERRORS,
        varlink="GetJob",
    ),
    _action("cancel", "CancelJob", "End a job; a running attempt is cancelled"),
    _action(
        "pause",
        "PauseJob",
        "Keep a pending job from running until resumed, or until a time",
        body="Pause",
    ),
    _action("resume", "ResumeJob", "Resume a paused job (missed runs follow its misfire policy)"),
    _action("trigger", "TriggerJob", "Run one extra occurrence now"),
    _action(
        "reschedule",
        "RescheduleJob",
        "A new run_at and/or recurrence for a pending or paused job",
        body="Reschedule",
    ),
    _action(
        "requeue",
        "RequeueJob",
        "Put a failed_permanent or canceled job back to pending, its retries reset",
        body="Requeue",
    ),
    Operation(
        "POST",
        "/jobs/requeue",
        "requeueJobs",
        "requeue_jobs",
        "admin",
        "Requeue failed (or canceled) jobs in bulk, by filter, in one commit",
        {200: ("What was requeued and what was left as it was", JSON_MEDIA, "RequeueReport")},
        WRITE_ERRORS,
        body="RequeueFilter",
        body_required=True,
        description=(
            "With no filter at all, `all: true` is required. A token confined to job "
            "types must name a `job_type` it may touch."
        ),
        varlink="RequeueJobs",
    ),
    Operation(
        "POST",
        "/jobs/{ref}/backfill",
        "backfillJob",
        "backfill",
        "admin",
        "Run a recurring job's past occurrences in [from, to) once more",
        {200: ("The runs queued, one job per occurrence", JSON_MEDIA, "BackfillReport")},
        WRITE_ERRORS,
        body="Backfill",
        body_required=True,
        description=(
            "One extra one-shot job per occurrence that has come, due now under the usual "
            "limits, with the occurrence's scheduled_for and idempotency key; the job "
            "itself does not change. At most 10000 occurrences per call. Occurrences whose "
            "backfill job is still queued or running are left out (`already_queued`)."
        ),
        varlink="BackfillJob",
    ),
    Operation(
        "GET",
        "/runs",
        "listRuns",
        "list_runs",
        "read",
        "A page of runs, newest first",
        {200: ("One page; pass next_cursor back as cursor", JSON_MEDIA, "RunPage")},
        REF_ERRORS,
        query=(
            Query("job_id", description="a job's id or name"),
            Query(
                "outcome",
                description="run outcome (repeatable)",
                choices=("success", "failure", "timeout", "crashed", "canceled", "skipped"),
                repeated=True,
            ),
            _LIMIT,
            _CURSOR,
        ),
        varlink="ListRuns",
    ),
    Operation(
        "GET",
        "/preview",
        "preview",
        "preview",
        "read",
        "The next occurrences of a cron expression or an interval",
        {200: ("Occurrences in the recurrence's zone", JSON_MEDIA, "Occurrences")},
        READ_ERRORS,
        query=(
            Query("cron", description="a cron expression (5 or 6 fields, @daily, ...)"),
            Query("every", description='"N UNIT", UNIT minute|hour|day|week|month|year'),
            Query("tz", description="IANA zone (default: the daemon's)"),
            Query("from", description="first occurrence (RFC 3339; default now)"),
            Query("count", "integer", "how many (default 10)", minimum=1, maximum=1000),
            Query(
                "exclude",
                description="exclusion calendar names of the daemon's config (repeatable):"
                " occurrences on their dates are left out; an unknown name is InvalidSpec",
                repeated=True,
            ),
        ),
        varlink="Preview",
    ),
    Operation(
        "GET",
        "/events",
        "events",
        "events",
        "read",
        "Server-Sent Events from Watch (Last-Event-ID resumes)",
        {200: ("text/event-stream", "text/event-stream", None)},
        READ_ERRORS,
        query=(
            Query("job_type", description="only events of this job type"),
            Query("job_id", description="only events of this job id"),
        ),
        varlink="Watch",
        headers=(
            (
                "Last-Event-ID",
                "resume after this event id (replayed while still kept; else a reset event)",
            ),
        ),
    ),
    Operation(
        "GET",
        "/calendar.ics",
        "calendar",
        "calendar",
        "read",
        "The upcoming schedule as iCalendar (?token= accepted here only)",
        {200: ("RFC 5545", ICS_MEDIA, None)},
        READ_ERRORS,
        query=(
            Query("days", "integer", "days ahead (default 30)", minimum=1, maximum=366),
            Query("token", description="a read token, for calendar apps (a secret URL)"),
        ),
        varlink="ExportCalendar",
    ),
)
