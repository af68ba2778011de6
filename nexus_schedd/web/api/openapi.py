"""The OpenAPI 3.1 document of the HTTP API, built from the route table.

Routes, parameters, bodies and responses all come from
:data:`nexus_schedd.web.api.table.OPERATIONS`, the same table the server is
built from, so the document cannot describe a route that does not exist or miss
one that does. The schemas of jobs and runs follow the Varlink IDL
(``io.nexus.Scheduler.varlink``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nexus_schedd import __version__

if TYPE_CHECKING:
    from nexus_schedd.web.api.table import Operation

PREFIX = "/api/v1"

JSON = dict[str, Any]


def _nullable(schema: JSON) -> JSON:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


_TIME = {"type": "string", "description": "RFC 3339 instant with offset"}
JOB_STATUSES = ["pending", "running", "paused", "completed", "failed_permanent", "canceled"]
_RUN_OUTCOME = ["success", "failure", "timeout", "crashed", "canceled", "skipped"]
_MISFIRE = ["run_once", "run_all", "skip"]
_OVERLAP = ["forbid", "allow", "replace"]
_KINDS = ["once", "minutely", "hourly", "daily", "weekly", "monthly", "yearly", "cron"]

SCHEMAS: dict[str, JSON] = {
    "Recurrence": {
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string", "enum": _KINDS},
            "interval": _nullable({"type": "integer"}),
            "cron": _nullable({"type": "string"}),
            "timezone": _nullable({"type": "string"}),
            "ends_at": _nullable(_TIME),
            "max_occurrences": _nullable({"type": "integer"}),
            "exclude": _nullable(
                {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "exclusion calendars of the daemon's config"
                    " ([calendars.NAME]); left out when empty",
                }
            ),
        },
    },
    "JobSpec": {
        "type": "object",
        "description": "A job to add. Left-out fields take the daemon's defaults; run_at"
        " defaults to now. A time without an offset is read in the recurrence's zone.",
        "required": ["job_type"],
        "additionalProperties": False,
        "properties": {
            "job_type": {"type": "string"},
            "name": _nullable({"type": "string"}),
            "target_id": _nullable({"type": "string"}),
            "payload": _nullable({"type": "object"}),
            "run_at": _nullable(_TIME),
            "recurrence": _nullable({"$ref": "#/components/schemas/Recurrence"}),
            "priority": _nullable({"type": "integer"}),
            "max_retries": _nullable({"type": "integer"}),
            "timeout_s": _nullable({"type": "number"}),
            "misfire": _nullable({"type": "string", "enum": _MISFIRE}),
            "misfire_grace_s": _nullable({"type": "number"}),
            "overlap": _nullable({"type": "string", "enum": _OVERLAP}),
            "jitter_s": _nullable({"type": "number"}),
            "on_success": _nullable(
                {
                    "$ref": "#/components/schemas/JobSpec",
                    "description": "A job added when an occurrence succeeds (no follow-ups"
                    " of its own); its payload gains `trigger`.",
                }
            ),
            "on_failure": _nullable(
                {
                    "$ref": "#/components/schemas/JobSpec",
                    "description": "A job added when an occurrence ends failed (no"
                    " follow-ups of its own); its payload gains `trigger`.",
                }
            ),
        },
    },
    "LastResult": {
        "type": "object",
        "required": ["success", "started_at", "finished_at", "duration_ms"],
        "properties": {
            "success": {"type": "boolean"},
            "output": {},
            "error": _nullable({"type": "string"}),
            "started_at": _TIME,
            "finished_at": _TIME,
            "duration_ms": {"type": "number"},
        },
    },
    "Job": {
        "type": "object",
        "description": "A job exactly as Varlink and `nexus-schedctl --json` show it.",
        "required": [
            "id",
            "job_type",
            "payload",
            "status",
            "run_at",
            "recurrence",
            "priority",
            "max_retries",
            "retry_count",
            "occurrence_count",
            "misfire",
            "overlap",
            "created_at",
            "updated_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": _nullable({"type": "string"}),
            "job_type": {"type": "string"},
            "target_id": _nullable({"type": "string"}),
            "payload": {"type": "object"},
            "status": {"type": "string", "enum": JOB_STATUSES},
            "run_at": _nullable(_TIME),
            "recurrence": _nullable({"$ref": "#/components/schemas/Recurrence"}),
            "priority": {"type": "integer"},
            "max_retries": {"type": "integer"},
            "retry_count": {"type": "integer"},
            "occurrence_count": {"type": "integer"},
            "timeout_s": _nullable({"type": "number"}),
            "misfire": {"type": "string", "enum": _MISFIRE},
            "misfire_grace_s": {"type": "number"},
            "overlap": {"type": "string", "enum": _OVERLAP},
            "jitter_s": {"type": "number"},
            "last_result": _nullable({"$ref": "#/components/schemas/LastResult"}),
            "created_at": _TIME,
            "updated_at": _TIME,
            "scheduled_for": _nullable(_TIME),
            "anchor_at": _TIME,
            "static": {"type": "boolean"},
            "paused_until": _nullable(_TIME),
            "on_success": {"$ref": "#/components/schemas/JobSpec"},
            "on_failure": {"$ref": "#/components/schemas/JobSpec"},
            "trace_context": {"type": "object", "additionalProperties": {"type": "string"}},
            "backfill_of": {
                "type": "object",
                "required": ["job_id", "occurrence"],
                "properties": {"job_id": {"type": "string"}, "occurrence": {"type": "integer"}},
            },
            "notification": {"type": "boolean"},
        },
    },
    "Run": {
        "type": "object",
        "description": "One attempt, as Varlink shows it; finished_at and outcome are"
        " null while it runs.",
        "required": ["id", "job_id", "job_type", "scheduled_for", "attempt", "started_at"],
        "properties": {
            "id": {"type": "string"},
            "job_id": {"type": "string"},
            "job_type": {"type": "string"},
            "scheduled_for": _TIME,
            "attempt": {"type": "integer"},
            "started_at": _TIME,
            "finished_at": _nullable(_TIME),
            "outcome": _nullable({"type": "string", "enum": _RUN_OUTCOME}),
            "error": _nullable({"type": "string"}),
            "output": {},
            "duration_ms": _nullable({"type": "number"}),
            "node": {"type": "string"},
        },
    },
    "Status": {
        "type": "object",
        "required": ["version", "counts", "running", "due_backlog"],
        "properties": {
            "version": {"type": "string"},
            "node": {"type": "string"},
            "started_at": _TIME,
            "uptime_s": {"type": "number"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "running": {"type": "integer"},
            "due_backlog": {"type": "integer"},
            "next_due": _nullable(_TIME),
            "lateness_p50_ms": _nullable({"type": "number"}),
            "lateness_p99_ms": _nullable({"type": "number"}),
            "loop_lag_ms": {"type": "number"},
            "extra": {"type": "object"},
        },
    },
    "JobPage": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "next_cursor": _nullable({"type": "string"}),
        },
    },
    "RunPage": {
        "type": "object",
        "required": ["runs", "next_cursor"],
        "properties": {
            "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
            "next_cursor": _nullable({"type": "string"}),
        },
    },
    "JobBatch": {
        "type": "object",
        "required": ["jobs"],
        "additionalProperties": False,
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/JobSpec"}}
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}},
    },
    "Occurrences": {
        "type": "object",
        "required": ["occurrences"],
        "properties": {"occurrences": {"type": "array", "items": _TIME}},
    },
    "Empty": {
        "type": "object",
        "additionalProperties": False,
        "description": "No parameters (an empty body is accepted too).",
    },
    "Reschedule": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "run_at": _nullable(_TIME),
            "recurrence": _nullable({"$ref": "#/components/schemas/Recurrence"}),
            "clear_recurrence": _nullable({"type": "boolean"}),
        },
    },
    "Pause": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"until": _nullable(_TIME)},
        "description": "until: when the job resumes by itself (default: when resumed).",
    },
    "Requeue": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"run_at": _nullable(_TIME)},
        "description": "run_at: when a one-shot job runs again (default now).",
    },
    "RequeueFilter": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "status": {
                "type": "array",
                "items": {"type": "string", "enum": ["failed_permanent", "canceled"]},
            },
            "job_type": {"type": "string"},
            "target_id": {"type": "string"},
            "error_contains": {"type": "string"},
            "since": _TIME,
            "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
            "all": {"type": "boolean"},
        },
    },
    "RequeueReport": {
        "type": "object",
        "required": ["count", "ids", "skipped", "more"],
        "properties": {
            "count": {"type": "integer"},
            "ids": {"type": "array", "items": {"type": "string"}},
            "skipped": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "reason"],
                    "properties": {"id": {"type": "string"}, "reason": {"type": "string"}},
                },
            },
            "more": {"type": "boolean"},
        },
    },
    "Backfill": {
        "type": "object",
        "additionalProperties": False,
        "required": ["from", "to"],
        "properties": {
            "from": {"type": "string", "description": "first instant, included"},
            "to": {"type": "string", "description": "end, excluded"},
        },
        "description": (
            "The range [from, to): RFC 3339 / ISO 8601 times; one without an offset is "
            "read in the job's recurrence zone."
        ),
    },
    "BackfillReport": {
        "type": "object",
        "required": ["count", "ids", "first", "last", "already_queued"],
        "properties": {
            "count": {"type": "integer"},
            "ids": {"type": "array", "items": {"type": "string"}},
            "first": _nullable(_TIME),
            "last": _nullable(_TIME),
            "already_queued": {"type": "integer"},
        },
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; `type` ends with the Varlink error name.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "field": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
}

ERROR_TEXT = {
    400: "Invalid spec, body or query (InvalidSpec with field and reason, UnknownJobType)",
    401: "No or unknown bearer token (with WWW-Authenticate: Bearer)",
    403: "The token's scope does not allow this (a read token on a write)",
    404: "No such job (or one the token may not see), or no such route",
    409: "The job's state does not allow this (InvalidJobState), or JobExists",
    413: "Body larger than [api] max_body_bytes",
    415: "Body is not application/json",
    422: "Idempotency-Key reused with another request",
    502: "The daemon answered something unexpected",
    503: "The daemon is unreachable (Retry-After given)",
}


def build_document(operations: Sequence[Operation], server_url: str | None = None) -> JSON:
    """The OpenAPI 3.1 document for ``operations``."""
    paths: dict[str, JSON] = {}
    for operation in operations:
        paths.setdefault(PREFIX + operation.path, {})[operation.method.lower()] = _operation(
            operation
        )
    document: JSON = {
        "openapi": "3.1.0",
        "info": {
            "title": "nexus-schedd HTTP API",
            "version": __version__,
            "description": "Schedule and inspect jobs of a nexus-schedd daemon from any"
            " language. Job and run objects are exactly those of the Varlink protocol"
            " and `nexus-schedctl --json`. See docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query_token": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "Only on /calendar.ics, for calendar apps; such a URL"
                    " is a secret.",
                },
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document


def _operation(operation: Operation) -> JSON:
    described: JSON = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "responses": _responses(operation),
    }
    if operation.description:
        described["description"] = operation.description
    if operation.scope == "public":
        described["security"] = []
    elif operation.path == "/calendar.ics":
        described["security"] = [{"bearer": []}, {"query_token": []}]
    else:
        described["security"] = [{"bearer": []}]
    parameters: list[JSON] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": "job id or name",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        }
        for name in operation.path_params
    ]
    for param in operation.query:
        schema = param.schema()
        if param.repeated:
            schema = {"type": "array", "items": schema}
        parameters.append(
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "description": param.description,
                "schema": schema,
                **({"style": "form", "explode": True} if param.repeated else {}),
            }
        )
    parameters.extend(
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": description,
            "schema": {"type": "string"},
        }
        for name, description in operation.headers
    )
    if operation.method == "POST":
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "1-255 visible ASCII characters; the same key and body within"
                " 24 h returns the first reply and does nothing again.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        described["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": _ref(operation.body)}},
        }
    return described


def _responses(operation: Operation) -> JSON:
    responses: JSON = {}
    for status, (description, media, schema) in operation.success.items():
        if schema:
            body_schema = _ref(schema)
        else:
            body_schema = {"type": "object"} if media.endswith("json") else {"type": "string"}
        content: JSON = {media: {"schema": body_schema}}
        responses[str(status)] = {"description": description, "content": content}
        if status == 201:
            responses[str(status)]["headers"] = {
                "Location": {"schema": {"type": "string"}, "description": "the job's URL"}
            }
    for status in operation.errors:
        responses[str(status)] = {
            "description": ERROR_TEXT[status],
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
    return responses


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}
