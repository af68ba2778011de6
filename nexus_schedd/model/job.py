"""The job model of SPEC section 2: what a client asks for (:class:`JobSpec`), what
the daemon keeps (:class:`Job`), what a handler returns (:class:`JobResult`), and
what the history records (:class:`Run`).

All values are frozen (the ones made per run or per add get a faster ``__init__``
from :func:`~nexus_schedd.model.frozen.fast_init`); the engine derives new job
versions with :meth:`Job.transition` or :func:`dataclasses.replace`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ulid import ULID

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model.frozen import fast_init
from nexus_schedd.model.recurrence import Recurrence, RecurrenceKind
from nexus_schedd.model.schedule import (
    first_occurrence,
    next_occurrence,
    schedule_anchor,
    validate_schedule,
    without_exclusions,
)
from nexus_schedd.model.status import JobStatus, MisfirePolicy, OverlapPolicy, RunOutcome
from nexus_schedd.model.times import format_instant, local_wall_time, parse_instant, resolve_zone
from nexus_schedd.model.trace_context import check_trace_context

if TYPE_CHECKING:
    from nexus_schedd.clock import Clock

_E = TypeVar("_E", MisfirePolicy, OverlapPolicy)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
MAX_NAME_LENGTH = 200
MAX_JOB_TYPE_LENGTH = 200

_SPEC_FIELDS = frozenset(
    {
        "name",
        "job_type",
        "target_id",
        "payload",
        "run_at",
        "recurrence",
        "priority",
        "max_retries",
        "timeout_s",
        "misfire",
        "misfire_grace_s",
        "overlap",
        "jitter_s",
        "on_success",
        "on_failure",
    }
)
FOLLOW_UPS = ("on_success", "on_failure")
"""The job spec fields that name a follow-up job (SPEC 15)."""


def new_id() -> str:
    """A new ULID string: sortable by creation time, unique across nodes."""
    return str(ULID())


def encode_json(value: Any) -> str:
    """Compact, deterministic JSON used for payloads and outputs."""
    return _encode_compact(value)


# One encoder for every call: json.dumps with options builds a new one each time,
# which costs more than encoding a small payload (every add checks its size).
_encode_compact = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


def truncate_output(output: Any) -> Any:
    """Keep a run's output within 64 KiB encoded; a larger one becomes a marked excerpt."""
    try:
        encoded = encode_json(output)
    except (TypeError, ValueError):
        output = repr(output)
        encoded = encode_json(output)
    if len(encoded.encode()) <= MAX_OUTPUT_BYTES:
        return output
    excerpt = encoded.encode()[: MAX_OUTPUT_BYTES - 256].decode(errors="ignore")
    return {"truncated": True, "bytes": len(encoded.encode()), "excerpt": excerpt}


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """Values a job takes when its spec leaves them out (config ``[defaults]``)."""

    timezone: str = "UTC"
    max_retries: int = 3
    timeout_s: float = 300.0
    backoff_base_s: float = 60.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 3600.0
    backoff_jitter: float = 0.1
    misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace_s: float = 60.0
    overlap: OverlapPolicy = OverlapPolicy.FORBID
    overdue_after_s: float = 300.0


@dataclass(frozen=True, slots=True)
class BackfillOf:
    """Marks a job added by a backfill (SPEC 15) as one past occurrence of
    ``job_id``: its runs carry that occurrence's idempotency key."""

    job_id: str
    occurrence: int
    """The occurrence's number counted from the recurring job's anchor (0 first)."""


