"""The async client library of the control protocol (anyio).

::

    async with Client() as client:          # $NEXUS_SCHEDD_SOCKET or the default socket
        job = await client.add_job({"job_type": "log", "run_at": "2030-01-01T09:00:00Z"})
        async for event in client.watch(job_id=job.id):
            ...

Varlink errors become the exceptions of :mod:`nexus_schedd.errors`; a socket
that cannot be reached raises :class:`~nexus_schedd.errors.DaemonUnreachable`
naming its path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from nexus_schedd.control import unix_stream
from nexus_schedd.control.paths import resolve_socket_path
from nexus_schedd.control.varlink import decode_message, encode_message
from nexus_schedd.errors import (
    INTERFACE,
    DaemonUnreachable,
    OutcomeUnknown,
    ProtocolError,
    error_from_reply,
)
from nexus_schedd.model import Job, JobSpec, Recurrence, Run
from nexus_schedd.model.events import Event
from nexus_schedd.model.queries import Page
from nexus_schedd.model.times import format_instant, parse_instant
from nexus_schedd.tracing import current_trace_context

MAX_REPLY_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0
"""How long a call waits for its reply by default. Longer than the PostgreSQL
store's command timeout (``store.postgres.store.COMMAND_TIMEOUT_S``, 15 s) plus a
connect (10 s): a daemon whose database stalls answers with a StoreError before
a client gives up, so "outcome unknown" stays the exception."""

MUTATIONS = frozenset(
    {
        "AddJob",
        "AddJobs",
        "CancelJob",
        "PauseJob",
        "ResumeJob",
        "TriggerJob",
        "RescheduleJob",
        "RequeueJob",
        "RequeueJobs",
        "BackfillJob",
        "Reload",
    }
)
"""Methods that change state: a lost reply leaves their outcome unknown."""


class Client:
    """A connection to a nexus-schedd daemon. Calls on one client run one at a time."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.socket_path: Path = resolve_socket_path(socket_path)
        self.timeout = timeout
        self._stream: unix_stream.UnixStream | None = None
        self._buffered: BufferedByteReceiveStream | None = None
        self._lock = anyio.Lock()

    async def __aenter__(self) -> Client:
        self._stream = await self._connect()
        self._buffered = BufferedByteReceiveStream(self._stream)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None
            self._buffered = None

    def closed_by_daemon(self) -> bool:
        """True when this connection cannot carry another call: it is not open, or
        the daemon has closed its end (it restarted, or dropped an idle connection).

        A non-blocking peek for pools that reuse idle clients; meaningless while a
        call is in flight (its reply may be waiting).
        """
        return self._stream is None or self._stream.peer_closed()

    # -- the raw protocol --------------------------------------------------------

    async def call(
        self, method: str, parameters: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Call ``method`` (``io.nexus.Scheduler.`` is implied without a dot) and return
        its reply parameters; a Varlink error raises the matching exception."""
        if self._stream is None or self._buffered is None:
            raise RuntimeError("use 'async with Client(...)' before calling")
        stream, buffered = self._stream, self._buffered
        request = {"method": _qualified(method), "parameters": dict(parameters or {})}
        changes = method.rsplit(".", 1)[-1] in MUTATIONS
        sent = False
        async with self._lock:
            try:
                with self._deadline():
                    await stream.send(encode_message(request))
                    sent = True
                    message = await _receive(buffered, self.socket_path)
            except TimeoutError:
                # A late reply would be taken for the next call's: drop the connection.
                await self.aclose()
                if sent and changes:
                    raise self._outcome_unknown(
                        method, f"no reply within {self.timeout} s"
                    ) from None
                raise self._timed_out() from None
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                if sent and changes:
                    raise self._outcome_unknown(method, "the connection was lost") from None
                raise self._unreachable(exc) from None
            except DaemonUnreachable:
                if sent and changes:
                    raise self._outcome_unknown(method, "the connection was closed") from None
                raise
        return _result(message)

    async def stream(
        self, method: str, parameters: Mapping[str, Any] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Call ``method`` with ``more`` on a connection of its own and yield each reply."""
        request = {"method": _qualified(method), "parameters": dict(parameters or {}), "more": True}
        connection = await self._connect()
        async with connection:
            buffered = BufferedByteReceiveStream(connection)
            try:
                try:
                    with self._deadline():
                        await connection.send(encode_message(request))
                except TimeoutError:
                    raise self._timed_out() from None
                while True:
                    message = await _receive(buffered, self.socket_path)
                    yield _result(message)
                    if not message.get("continues"):
                        return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise self._unreachable(exc) from None

    # -- typed methods -------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """GetStatus: counts by status, running, backlog, next due, lateness, lag, uptime."""
        result: dict[str, Any] = (await self.call("GetStatus"))["status"]
        return result

    async def add_job(
        self, spec: JobSpec | Mapping[str, Any], *, trace_context: Mapping[str, str] | None = None
    ) -> Job:
        """AddJob: schedule a job (a spec or its JSON form).

        ``trace_context`` (W3C ``traceparent``, ``tracestate``) makes the job's runs
        spans of that trace; by default a JobSpec's own, else, when the caller
        traces with OpenTelemetry, the current span's (see docs/tracing.md).
        """
        if trace_context is None and isinstance(spec, JobSpec):
            trace_context = spec.trace_context
        parameters = _with_trace({"job": spec_to_json(spec)}, trace_context)
        return Job.from_json((await self.call("AddJob", parameters))["job"])

    async def add_jobs(
        self,
        specs: Sequence[JobSpec | Mapping[str, Any]],
        *,
        trace_context: Mapping[str, str] | None = None,
    ) -> list[Job]:
        """AddJobs: schedule several jobs atomically; ``trace_context`` (default: the
        current OpenTelemetry span's, if any) applies to all, as in :meth:`add_job`."""
        parameters = _with_trace({"jobs": [spec_to_json(spec) for spec in specs]}, trace_context)
        reply = await self.call("AddJobs", parameters)
        return [Job.from_json(job) for job in reply["jobs"]]

    async def get_job(self, ref: str) -> Job:
        """GetJob: the job with this id or name."""
        return Job.from_json((await self.call("GetJob", {"id": ref}))["job"])

    async def list_jobs(
        self,
        *,
        status: Sequence[str] = (),
        job_type: str | None = None,
        target_id: str | None = None,
        overdue: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Job]:
        """ListJobs: one page of jobs; pass ``next_cursor`` back for the next."""
        parameters = _without_none(
            status=list(status) or None,
            job_type=job_type,
            target_id=target_id,
            overdue=overdue or None,
            limit=limit,
            cursor=cursor,
        )
        reply = await self.call("ListJobs", parameters)
        return Page([Job.from_json(job) for job in reply["jobs"]], reply.get("next_cursor"))

    async def cancel_job(self, ref: str) -> Job:
        """CancelJob."""
        return Job.from_json((await self.call("CancelJob", {"id": ref}))["job"])

    async def pause_job(self, ref: str, until: datetime | str | None = None) -> Job:
        """PauseJob: until resumed, or until ``until`` (then it resumes by itself)."""
        parameters = _without_none(
            id=ref, until=format_instant(until) if isinstance(until, datetime) else until
        )
        return Job.from_json((await self.call("PauseJob", parameters))["job"])

    async def resume_job(self, ref: str) -> Job:
        """ResumeJob."""
        return Job.from_json((await self.call("ResumeJob", {"id": ref}))["job"])

    async def trigger_job(self, ref: str) -> Job:
        """TriggerJob: one extra occurrence now."""
        return Job.from_json((await self.call("TriggerJob", {"id": ref}))["job"])

    async def requeue_job(self, ref: str, run_at: datetime | str | None = None) -> Job:
        """RequeueJob: a failed_permanent or canceled job back to pending."""
        parameters = _without_none(
            id=ref, run_at=format_instant(run_at) if isinstance(run_at, datetime) else run_at
        )
        return Job.from_json((await self.call("RequeueJob", parameters))["job"])

    async def requeue_jobs(
        self,
        *,
        status: Sequence[str] = (),
        job_type: str | None = None,
        target_id: str | None = None,
        error_contains: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
        all_jobs: bool = False,
    ) -> dict[str, Any]:
        """RequeueJobs: bulk requeue by filter, atomic (``all_jobs``: the protocol's
        ``all``, needed when no filter is given). Returns the reply
        (``count``, ``ids``, ``skipped``, ``more``)."""
        parameters = _without_none(
            status=list(status) or None,
            job_type=job_type,
            target_id=target_id,
            error_contains=error_contains,
            since=format_instant(since) if isinstance(since, datetime) else since,
            limit=limit,
            all=all_jobs or None,
        )
        return await self.call("RequeueJobs", parameters)

    async def backfill_job(
        self, ref: str, start: datetime | str, end: datetime | str
    ) -> dict[str, Any]:
        """BackfillJob: run each occurrence of a recurring job in [start, end) once
        more (a time without an offset is read in the job's zone). Returns the
        reply (``count``, ``ids``, ``first``, ``last``, ``already_queued``)."""
        parameters = {
            "id": ref,
            "from": format_instant(start) if isinstance(start, datetime) else start,
            "to": format_instant(end) if isinstance(end, datetime) else end,
        }
        return await self.call("BackfillJob", parameters)

    async def reschedule_job(
        self,
        ref: str,
        run_at: datetime | str | None = None,
        recurrence: Recurrence | Mapping[str, Any] | None = None,
        *,
        clear_recurrence: bool = False,
    ) -> Job:
        """RescheduleJob: a new run_at and/or recurrence (``clear_recurrence`` for one-shot)."""
        parameters = _without_none(
            id=ref,
            run_at=format_instant(run_at) if isinstance(run_at, datetime) else run_at,
            recurrence=recurrence.to_json() if isinstance(recurrence, Recurrence) else recurrence,
            clear_recurrence=clear_recurrence or None,
        )
        return Job.from_json((await self.call("RescheduleJob", parameters))["job"])

    async def list_runs(
        self,
        job: str | None = None,
        *,
        outcome: Sequence[str] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Run]:
        """ListRuns: one page of runs, newest first, of one job or of all."""
        parameters = _without_none(
            job_id=job, outcome=list(outcome) or None, limit=limit, cursor=cursor
        )
        reply = await self.call("ListRuns", parameters)
        return Page([Run.from_json(run) for run in reply["runs"]], reply.get("next_cursor"))

    async def preview(
        self,
        recurrence: Recurrence | Mapping[str, Any],
        *,
        start: datetime | str | None = None,
        count: int | None = None,
        until: datetime | str | None = None,
        max_occurrences: int | None = None,
        exclude: Sequence[str] | None = None,
    ) -> list[datetime]:
        """Preview: the next occurrences of a recurrence, ended by ``until`` and
        ``max_occurrences`` as they would end the job. A ``str`` time without an
        offset is read in the recurrence's zone (a local time inside a DST gap
        keeps its wall-clock time for the later occurrences). ``exclude`` names
        exclusion calendars of the daemon's config (overriding the recurrence's)."""
        parameters = _without_none(
            recurrence=recurrence.to_json() if isinstance(recurrence, Recurrence) else recurrence,
            start=format_instant(start) if isinstance(start, datetime) else start,
            count=count,
            until=format_instant(until) if isinstance(until, datetime) else until,
            max_occurrences=max_occurrences,
            exclude=None if exclude is None else list(exclude),
        )
        reply = await self.call("Preview", parameters)
        return [parse_instant(text) for text in reply["occurrences"]]

    async def watch(
        self,
        *,
        job_type: str | None = None,
        job_id: str | None = None,
        subscribed: anyio.Event | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Watch: job and run events as they happen, until the caller stops iterating.

        ``subscribed`` is set once the daemon's subscription is in place: every
        change made after that is seen (wait on it before making the change).
        """
        parameters = _without_none(
            job_type=job_type, job_id=job_id, announce=True if subscribed else None
        )
        async for reply in self.stream("Watch", parameters):
            if reply.get("subscribed"):
                if subscribed is not None:
                    subscribed.set()
                continue
            yield event_from_json(reply["event"])

    async def list_handlers(self) -> list[str]:
        """ListHandlers."""
        return list((await self.call("ListHandlers"))["handlers"])

    async def reload(self) -> dict[str, Any]:
        """Reload: re-read the daemon's config; returns its reconciliation summary."""
        result: dict[str, Any] = (await self.call("Reload"))["result"]
        return result

    async def export_calendar(self, days: int | None = None) -> str:
        """ExportCalendar: RFC 5545 text of the upcoming schedule."""
        text: str = (await self.call("ExportCalendar", _without_none(days=days)))["ical"]
        return text

    # -- internals -----------------------------------------------------------------

    async def _connect(self) -> unix_stream.UnixStream:
        try:
            with self._deadline():
                stream = await unix_stream.connect(self.socket_path)
        except TimeoutError:
            raise self._timed_out() from None
        except OSError as exc:
            raise self._unreachable(exc) from None
        return stream

    def _timed_out(self) -> DaemonUnreachable:
        return DaemonUnreachable(
            f"no reply from nexus-schedd at {self.socket_path} within {self.timeout} s"
        )

    def _outcome_unknown(self, method: str, what: str) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"outcome unknown: {method} was sent to nexus-schedd at {self.socket_path} but"
            f" {what}; it may or may not have taken effect. Check before retrying (an add"
            " with a name is safe to retry; see docs/cli.md)"
        )

    def _deadline(self) -> AbstractContextManager[anyio.CancelScope]:
        # fail_after(None) never times out.
        return anyio.fail_after(self.timeout)

    def _unreachable(self, exc: BaseException) -> DaemonUnreachable:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "connection lost"
        return DaemonUnreachable(f"cannot reach nexus-schedd at {self.socket_path}: {reason}")


def spec_to_json(spec: JobSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The protocol JSON of a job spec (:meth:`JobSpec.to_json`; a mapping passes
    through unchanged)."""
    return spec.to_json() if isinstance(spec, JobSpec) else dict(spec)


def event_from_json(data: Mapping[str, Any]) -> Event:
    """An :class:`Event` from Watch's JSON (:meth:`Event.from_json`)."""
    return Event.from_json(data)


async def _receive(buffered: BufferedByteReceiveStream, path: Path) -> dict[str, Any]:
    try:
        raw = await buffered.receive_until(b"\0", MAX_REPLY_BYTES)
    except anyio.IncompleteRead:
        raise DaemonUnreachable(f"nexus-schedd at {path} closed the connection") from None
    except anyio.DelimiterNotFound:
        raise ProtocolError(f"reply from {path} is larger than {MAX_REPLY_BYTES} bytes") from None
    try:
        message = decode_message(raw)
    except ValueError:
        raise ProtocolError(f"reply from {path} is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"reply from {path} is not a JSON object")
    return message


def _result(message: dict[str, Any]) -> dict[str, Any]:
    parameters = message.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("reply parameters are not an object")
    error = message.get("error")
    if error is not None:
        raise error_from_reply(str(error), parameters)
    return parameters


def _with_trace(
    parameters: dict[str, Any], trace_context: Mapping[str, str] | None
) -> dict[str, Any]:
    """``parameters`` with the ``trace_context`` given, else the caller's current one."""
    context = dict(trace_context) if trace_context is not None else current_trace_context()
    if context:
        parameters["trace_context"] = context
    return parameters


def _qualified(method: str) -> str:
    return method if "." in method else f"{INTERFACE}.{method}"


def _without_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
