"""How jobs and runs become database rows and back, shared by every SQL backend.

Times are integer microseconds since the Unix epoch (they sort correctly and
convert fast); payloads, recurrences and results are JSON text. ``JOB_COLUMNS``
and ``RUN_COLUMNS`` name the row tuples' fields in order; each backend writes
them with its own SQL dialect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from nexus_schedd.model import (
    Job,
    JobExtras,
    JobStatus,
    LastResult,
    MisfirePolicy,
    OverlapPolicy,
    Recurrence,
    Run,
    RunOutcome,
    encode_json,
)
from nexus_schedd.store.keys import EPOCH, from_micros, to_micros

_STATUS = {s.value: s for s in JobStatus}
_OUTCOME = {o.value: o for o in RunOutcome}
_MISFIRE = {m.value: m for m in MisfirePolicy}
_OVERLAP = {o.value: o for o in OverlapPolicy}

JOB_COLUMNS = (
    "id",
    "name",
    "job_type",
    "target_id",
    "status",
    "run_at",
    "scheduled_for",
    "anchor_at",
    "created_at",
    "updated_at",
    "payload",
    "recurrence",
    "priority",
    "max_retries",
    "retry_count",
    "occurrence_count",
    "timeout_s",
    "misfire",
    "misfire_grace_s",
    "overlap",
    "jitter_s",
    "last_result",
    "static",
    "paused_until",
    "extras",
)
RUN_COLUMNS = (
    "id",
    "job_id",
    "job_type",
    "scheduled_for",
    "attempt",
    "started_at",
    "finished_at",
    "outcome",
    "error",
    "output",
    "node",
)


def _optional_instant(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + timedelta(microseconds=micros)


@lru_cache(maxsize=4096)
def _encode_recurrence(recurrence: Recurrence) -> str:
    return encode_json(recurrence.to_json())


@lru_cache(maxsize=4096)
def _decode_recurrence(text: str) -> Recurrence:
    # Rows of one schedule share their recurrence text: parse it once.
    return Recurrence.from_json(json.loads(text))


def _encode_last_result(result: LastResult) -> str:
    # Written once per finished run: formatted directly (~2 us) rather than
    # through json.dumps of a dict (~8 us). Same JSON, same key order.
    duration = result.duration_ms
    if type(duration) is float and math.isfinite(duration):
        output = "null" if result.output is None else _encode_payload(result.output)
        error = "null" if result.error is None else _encode_string(result.error)
        return (
            f'{{"success":{"true" if result.success else "false"},"output":{output},'
            f'"error":{error},"started_at":{_micros(result.started_at)},'
            f'"finished_at":{_micros(result.finished_at)},"duration_ms":{duration!r}}}'
        )
    return json.dumps(
        {
            "success": result.success,
            "output": result.output,
            "error": result.error,
            "started_at": to_micros(result.started_at),
            "finished_at": to_micros(result.finished_at),
            "duration_ms": result.duration_ms,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _decode_last_result(text: str) -> LastResult:
    data = _decode_json(text)
    return LastResult(
        success=data["success"],
        output=data["output"],
        error=data["error"],
        started_at=from_micros(data["started_at"]),
        finished_at=from_micros(data["finished_at"]),
        duration_ms=data["duration_ms"],
    )


_encode_payload = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_encode_string: Callable[[str], str] = json.encoder.encode_basestring
_decode_json = json.JSONDecoder().decode


_MICROS: dict[datetime, int] = {}
"""Recent instants and their microseconds: a job's rows repeat its instants (its
run_at, anchor and creation in every version), and the jobs added or started
together share theirs. Emptied when it holds ``_MICROS_KEPT``."""
_MICROS_KEPT = 4096


def _micros(instant: datetime, epoch: datetime = EPOCH) -> int:
    # to_micros without the timedelta division: this runs about 13 times per run
    # on the loop, a lookup (60 ns) instead of a subtraction (200 ns) when it hits.
    micros = _MICROS.get(instant)
    if micros is None:
        if len(_MICROS) >= _MICROS_KEPT:
            _MICROS.clear()
        delta = instant - epoch
        micros = _MICROS[instant] = (
            delta.days * 86_400 + delta.seconds
        ) * 1_000_000 + delta.microseconds
    return micros


def job_row(job: Job) -> tuple[Any, ...]:
    """The jobs-table row of ``job``, in ``_JOB_COLUMNS`` order.

    Enum values are read as ``_value_`` (the member's own attribute) rather than
    ``.value``, a Python-level property: this runs twice per run on the loop.
    """
    run_at = None if job.run_at is None else _micros(job.run_at)
    scheduled_for = (
        run_at
        if job.scheduled_for is job.run_at
        else None
        if job.scheduled_for is None
        else _micros(job.scheduled_for)
    )
    created_at = _micros(job.created_at)
    return (
        job.id,
        job.name,
        job.job_type,
        job.target_id,
        job.status._value_,
        run_at,
        scheduled_for,
        _micros(job.anchor_at),
        created_at,
        created_at if job.updated_at is job.created_at else _micros(job.updated_at),
        "{}" if not job.payload else _encode_payload(job.payload),
        None if job.recurrence is None else _encode_recurrence(job.recurrence),
        job.priority,
        job.max_retries,
        job.retry_count,
        job.occurrence_count,
        job.timeout_s,
        job.misfire._value_,
        job.misfire_grace_s,
        job.overlap._value_,
        job.jitter_s,
        None if job.last_result is None else _encode_last_result(job.last_result),
        1 if job.static else 0,
        None if job.paused_until is None else _micros(job.paused_until),
        None if job.extras is None else encode_json(job.extras.to_json()),
    )


def job_from_row(row: Sequence[Any]) -> Job:
    """Rebuild a :class:`Job` from a row in ``_JOB_COLUMNS`` order."""
    (
        job_id,
        name,
        job_type,
        target_id,
        status,
        run_at,
        scheduled_for,
        anchor_at,
        created_at,
        updated_at,
        payload,
        recurrence,
        priority,
        max_retries,
        retry_count,
        occurrence_count,
        timeout_s,
        misfire,
        misfire_grace_s,
        overlap,
        jitter_s,
        last_result,
        static,
        paused_until,
        extras,
    ) = row
    # Fresh jobs share instants (run_at = scheduled_for = anchor_at, created_at =
    # updated_at): convert each distinct value once.
    epoch = EPOCH
    run_at_dt = None if run_at is None else epoch + timedelta(microseconds=run_at)
    created = epoch + timedelta(microseconds=created_at)
    return Job(
        id=job_id,
        job_type=job_type,
        status=_STATUS[status],
        run_at=run_at_dt,
        scheduled_for=(
            run_at_dt
            if scheduled_for == run_at
            else None
            if scheduled_for is None
            else epoch + timedelta(microseconds=scheduled_for)
        ),
        anchor_at=(
            run_at_dt
            if anchor_at == run_at and run_at_dt is not None
            else epoch + timedelta(microseconds=anchor_at)
        ),
        created_at=created,
        updated_at=created
        if updated_at == created_at
        else epoch + timedelta(microseconds=updated_at),
        name=name,
        target_id=target_id,
        payload={} if payload == "{}" else _decode_json(payload),
        recurrence=None if recurrence is None else _decode_recurrence(recurrence),
        priority=priority,
        max_retries=max_retries,
        retry_count=retry_count,
        occurrence_count=occurrence_count,
        timeout_s=timeout_s,
        misfire=_MISFIRE[misfire],
        misfire_grace_s=misfire_grace_s,
        overlap=_OVERLAP[overlap],
        jitter_s=jitter_s,
        last_result=None if last_result is None else _decode_last_result(last_result),
        static=bool(static),
        paused_until=_optional_instant(paused_until),
        extras=None if extras is None else JobExtras.from_json(_decode_json(extras)),
    )


def run_row(run: Run) -> tuple[Any, ...]:
    """The runs-table row of ``run``, in ``_RUN_COLUMNS`` order."""
    return (
        run.id,
        run.job_id,
        run.job_type,
        _micros(run.scheduled_for),
        run.attempt,
        _micros(run.started_at),
        None if run.finished_at is None else _micros(run.finished_at),
        None if run.outcome is None else run.outcome._value_,
        run.error,
        None if run.output is None else _encode_payload(run.output),
        run.node,
    )


def run_from_row(row: Sequence[Any]) -> Run:
    """Rebuild a :class:`Run` from a row in ``_RUN_COLUMNS`` order."""
    (
        run_id,
        job_id,
        job_type,
        scheduled_for,
        attempt,
        started_at,
        finished_at,
        outcome,
        error,
        output,
        node,
    ) = row
    return Run(
        id=run_id,
        job_id=job_id,
        job_type=job_type,
        scheduled_for=from_micros(scheduled_for),
        attempt=attempt,
        started_at=from_micros(started_at),
        finished_at=_optional_instant(finished_at),
        outcome=None if outcome is None else _OUTCOME[outcome],
        error=error,
        output=None if output is None else _decode_json(output),
        node=node,
    )