@dataclass(frozen=True, slots=True)
class JobExtras:
    """What only some jobs carry (SPEC 15), kept in one slot so that the million
    plain jobs in memory pay one pointer for all of it.

    ``on_success`` / ``on_failure`` are the follow-up jobs added when an
    occurrence ends that way; ``trace_context`` the W3C trace context (keys
    ``traceparent``, ``tracestate``) given when the job was added; ``backfill_of``
    the occurrence a backfill job stands for; ``notification`` marks the jobs
    ``[[notify]]`` rules add, which never notify again.
    """

    on_success: JobSpec | None = None
    on_failure: JobSpec | None = None
    trace_context: dict[str, str] | None = None
    backfill_of: BackfillOf | None = None
    notification: bool = False

    @staticmethod
    def of(
        on_success: JobSpec | None = None,
        on_failure: JobSpec | None = None,
        trace_context: dict[str, str] | None = None,
        backfill_of: BackfillOf | None = None,
        notification: bool = False,
    ) -> JobExtras | None:
        """These extras, or None when there are none (the common case)."""
        if not (on_success or on_failure or trace_context or backfill_of or notification):
            return None
        return JobExtras(on_success, on_failure, trace_context or None, backfill_of, notification)

    def follow_up(self, success: bool) -> JobSpec | None:
        """The follow-up for an occurrence that ended in success or failure."""
        return self.on_success if success else self.on_failure

    def to_json(self) -> dict[str, Any]:
        """The stored form (the job row's ``extras`` column)."""
        values: dict[str, Any] = {}
        if self.on_success is not None:
            values["on_success"] = self.on_success.to_json()
        if self.on_failure is not None:
            values["on_failure"] = self.on_failure.to_json()
        if self.trace_context:
            values["trace_context"] = self.trace_context
        if self.backfill_of is not None:
            values["backfill_of"] = {
                "job_id": self.backfill_of.job_id,
                "occurrence": self.backfill_of.occurrence,
            }
        if self.notification:
            values["notification"] = True
        return values

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobExtras | None:
        """Inverse of :meth:`to_json`."""
        backfill = data.get("backfill_of")
        return cls.of(
            on_success=_follow_up_from_json("on_success", data.get("on_success")),
            on_failure=_follow_up_from_json("on_failure", data.get("on_failure")),
            trace_context=data.get("trace_context"),
            backfill_of=None
            if backfill is None
            else BackfillOf(str(backfill["job_id"]), int(backfill["occurrence"])),
            notification=bool(data.get("notification", False)),
        )


