"""Errors of the HTTP API as ``application/problem+json`` (RFC 9457).

Every refusal is an :class:`ApiProblem`; every error of :mod:`nexus_schedd.errors`
maps to one status here, in one table, and its ``type`` ends with the Varlink
error name (``.../io.nexus.Scheduler.JobNotFound``), so a client can switch on
the same names in every language.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from nexus_schedd.errors import (
    DaemonUnreachable,
    InvalidJobState,
    InvalidSpec,
    JobExists,
    JobNotFound,
    PermissionDenied,
    ProtocolError,
    SchedulerError,
    StoreError,
    UnknownJobType,
)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:nexus-schedd:error:"
API_ERRORS = "io.nexus.SchedulerApi"
RETRY_AFTER_S = "5"

STATUS_BY_ERROR: tuple[tuple[type[SchedulerError], int], ...] = (
    (JobNotFound, 404),
    (InvalidSpec, 400),
    (UnknownJobType, 400),
    (InvalidJobState, 409),
    (JobExists, 409),
    (PermissionDenied, 403),
    (DaemonUnreachable, 503),
    (StoreError, 503),
)
"""The HTTP status of each daemon error; anything else the daemon says is 502."""


class ApiProblem(Exception):
    """A refusal with its status; ``name`` is the Varlink-style error name."""

    def __init__(
        self,
        status: int,
        name: str,
        detail: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.name = name
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def response(self, instance: str | None = None) -> Response:
        """The problem+json response."""
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.name,
            "title": _title(self.name),
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        if instance:
            body["instance"] = instance
        return Response(
            json.dumps(body, separators=(",", ":")),
            status_code=self.status,
            media_type=PROBLEM_JSON,
            headers=self.headers,
        )


def api_error(name: str) -> str:
    """The full name of an error the API itself raises (not the daemon)."""
    return f"{API_ERRORS}.{name}"


def bad_request(field: str, reason: str) -> ApiProblem:
    """400 for a bad query parameter or body, shaped as InvalidSpec."""
    return ApiProblem(
        400,
        InvalidSpec.varlink_error,
        f"{field}: {reason}",
        extra={"field": field, "reason": reason},
    )


def from_scheduler_error(exc: SchedulerError) -> ApiProblem:
    """The problem for an error of the daemon or of the client library."""
    if isinstance(exc, ProtocolError) and str(exc).startswith("InvalidParameter"):
        # The daemon's own IDL check of a parameter the API passed through, e.g.
        # "InvalidParameter (parameter=job.priority)". To an HTTP client that is an
        # invalid spec like any other: one error name, with the field as the body names it.
        found = re.search(r"parameter=([^,)]+)", str(exc))
        field = found.group(1) if found else ""
        field = field.removeprefix("job.") if field.startswith("job.") else field
        return bad_request(field or "body", "wrong type or value")
    if isinstance(exc, ProtocolError):
        # A reply the client library could not map (the daemon's InternalError, a
        # broken reply): the daemon's fault, not the caller's.
        return ApiProblem(502, api_error("DaemonError"), f"the daemon answered: {exc}")
    status = next((code for cls, code in STATUS_BY_ERROR if isinstance(exc, cls)), 502)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidSpec):
        extra = {"field": exc.field, "reason": exc.reason}
    elif isinstance(exc, JobExists):
        extra = {"name": exc.name, "id": exc.job_id}
    elif isinstance(exc, InvalidJobState) and exc.status:
        extra = {"job_status": exc.status}
    elif isinstance(exc, UnknownJobType):
        extra = {"job_type": exc.job_type}
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER_S
    return ApiProblem(status, exc.varlink_error, str(exc), extra=extra, headers=headers)


def not_found(ref: str) -> ApiProblem:
    """404 exactly as the daemon's JobNotFound (a confined token gets the same)."""
    return from_scheduler_error(JobNotFound(ref))


def _title(name: str) -> str:
    """``io.nexus.Scheduler.JobNotFound`` -> ``Job not found``."""
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", name.rsplit(".", 1)[-1]).split()
    return " ".join([words[0], *(word.lower() for word in words[1:])]) if words else "Error"


__all__ = [
    "PROBLEM_JSON",
    "ApiProblem",
    "api_error",
    "bad_request",
    "from_scheduler_error",
    "not_found",
]
