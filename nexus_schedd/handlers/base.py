"""The handler plugin interface (SPEC section 6).

A handler decides *what* runs for a job type. Plugins provide a factory through
the entry-point group ``nexus_schedd.handlers`` (or a ``module:attr`` path in the
config); the factory receives the ``[handlers.NAME]`` table and returns a
:class:`Handler`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import Job, JobResult
from nexus_schedd.model.frozen import fast_init

ENTRY_POINT_GROUP = "nexus_schedd.handlers"


@fast_init
@dataclass(frozen=True, slots=True)
class HandlerContext:
    """What a handler knows about the attempt it is running."""

    attempt: int
    """1 for the first attempt of an occurrence, 2 for its first retry, ..."""
    idempotency_key: str
    """``"{job_id}:{occurrence_count}"``: the same across retries and crash re-runs."""
    deadline: datetime | None
    """When the attempt times out (None: no timeout)."""
    scheduled_for: datetime
    """The instant of the occurrence being run."""
    log: Any
    """A structlog logger bound with job_id, job_type and attempt."""
    run_id: str = ""
    """The id of this attempt's run (unique per attempt; the run in ``ListRuns``)."""
    trace_context: dict[str, str] | None = None
    """The W3C trace context to pass downstream (keys ``traceparent``, ``tracestate``):
    the run span's when tracing is on, else the one the job was added with; None
    when there is neither (SPEC 15, docs/tracing.md)."""


ENGINE_KEYS = frozenset({"trigger", "event"})
"""Payload keys the engine adds (SPEC 15): ``trigger`` to a follow-up job (what
ended the occurrence that added it), ``event`` to a notification job. Every
handler accepts them beside its own keys."""


@runtime_checkable
class Handler(Protocol):
    """Runs jobs of the types it supports.

    ``handle`` returns ``JobResult.success(output)`` or
    ``JobResult.failure(error, should_retry, retry_delay_s)``. Raising, timing
    out, or returning anything else counts as a retriable failure. Handlers run
    concurrently on the daemon's event loop: they must not block it (use
    ``anyio.to_thread.run_sync`` for blocking work).
    """

    def supports(self, job_type: str) -> bool:
        """True if this handler runs jobs of ``job_type``."""
        ...

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """Run one attempt of ``job``."""
        ...


@runtime_checkable
class ValidatingHandler(Protocol):
    """A handler that also checks a job's payload when the job is added (optional).

    The engine calls ``validate`` once for each job added (``AddJob``, ``AddJobs``,
    a static schedule), before anything is written, with the job type and payload.
    It raises :class:`~nexus_schedd.errors.InvalidSpec` naming the field
    (``"payload"`` or ``"payload.KEY"``) to refuse the job; the caller gets the
    error and nothing is added. It must be cheap and must not do I/O: it runs on
    the event loop inside the add call. ``handle`` still checks the payload at run
    time, since a reload may have narrowed the handler's config since the add.
    """

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Raise InvalidSpec if ``payload`` is not one this handler can run."""
        ...


class HandlerFactory(Protocol):
    """What an entry point or ``factory = "module:attr"`` names."""

    def __call__(self, config: Mapping[str, Any]) -> Handler:
        """Build a handler from its ``[handlers.NAME]`` table (empty when absent)."""
        ...


def payload_error(reason: str) -> InvalidSpec:
    """An add-time refusal from a payload parser's message: the field is the
    ``payload.KEY`` the message starts with, else ``payload``."""
    head = reason.split(" ", 1)[0].rstrip(":,")
    field = head if head.startswith("payload.") else "payload"
    return InvalidSpec(field, reason)


def with_trace_headers(headers: dict[str, Any], ctx: HandlerContext) -> dict[str, Any]:
    """``headers`` (changed in place) with ``ctx.trace_context`` as the W3C headers
    ``traceparent`` and ``tracestate`` (SPEC 15), how ``http`` and the queue
    handlers pass the trace on; a header of the same name already there (any case,
    e.g. from the payload) wins."""
    context = ctx.trace_context
    if context:
        taken = {str(name).lower() for name in headers}
        headers.update({name: value for name, value in context.items() if name not in taken})
    return headers