def _follow_up_from_json(key: str, data: Any, default_timezone: str = "UTC") -> JobSpec | None:
    """A follow-up spec from JSON: a job spec without follow-ups of its own."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise InvalidSpec(key, "must be a job spec (a JSON object) or null")
    nested = [name for name in FOLLOW_UPS if data.get(name) is not None]
    if nested:
        raise InvalidSpec(f"{key}.{nested[0]}", "a follow-up job cannot have follow-ups")
    try:
        return JobSpec.from_json(data, default_timezone)
    except InvalidSpec as exc:
        raise InvalidSpec(f"{key}.{exc.field}", exc.reason) from None


@fast_init
@dataclass(frozen=True, slots=True)
class JobSpec:
    """A validated request to schedule a job. ``None`` fields take the defaults at add time."""

    job_type: str
    target_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    run_at: datetime | None = None
    recurrence: Recurrence | None = None
    name: str | None = None
    priority: int = 0
    max_retries: int | None = None
    timeout_s: float | None = None
    misfire: MisfirePolicy | None = None
    misfire_grace_s: float | None = None
    overlap: OverlapPolicy | None = None
    jitter_s: float = 0.0
    anchor_at: datetime | None = None
    """Set only when ``run_at`` was given as a local time inside a DST gap: the
    instant the recurrence counts from, so that it keeps the wall-clock time
    asked for (see :func:`~nexus_schedd.model.schedule.schedule_anchor`)."""
    on_success: JobSpec | None = None
    """A job to add when an occurrence of this one succeeds (SPEC 15)."""
    on_failure: JobSpec | None = None
    """A job to add when an occurrence of this one ends failed (SPEC 15)."""
    trace_context: dict[str, str] | None = None
    """The W3C trace context (``traceparent``, ``tracestate``) of the request
    that added the job: its runs are spans of that trace (SPEC 15)."""

    def __post_init__(self) -> None:
        _check_text("job_type", self.job_type, MAX_JOB_TYPE_LENGTH, required=True)
        _check_text("target_id", self.target_id, MAX_NAME_LENGTH)
        _check_text("name", self.name, MAX_NAME_LENGTH)
        if not isinstance(self.payload, dict):
            raise InvalidSpec("payload", "must be a JSON object")
        try:
            # Most jobs carry no payload: "{}" needs no encoder.
            size = len(encode_json(self.payload).encode()) if self.payload else 2
        except (TypeError, ValueError) as exc:
            raise InvalidSpec("payload", f"not JSON-serialisable: {exc}") from None
        if size > MAX_PAYLOAD_BYTES:
            raise InvalidSpec(
                "payload", f"is {size} bytes encoded; the limit is {MAX_PAYLOAD_BYTES}"
            )
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise InvalidSpec("run_at", "must carry a UTC offset")
        _check_int("priority", self.priority, minimum=-(2**31), maximum=2**31 - 1)
        if self.max_retries is not None:
            _check_int("max_retries", self.max_retries, minimum=0, maximum=1000)
        _check_seconds("timeout_s", self.timeout_s, allow_zero=False)
        _check_seconds("misfire_grace_s", self.misfire_grace_s, allow_zero=True)
        _check_seconds("jitter_s", self.jitter_s, allow_zero=True)
        if self.on_success is not None or self.on_failure is not None:
            self._check_follow_ups()
        if self.trace_context is not None:
            check_trace_context(self.trace_context)

    def _check_follow_ups(self) -> None:
        for key, follow_up in self.follow_ups():
            if not isinstance(follow_up, JobSpec):
                raise InvalidSpec(key, "must be a job spec")
            if follow_up.on_success is not None or follow_up.on_failure is not None:
                raise InvalidSpec(key, "a follow-up job cannot have follow-ups")
            if follow_up.name is not None:
                # Names are unique among live jobs: a follow-up added when its
                # trigger ends could not be refused then.
                raise InvalidSpec(f"{key}.name", "a follow-up job cannot have a name")

    @property
    def recurring(self) -> bool:
        """True when the spec has a recurrence that repeats."""
        return self.recurrence is not None and self.recurrence.repeats

    def follow_ups(self) -> list[tuple[str, JobSpec]]:
        """(field, spec) of each follow-up this spec carries."""
        return [(key, spec) for key in FOLLOW_UPS if (spec := getattr(self, key)) is not None]

    def to_json(self) -> dict[str, Any]:
        """The protocol's JSON of this spec (what :meth:`from_json` reads); fields
        left unset are left out."""
        values = {
            "job_type": self.job_type,
            "name": self.name,
            "target_id": self.target_id,
            "payload": self.payload,
            "run_at": None if self.run_at is None else format_instant(self.run_at),
            "recurrence": None if self.recurrence is None else self.recurrence.to_json(),
            "priority": self.priority,
            "max_retries": self.max_retries,
            "timeout_s": self.timeout_s,
            "misfire": None if self.misfire is None else self.misfire.value,
            "misfire_grace_s": self.misfire_grace_s,
            "overlap": None if self.overlap is None else self.overlap.value,
            "jitter_s": self.jitter_s,
            "on_success": None if self.on_success is None else self.on_success.to_json(),
            "on_failure": None if self.on_failure is None else self.on_failure.to_json(),
        }
        return {key: value for key, value in values.items() if value is not None}

    @classmethod
    def from_json(cls, data: Any, default_timezone: str = "UTC") -> JobSpec:
        """Build from the protocol's JSON, naming the field and reason of any problem."""
        if not isinstance(data, dict):
            raise InvalidSpec("job", "must be a JSON object")
        unknown = set(data) - _SPEC_FIELDS
        if unknown:
            raise InvalidSpec("job", f"unknown field(s): {', '.join(sorted(unknown))}")
        recurrence_raw = data.get("recurrence")
        recurrence = (
            None
            if recurrence_raw is None
            else Recurrence.from_json(recurrence_raw, default_timezone)
        )
        zone = resolve_zone(recurrence.timezone if recurrence else default_timezone)
        run_at_raw = data.get("run_at")
        if run_at_raw is not None and not isinstance(run_at_raw, str):
            raise InvalidSpec("run_at", "must be an RFC 3339 string or null")
        run_at = None if run_at_raw is None else parse_instant(run_at_raw, zone, "run_at")
        anchor_at = None
        if run_at is not None and recurrence is not None:
            assert run_at_raw is not None
            anchor = schedule_anchor(recurrence, run_at, local_wall_time(run_at_raw))
            anchor_at = None if anchor == run_at else anchor
        return cls(
            job_type=data.get("job_type"),  # type: ignore[arg-type]  # checked in __post_init__
            target_id=data.get("target_id"),
            payload=data["payload"] if data.get("payload") is not None else {},
            run_at=run_at,
            recurrence=recurrence,
            name=data.get("name"),
            priority=data.get("priority", 0) if data.get("priority") is not None else 0,
            max_retries=data.get("max_retries"),
            timeout_s=_optional_float("timeout_s", data.get("timeout_s")),
            misfire=_optional_enum(MisfirePolicy, "misfire", data.get("misfire")),
            misfire_grace_s=_optional_float("misfire_grace_s", data.get("misfire_grace_s")),
            overlap=_optional_enum(OverlapPolicy, "overlap", data.get("overlap")),
            jitter_s=_optional_float("jitter_s", data.get("jitter_s")) or 0.0,
            anchor_at=anchor_at,
            on_success=_follow_up_from_json("on_success", data.get("on_success"), default_timezone),
            on_failure=_follow_up_from_json("on_failure", data.get("on_failure"), default_timezone),
        )


@fast_init
@dataclass(frozen=True, slots=True)
class LastResult:
    """The outcome of a job's most recent finished attempt."""

    success: bool
    output: Any
    error: str | None
    started_at: datetime
    finished_at: datetime
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "output": self.output,
            "error": self.error,
            "started_at": format_instant(self.started_at),
            "finished_at": format_instant(self.finished_at),
            "duration_ms": self.duration_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LastResult:
        return cls(
            success=bool(data["success"]),
            output=data.get("output"),
            error=data.get("error"),
            started_at=parse_instant(data["started_at"]),
            finished_at=parse_instant(data["finished_at"]),
            duration_ms=float(data["duration_ms"]),
        )


@fast_init
@dataclass(frozen=True, slots=True)
class Job:
    """A scheduled job as the daemon keeps it (SPEC section 2).

    ``scheduled_for`` is the instant of the current occurrence (what the
    recurrence produced); ``run_at`` is when its next attempt is due, which is
    later for a retry or with jitter. ``anchor_at`` is the first occurrence, from
    which calendar recurrences keep their wall-clock time and anchor day.
    """

    id: str
    job_type: str
    status: JobStatus
    run_at: datetime | None
    scheduled_for: datetime | None
    anchor_at: datetime
    created_at: datetime
    updated_at: datetime
    name: str | None = None
    target_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    recurrence: Recurrence | None = None
    priority: int = 0
    max_retries: int = 3
    retry_count: int = 0
    occurrence_count: int = 0
    timeout_s: float | None = None
    misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace_s: float = 60.0
    overlap: OverlapPolicy = OverlapPolicy.FORBID
    jitter_s: float = 0.0
    last_result: LastResult | None = None
    static: bool = False
    """True for jobs declared in the config's ``[[schedules]]`` (reconciled on reload)."""
    paused_until: datetime | None = None
    """When a paused job resumes by itself (SPEC 15 "pause until"); None for a job
    paused until resumed, and for every job that is not paused."""
    extras: JobExtras | None = None
    """Follow-ups, trace context, backfill and notification marks; None for most jobs."""

    @classmethod
    def create(
        cls,
        spec: JobSpec,
        now: datetime,
        defaults: JobDefaults,
        job_id: str | None = None,
        *,
        backfill_of: BackfillOf | None = None,
        notification: bool = False,
    ) -> Job:
        """A new pending job for ``spec``.

        Its first occurrence is ``spec.run_at`` or now, moved for a recurrence to
        the recurrence's first occurrence from then (a cron job added "now" first
        runs at the next match). Raises InvalidSpec when the recurrence can never
        fire or ends before its first occurrence. The recurrence counts from
        ``spec.anchor_at`` when the spec has one (a first run_at asked for inside
        a DST gap), else from the first occurrence it would have without the
        recurrence's exclusion calendars.
        """
        first = spec.run_at or now
        anchor = None
        if spec.recurrence is not None:
            validate_schedule(spec.recurrence, first)
            occurrence = first_occurrence(spec.recurrence, first)
            # validate_schedule has proved there is one; this keeps the type exact.
            if occurrence is None:
                raise InvalidSpec("recurrence.ends_at", "no occurrence at or before ends_at")
            base = occurrence
            if spec.recurrence.exclude:
                # The schedule counts from its first occurrence without exclusions
                # (a monthly day-31 job whose Jan 31 is excluded still runs Mar 31).
                base = first_occurrence(without_exclusions(spec.recurrence), first) or occurrence
            anchor = spec.anchor_at if spec.anchor_at is not None and base == first else base
            first = occurrence
        return cls(
            id=job_id or new_id(),
            job_type=spec.job_type,
            status=JobStatus.PENDING,
            run_at=first,
            scheduled_for=first,
            anchor_at=first if anchor is None else anchor,
            created_at=now,
            updated_at=now,
            name=spec.name,
            target_id=spec.target_id,
            payload=spec.payload,
            recurrence=spec.recurrence,
            priority=spec.priority,
            max_retries=defaults.max_retries if spec.max_retries is None else spec.max_retries,
            timeout_s=spec.timeout_s,
            misfire=spec.misfire or defaults.misfire,
            misfire_grace_s=(
                defaults.misfire_grace_s if spec.misfire_grace_s is None else spec.misfire_grace_s
            ),
            overlap=spec.overlap or defaults.overlap,
            jitter_s=spec.jitter_s,
            extras=None
            if spec.on_success is None
            and spec.on_failure is None
            and spec.trace_context is None
            and backfill_of is None
            and not notification
            else JobExtras.of(
                spec.on_success, spec.on_failure, spec.trace_context, backfill_of, notification
            ),
        )

    @property
    def recurring(self) -> bool:
        """True when the job has a recurrence that repeats."""
        return self.recurrence is not None and self.recurrence.repeats

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and crash re-runs of one occurrence; a backfill
        job has the key of the occurrence it stands for."""
        extras = self.extras
        if extras is not None and extras.backfill_of is not None:
            return f"{extras.backfill_of.job_id}:{extras.backfill_of.occurrence}"
        return f"{self.id}:{self.occurrence_count}"

    def definition(self) -> tuple[Any, ...]:
        """What makes two adds of the same name "the same job", apart from the
        first due time, which the engine compares only when an add gives one (an
        add for "now" must still be recognised when retried)."""
        return (
            self.job_type,
            self.target_id,
            encode_json(self.payload),
            self.recurrence,
            self.priority,
            self.max_retries,
            self.timeout_s,
            self.misfire,
            self.misfire_grace_s,
            self.overlap,
            self.jitter_s,
            None if self.extras is None else (self.extras.on_success, self.extras.on_failure),
        )

    def transition(self, status: JobStatus, now: datetime, **changes: Any) -> Job:
        """A copy in ``status`` (checked against the transition table) with ``changes``."""
        self.status.ensure_transition(status)
        if changes and not _JOB_FIELD_NAMES.issuperset(changes):
            unknown = ", ".join(sorted(changes.keys() - _JOB_FIELD_NAMES))
            raise TypeError(f"Job has no field(s) {unknown}")
        # Only a paused job has a paused_until: any move out of paused drops it.
        paused_until = changes.pop("paused_until", None)
        if status is not JobStatus.PAUSED:
            paused_until = None
        job = self._copy(status, now, paused_until)
        for name, value in changes.items():
            # The copy is new and nobody else holds it yet: its few changed
            # fields are set in place, cheaper than a lookup for every field.
            _set_field(job, name, value)
        return job

    def with_status(self, status: JobStatus) -> Job:
        """A copy in ``status`` and otherwise the same, ``updated_at`` too: not a
        transition (nothing is checked). A node takes a claimed job, which the
        store marked ``running`` for its lease, as pending to dispatch it."""
        return self._copy(status, self.updated_at, self.paused_until)

    def _copy(self, status: JobStatus, updated_at: datetime, paused_until: datetime | None) -> Job:
        # Hand-written instead of dataclasses.replace: this runs twice per run on
        # the dispatch path, and replace() costs ~15 us against ~1 us here.
        # tests/model pins that every field is carried over.
        return Job(
            self.id,
            self.job_type,
            status,
            self.run_at,
            self.scheduled_for,
            self.anchor_at,
            self.created_at,
            updated_at,
            self.name,
            self.target_id,
            self.payload,
            self.recurrence,
            self.priority,
            self.max_retries,
            self.retry_count,
            self.occurrence_count,
            self.timeout_s,
            self.misfire,
            self.misfire_grace_s,
            self.overlap,
            self.jitter_s,
            self.last_result,
            self.static,
            paused_until,
            self.extras,
        )

    # Seed helpers, with an injected clock.
    def is_due(self, clock: Clock) -> bool:
        """Pending and its run_at has come."""
        return (
            self.status is JobStatus.PENDING
            and self.run_at is not None
            and clock.now() >= self.run_at
        )

    def is_overdue(self, clock: Clock, overdue_after_s: float = 300.0) -> bool:
        """Pending and at least ``overdue_after_s`` past its run_at."""
        return (
            self.status is JobStatus.PENDING
            and self.run_at is not None
            and clock.now() >= self.run_at + timedelta(seconds=overdue_after_s)
        )

    @property
    def can_execute(self) -> bool:
        """Pending (seed parity)."""
        return self.status.can_execute

    def next_run_time(self) -> datetime | None:
        """The recurrence's next occurrence after the current one, or None.

        ``occurrence_count`` is read as not yet counting the current occurrence
        (``scheduled_for``), so with ``max_occurrences = N`` the N-th has no next.
        """
        if not self.recurring or self.scheduled_for is None or self.recurrence is None:
            return None
        if (
            self.recurrence.max_occurrences is not None
            and self.occurrence_count + 1 >= self.recurrence.max_occurrences
        ):
            return None
        return next_occurrence(self.recurrence, self.anchor_at, self.scheduled_for)

    def display_zone(self) -> str:
        """The zone times of this job are shown in."""
        return self.recurrence.timezone if self.recurrence else "UTC"

    def to_json(self) -> dict[str, Any]:
        """The JSON form of SPEC section 2 (plus ``scheduled_for`` and ``anchor_at``)."""
        zone = resolve_zone(self.display_zone())
        # An instant is formatted once: a new job's run_at, scheduled_for and
        # anchor_at are one instant, as are its created_at and updated_at.
        run_at = None if self.run_at is None else format_instant(self.run_at, zone)
        scheduled_for = (
            run_at
            if self.scheduled_for == self.run_at
            else None
            if self.scheduled_for is None
            else format_instant(self.scheduled_for, zone)
        )
        anchor_at = (
            run_at if self.anchor_at == self.run_at else format_instant(self.anchor_at, zone)
        )
        created_at = format_instant(self.created_at)
        return {
            "id": self.id,
            "name": self.name,
            "job_type": self.job_type,
            "target_id": self.target_id,
            "payload": self.payload,
            "status": self.status.value,
            "run_at": None if self.status.is_final else run_at,
            "recurrence": None if self.recurrence is None else self.recurrence.to_json(),
            "priority": self.priority,
            "max_retries": self.max_retries,
            "retry_count": self.retry_count,
            "occurrence_count": self.occurrence_count,
            "timeout_s": self.timeout_s,
            "misfire": self.misfire.value,
            "misfire_grace_s": self.misfire_grace_s,
            "overlap": self.overlap.value,
            "jitter_s": self.jitter_s,
            "last_result": None if self.last_result is None else self.last_result.to_json(),
            "created_at": created_at,
            "updated_at": (
                created_at
                if self.updated_at == self.created_at
                else format_instant(self.updated_at)
            ),
            "scheduled_for": scheduled_for,
            "anchor_at": anchor_at,
            "static": self.static,
            "paused_until": None
            if self.paused_until is None
            else format_instant(self.paused_until, zone),
            **({} if self.extras is None else self.extras.to_json()),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """Inverse of :meth:`to_json` (used by the client library)."""
        recurrence = (
            None if data.get("recurrence") is None else Recurrence.from_json(data["recurrence"])
        )
        last = data.get("last_result")

        parsed: dict[str, datetime] = {}

        def instant(key: str) -> datetime | None:
            # The same text (run_at, scheduled_for, anchor_at) is parsed once.
            raw = data.get(key)
            if raw is None:
                return None
            found = parsed.get(raw)
            if found is None:
                found = parsed[raw] = parse_instant(raw, field=key)
            return found

        created = instant("created_at")
        anchor = instant("anchor_at") or instant("run_at") or created
        assert created is not None and anchor is not None
        return cls(
            id=data["id"],
            job_type=data["job_type"],
            status=JobStatus(data["status"]),
            run_at=instant("run_at"),
            scheduled_for=instant("scheduled_for"),
            anchor_at=anchor,
            created_at=created,
            updated_at=instant("updated_at") or created,
            name=data.get("name"),
            target_id=data.get("target_id"),
            payload=data.get("payload") or {},
            recurrence=recurrence,
            priority=int(data.get("priority", 0)),
            max_retries=int(data.get("max_retries", 3)),
            retry_count=int(data.get("retry_count", 0)),
            occurrence_count=int(data.get("occurrence_count", 0)),
            timeout_s=data.get("timeout_s"),
            misfire=MisfirePolicy(data.get("misfire", "run_once")),
            misfire_grace_s=float(data.get("misfire_grace_s", 60.0)),
            overlap=OverlapPolicy(data.get("overlap", "forbid")),
            jitter_s=float(data.get("jitter_s", 0.0)),
            last_result=None if last is None else LastResult.from_json(last),
            static=bool(data.get("static", False)),
            paused_until=instant("paused_until"),
            extras=JobExtras.from_json(data),
        )


@fast_init
@dataclass(frozen=True, slots=True)
class JobResult:
    """What a handler returns: success with an output, or a failure with retry intent."""

    ok: bool
    output: Any = None
    error: str | None = None
    should_retry: bool = True
    retry_delay_s: float | None = None

    @classmethod
    def success(cls, output: Any = None) -> JobResult:
        """The attempt succeeded; ``output`` (JSON-serialisable) is kept in the run."""
        return cls(ok=True, output=output)

    @classmethod
    def failure(
        cls,
        error: str,
        should_retry: bool = True,
        retry_delay_s: float | None = None,
        *,
        output: Any = None,
    ) -> JobResult:
        """The attempt failed. ``should_retry`` False ends the occurrence now;
        ``retry_delay_s`` overrides the backoff for the next attempt; ``output``
        (JSON-serialisable, e.g. what a command printed) is kept in the run."""
        if retry_delay_s is not None and (not math.isfinite(retry_delay_s) or retry_delay_s < 0):
            raise ValueError("retry_delay_s must be a finite number >= 0")
        return cls(
            ok=False,
            output=output,
            error=error,
            should_retry=should_retry,
            retry_delay_s=retry_delay_s,
        )


_JOB_FIELD_NAMES = frozenset(f.name for f in fields(Job)) - {"status", "updated_at"}
_set_field = object.__setattr__
"""Sets a field of a frozen value that nobody else holds yet (see :meth:`Job.transition`)."""


@fast_init
@dataclass(frozen=True, slots=True)
class Run:
    """One attempt in the history. ``finished_at`` and ``outcome`` are None while it runs."""

    id: str
    job_id: str
    scheduled_for: datetime
    attempt: int
    started_at: datetime
    finished_at: datetime | None = None
    outcome: RunOutcome | None = None
    error: str | None = None
    output: Any = None
    node: str = ""
    job_type: str = ""
    lease_lost: bool = False
    """Multi-node: this attempt finished after its node had lost the job's lease
    (cut off from the database for longer than the lease). Another node took the
    job over and recorded the attempt ``crashed`` under the run's own id; this
    row (id ``<that id>-late``) keeps what really happened."""

    def closed(
        self,
        finished_at: datetime,
        outcome: RunOutcome,
        error: str | None = None,
        output: Any = None,
    ) -> Run:
        """This run, ended at ``finished_at`` with ``outcome``."""
        return Run(
            self.id,
            self.job_id,
            self.scheduled_for,
            self.attempt,
            self.started_at,
            finished_at,
            outcome,
            error,
            output,
            self.node,
            self.job_type,
            self.lease_lost,
        )

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from start to finish, once finished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "job_type": self.job_type,
            "scheduled_for": format_instant(self.scheduled_for),
            "attempt": self.attempt,
            "started_at": format_instant(self.started_at),
            "finished_at": None if self.finished_at is None else format_instant(self.finished_at),
            "outcome": None if self.outcome is None else self.outcome.value,
            "error": self.error,
            "output": self.output,
            "duration_ms": self.duration_ms,
            "node": self.node,
            "lease_lost": self.lease_lost,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        finished = data.get("finished_at")
        outcome = data.get("outcome")
        return cls(
            id=data["id"],
            job_id=data["job_id"],
            job_type=data.get("job_type", ""),
            scheduled_for=parse_instant(data["scheduled_for"]),
            attempt=int(data["attempt"]),
            started_at=parse_instant(data["started_at"]),
            finished_at=None if finished is None else parse_instant(finished),
            outcome=None if outcome is None else RunOutcome(outcome),
            error=data.get("error"),
            output=data.get("output"),
            node=data.get("node", ""),
            lease_lost=bool(data.get("lease_lost", False)),
        )


def _check_text(name: str, value: object, max_length: int, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip():
        raise InvalidSpec(name, "must be a non-empty string")
    if len(value) > max_length:
        raise InvalidSpec(name, f"is longer than {max_length} characters")


def _check_int(name: str, value: object, *, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(name, "must be a whole number")
    if not minimum <= value <= maximum:
        raise InvalidSpec(name, f"must be between {minimum} and {maximum}, got {value}")


def _check_seconds(name: str, value: float | None, *, allow_zero: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidSpec(name, "must be a finite number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidSpec(name, "must be " + ("non-negative" if allow_zero else "positive"))
    if value > 10 * 365 * 86400:
        raise InvalidSpec(name, "is more than ten years")


def _optional_float(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSpec(name, "must be a number of seconds")
    return float(value)


def _optional_enum(kind: type[_E], name: str, value: Any) -> _E | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise InvalidSpec(name, f"unknown value {value!r} (use one of {choices})") from None


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Job",
    "JobDefaults",
    "JobResult",
    "JobSpec",
    "LastResult",
    "RecurrenceKind",
    "Run",
    "encode_json",
    "new_id",
    "truncate_output",
]
