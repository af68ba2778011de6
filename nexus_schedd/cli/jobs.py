"""``nexus-schedctl add | list | show | cancel | pause | resume | trigger | reschedule |
requeue | backfill``."""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from typing import Any

from nexus_schedd.cli.common import (
    add_exclude_option,
    connected,
    describe_recurrence,
    emit,
    emit_json,
    exclude_names,
    fetch_pages,
    local_time,
    now,
    parse_json_argument,
    positive_int,
    table,
    wants_json,
)
from nexus_schedd.cli.preview import local_zone_name
from nexus_schedd.control.client import Client
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import Job, MisfirePolicy, OverlapPolicy
from nexus_schedd.model.recurrence import UNIT_KINDS
from nexus_schedd.model.status import JobStatus
from nexus_schedd.model.times import (
    format_instant,
    local_wall_time,
    parse_duration,
    parse_instant,
    parse_interval,
    parse_unit,
    resolve_zone,
)
from nexus_schedd.model.trace_context import (
    from_headers,
    traceparent_problem,
    tracestate_problem,
)


def register(subparsers: Any) -> None:
    """Add the job commands."""
    _register_add(subparsers)

    listing = subparsers.add_parser("list", help="list jobs")
    listing.add_argument(
        "--status",
        action="append",
        choices=[status.value for status in JobStatus],
        metavar="S",
        help="only jobs in this status (repeatable)",
    )
    listing.add_argument("--type", dest="job_type", metavar="T", help="only this job type")
    listing.add_argument("--target", metavar="ID", help="only this target id")
    listing.add_argument(
        "--overdue", action="store_true", help="only pending jobs past their run_at"
    )
    listing.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="at most N jobs (default 100)"
    )
    listing.set_defaults(func=connected(_list))

    show = subparsers.add_parser("show", help="show one job by id or name")
    show.add_argument("ref", metavar="ID|NAME")
    show.add_argument(
        "--gcal-url", action="store_true", help="print a Google Calendar link for the job"
    )
    show.set_defaults(func=connected(_show))

    for name, method, text in (
        ("cancel", "CancelJob", "end a job (a running attempt is cancelled)"),
        ("resume", "ResumeJob", "resume a paused job"),
        ("trigger", "TriggerJob", "run one extra occurrence now"),
    ):
        parser = subparsers.add_parser(name, help=text)
        parser.add_argument("ref", metavar="ID")
        parser.set_defaults(func=connected(_job_action), method=method)

    pause = subparsers.add_parser(
        "pause",
        help="keep a job from running until resumed (or until a time)",
        description=(
            "Keep a pending job from running until `resume`, or until --until TIME / for "
            "--for DURATION: then the daemon resumes it by itself, across restarts, and "
            "occurrences missed meanwhile follow the job's misfire policy. Pausing a "
            "paused job again sets a new time, or, without one, drops the time it had."
        ),
    )
    pause.add_argument("ref", metavar="ID")
    until = pause.add_mutually_exclusive_group()
    until.add_argument("--until", metavar="TIME", help="resume at TIME (no offset: local)")
    until.add_argument("--for", dest="duration", metavar="DURATION", help="resume after 2h/1d")
    pause.set_defaults(func=connected(_pause))

    reschedule = subparsers.add_parser("reschedule", help="give a pending or paused job a new time")
    reschedule.add_argument("ref", metavar="ID")
    reschedule.add_argument(
        "--at", required=True, metavar="TIME", help="RFC 3339 / ISO 8601 (no offset: local time)"
    )
    reschedule.set_defaults(func=connected(_reschedule))
    _register_requeue(subparsers)
    _register_backfill(subparsers)


def _register_requeue(subparsers: Any) -> None:
    requeue = subparsers.add_parser(
        "requeue",
        help="put failed or canceled jobs back to pending",
        description=(
            "Put a failed_permanent or canceled job back to pending, its retries reset: "
            "a one-shot job runs again at --at (default now), a recurring one resumes at "
            "its next occurrence. With --all, every job the filters match (default: "
            "failed_permanent), at most --limit, in one commit."
        ),
    )
    requeue.add_argument("ref", nargs="?", metavar="ID", help="the job (id or name)")
    requeue.add_argument("--at", metavar="TIME", help="when it runs again (no offset: local)")
    requeue.add_argument(
        "--all", action="store_true", help="bulk: every job the filters below match"
    )
    requeue.add_argument(
        "--status",
        action="append",
        choices=[JobStatus.FAILED_PERMANENT.value, JobStatus.CANCELED.value],
        metavar="S",
        help="failed_permanent (default) or canceled (repeatable)",
    )
    requeue.add_argument("--type", dest="job_type", metavar="T", help="only this job type")
    requeue.add_argument("--target", metavar="ID", help="only this target id")
    requeue.add_argument("--error", metavar="TEXT", help="only jobs whose last error contains TEXT")
    requeue.add_argument("--since", metavar="TIME", help="only jobs that ended at or after TIME")
    requeue.add_argument(
        "--limit", type=positive_int, metavar="N", help="at most N jobs (default 1000, max 10000)"
    )
    run = connected(_requeue)

    def checked(args: argparse.Namespace) -> int:
        bulk = [
            flag
            for flag, value in (
                ("--status", args.status),
                ("--type", args.job_type),
                ("--target", args.target),
                ("--error", args.error),
                ("--since", args.since),
                ("--limit", args.limit),
            )
            if value is not None
        ]
        if args.ref is not None and args.all:
            requeue.error("give a job ID or --all, not both")
        if args.ref is None and not args.all:
            requeue.error("give a job ID, or --all (with optional filters) to requeue in bulk")
        if args.ref is not None and bulk:
            requeue.error(f"{bulk[0]} applies to a bulk requeue (--all)")
        if args.all and args.at is not None:
            requeue.error("--at applies to one job; a bulk requeue runs each job now")
        code: int = run(args)
        return code

    requeue.set_defaults(func=checked)


def _register_backfill(subparsers: Any) -> None:
    backfill = subparsers.add_parser(
        "backfill",
        help="run a recurring job's past occurrences once more",
        description=(
            "Run every occurrence of a recurring job in [--from, --to) once more: one "
            "extra run each, queued now under the usual limits, with that occurrence's "
            "scheduled_for and idempotency key. Only occurrences that have come count "
            "(none after now, none before the job's first); at most 10000 per call. "
            "The job's own schedule does not move. Occurrences whose backfill run is "
            "still queued or running are not queued again, so repeating the command is safe."
        ),
        epilog="example: nexus-schedctl backfill nightly-export --from 2025-03-01 --to 2025-03-08",
    )
    backfill.add_argument("ref", metavar="ID", help="the recurring job (id or name)")
    backfill.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="TIME",
        help="first instant of the range, included (no offset: local time)",
    )
    backfill.add_argument(
        "--to",
        dest="end",
        required=True,
        metavar="TIME",
        help="end of the range, excluded (no offset: local time)",
    )
    backfill.set_defaults(func=connected(_backfill))


def _register_add(subparsers: Any) -> None:
    add = subparsers.add_parser("add", help="schedule a job")
    add.add_argument("job_type", metavar="JOB_TYPE")
    add.add_argument("--target", metavar="ID", help="the entity the job acts on")
    add.add_argument("--payload", metavar="JSON|@FILE", help="a JSON object for the handler")
    add.add_argument("--name", metavar="NAME", help="unique name (adds are idempotent by name)")
    when = add.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="first run (no offset: --tz, else local)")
    when.add_argument("--in", dest="delay", metavar="DURATION", help="first run after 90s/5m/2h")
    repeat = add.add_mutually_exclusive_group()
    repeat.add_argument("--every", nargs=2, metavar=("N", "UNIT"), help="repeat every N UNIT")
    repeat.add_argument("--cron", metavar="EXPR", help="repeat on a cron expression")
    add.add_argument("--tz", metavar="ZONE", help="zone of the recurrence and of TIME")
    add.add_argument("--until", metavar="TIME", help="no occurrence after this time")
    add.add_argument("--count", type=positive_int, metavar="N", help="exactly N occurrences")
    add_exclude_option(add)
    add.add_argument("--priority", type=int, metavar="N", help="higher runs first (default 0)")
    add.add_argument("--max-retries", type=int, metavar="N", help="retries per occurrence")
    add.add_argument(
        "--timeout", dest="job_timeout", metavar="S", help="per-attempt time limit (seconds)"
    )
    add.add_argument("--misfire", choices=[p.value for p in MisfirePolicy], metavar="P")
    add.add_argument("--overlap", choices=[p.value for p in OverlapPolicy], metavar="P")
    add.add_argument("--jitter", metavar="S", help="random delay 0..S seconds per occurrence")
    for outcome, when in (("success", "succeeds"), ("failure", "ends failed")):
        add.add_argument(
            f"--on-{outcome}",
            metavar="JSON|@FILE",
            help=f"a job spec added when an occurrence {when} (its payload gets 'trigger')",
        )
    add.add_argument(
        "--traceparent",
        metavar="TP",
        help="W3C trace context the runs join as spans (default: $TRACEPARENT)",
    )
    add.add_argument("--tracestate", metavar="TS", help="W3C tracestate (default: $TRACESTATE)")
    add.set_defaults(func=connected(_add))


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol's JobSpec JSON for ``add``'s arguments."""
    zone_name = args.tz if args.tz is not None else local_zone_name()
    zone = resolve_zone(zone_name, "--tz")
    spec: dict[str, Any] = {"job_type": args.job_type}
    if args.target is not None:
        spec["target_id"] = args.target
    if args.name is not None:
        spec["name"] = args.name
    if args.payload is not None:
        payload = parse_json_argument(args.payload, "payload")
        if not isinstance(payload, dict):
            raise InvalidSpec("payload", "must be a JSON object")
        spec["payload"] = payload
    if args.at is not None:
        spec["run_at"] = format_instant(parse_instant(args.at, zone, "--at"), zone)
        if args.tz is not None and (args.every is not None or args.cron is not None):
            # The daemon reads a local time in the recurrence's zone (--tz): sent
            # as written, a time inside a DST gap keeps its wall-clock time for
            # the later occurrences (SPEC 3); as an instant it would not.
            wall = local_wall_time(args.at)
            if wall is not None:
                spec["run_at"] = wall.isoformat()
    elif args.delay is not None:
        delay = parse_duration(args.delay, "--in")
        spec["run_at"] = format_instant(now() + timedelta(seconds=delay), zone)
    recurrence: dict[str, Any] | None = None
    if args.every is not None:
        number, unit = args.every
        kind = UNIT_KINDS[parse_unit(unit, "--every")]
        recurrence = {"kind": kind.value, "interval": parse_interval(number, "--every")}
    elif args.cron is not None:
        recurrence = {"kind": "cron", "cron": args.cron}
    if recurrence is None and (args.until is not None or args.count is not None):
        raise InvalidSpec("--until/--count", "only apply with --every or --cron")
    exclude = exclude_names(args.exclude)
    if recurrence is None and exclude:
        raise InvalidSpec("--exclude", "only applies with --every or --cron")
    if recurrence is not None:
        if args.tz is not None:
            # Without --tz the recurrence takes the daemon's [daemon] timezone
            # (SPEC 3: "default from config"); TIMEs are still read locally.
            recurrence["timezone"] = zone_name
        if args.until is not None:
            recurrence["ends_at"] = format_instant(parse_instant(args.until, zone, "--until"))
        if args.count is not None:
            recurrence["max_occurrences"] = args.count
        if exclude:
            recurrence["exclude"] = exclude
        spec["recurrence"] = recurrence
    if args.priority is not None:
        spec["priority"] = args.priority
    if args.max_retries is not None:
        spec["max_retries"] = args.max_retries
    if args.job_timeout is not None:
        spec["timeout_s"] = parse_duration(args.job_timeout, "--timeout")
    if args.misfire is not None:
        spec["misfire"] = args.misfire
    if args.overlap is not None:
        spec["overlap"] = args.overlap
    if args.jitter is not None:
        spec["jitter_s"] = parse_duration(args.jitter, "--jitter")
    for key in ("on_success", "on_failure"):
        text = getattr(args, key)
        if text is not None:
            follow_up = parse_json_argument(text, f"--{key.replace('_', '-')}")
            if not isinstance(follow_up, dict):
                raise InvalidSpec(
                    f"--{key.replace('_', '-')}", "must be a JSON object (a job spec)"
                )
            spec[key] = follow_up
    return spec


def trace_context(args: argparse.Namespace) -> dict[str, str] | None:
    """``add``'s trace context: --traceparent / --tracestate, else the OpenTelemetry
    environment carriers $TRACEPARENT / $TRACESTATE (ignored when malformed)."""
    if args.traceparent is None:
        state = args.tracestate if args.tracestate is not None else os.environ.get("TRACESTATE")
        context = from_headers(os.environ.get("TRACEPARENT"), state)
        if context is None and args.tracestate is not None:
            raise InvalidSpec("--tracestate", "needs --traceparent (or $TRACEPARENT)")
        return context
    problem = traceparent_problem(args.traceparent)
    if problem is not None:
        raise InvalidSpec("--traceparent", problem)
    context = {"traceparent": args.traceparent}
    state = args.tracestate if args.tracestate is not None else os.environ.get("TRACESTATE")
    if state:
        problem = tracestate_problem(state)
        if problem is not None:
            raise InvalidSpec("--tracestate", problem)
        context["tracestate"] = state
    return context


async def _add(client: Client, args: argparse.Namespace) -> int:
    parameters: dict[str, Any] = {"job": build_spec(args)}
    context = trace_context(args)
    if context is not None:
        parameters["trace_context"] = context
    reply = await client.call("AddJob", parameters)
    if wants_json(args):
        emit_json(reply)
        return 0
    job = reply["job"]
    label = f"{job['id']} ({job['name']})" if job.get("name") else job["id"]
    emit(f"added {label}: {job['job_type']}, {describe_recurrence(job['recurrence'])}")
    emit(f"next run: {local_time(job['run_at'])}")
    return 0


async def _list(client: Client, args: argparse.Namespace) -> int:
    parameters: dict[str, Any] = {}
    if args.status:
        parameters["status"] = sorted(set(args.status))
    if args.job_type is not None:
        parameters["job_type"] = args.job_type
    if args.target is not None:
        parameters["target_id"] = args.target
    if args.overdue:
        parameters["overdue"] = True
    jobs, cursor = await fetch_pages(client, "ListJobs", parameters, "jobs", args.limit)
    if wants_json(args):
        emit_json({"jobs": jobs, "next_cursor": cursor})
        return 0
    rows = [
        [
            job["id"],
            job.get("name") or "-",
            job["job_type"],
            job.get("target_id") or "-",
            job["status"],
            local_time(job.get("run_at")),
            describe_recurrence(job.get("recurrence")),
        ]
        for job in jobs
    ]
    emit(table(["ID", "NAME", "TYPE", "TARGET", "STATUS", "NEXT RUN", "RECURRENCE"], rows))
    if cursor is not None:
        emit(f"(more jobs: raise --limit above {args.limit})")
    return 0


async def _show(client: Client, args: argparse.Namespace) -> int:
    reply = await client.call("GetJob", {"id": args.ref})
    job = reply["job"]
    if args.gcal_url:
        # Imported here: icalendar is only needed for this option.
        from nexus_schedd.control.calendar import gcal_url

        url = gcal_url(Job.from_json(job))
        if wants_json(args):
            emit_json({"gcal_url": url})
        elif url is None:
            emit(f"job {job['id']} is {job['status']}: nothing left to put in a calendar")
            return 1
        else:
            emit(url)
        return 0
    if wants_json(args):
        emit_json(reply)
        return 0
    last = job.get("last_result")
    lines = [
        ("id", job["id"]),
        ("name", job.get("name") or "-"),
        ("type", job["job_type"]),
        ("target", job.get("target_id") or "-"),
        ("status", job["status"]),
        *([("paused until", local_time(job["paused_until"]))] if job.get("paused_until") else []),
        ("next run", local_time(job.get("run_at"))),
        ("recurrence", describe_recurrence(job.get("recurrence"))),
        ("occurrences", str(job["occurrence_count"])),
        ("retries", f"{job['retry_count']} of {job['max_retries']}"),
        ("priority", str(job["priority"])),
        ("timeout", "default" if job.get("timeout_s") is None else f"{job['timeout_s']} s"),
        ("misfire", f"{job['misfire']} (grace {job['misfire_grace_s']} s)"),
        ("overlap", job["overlap"]),
        ("jitter", f"{job['jitter_s']} s"),
        ("payload", _compact(job.get("payload"))),
        *[
            (f"on {outcome}", _compact(job[f"on_{outcome}"]))
            for outcome in ("success", "failure")
            if job.get(f"on_{outcome}")
        ],
        *(
            [("notification", "yes (added by a [[notify]] rule)")]
            if job.get("notification")
            else []
        ),
        ("last result", _last_result(last)),
        ("created", local_time(job["created_at"])),
        ("updated", local_time(job["updated_at"])),
    ]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        emit(f"{label + ':':<{width + 1}} {value}")
    return 0


async def _job_action(client: Client, args: argparse.Namespace) -> int:
    return _report_job(args, await client.call(args.method, {"id": args.ref}))


def _report_job(args: argparse.Namespace, reply: dict[str, Any]) -> int:
    """Print the job a change returned: its id, status and next run (or the JSON)."""
    if wants_json(args):
        emit_json(reply)
        return 0
    job = reply["job"]
    status = job["status"]
    if status == JobStatus.PAUSED.value:
        until = job.get("paused_until")
        status += f" until {local_time(until)}" if until else " until resumed"
    emit(f"{job['id']}: {status}, next run {local_time(job.get('run_at'))}")
    return 0


async def _pause(client: Client, args: argparse.Namespace) -> int:
    parameters: dict[str, Any] = {"id": args.ref}
    if args.until is not None:
        parameters["until"] = format_instant(parse_instant(args.until, None, "--until"))
    elif args.duration is not None:
        delay = parse_duration(args.duration, "--for")
        parameters["until"] = format_instant(now() + timedelta(seconds=delay))
    return _report_job(args, await client.call("PauseJob", parameters))


async def _requeue(client: Client, args: argparse.Namespace) -> int:
    if args.ref is not None:
        parameters: dict[str, Any] = {"id": args.ref}
        if args.at is not None:
            parameters["run_at"] = format_instant(parse_instant(args.at, None, "--at"))
        return _report_job(args, await client.call("RequeueJob", parameters))
    reply = await client.requeue_jobs(
        status=args.status or (),
        job_type=args.job_type,
        target_id=args.target,
        error_contains=args.error,
        since=None if args.since is None else parse_instant(args.since, None, "--since"),
        limit=args.limit,
        all_jobs=True,
    )
    if wants_json(args):
        emit_json(reply)
        return 0
    emit(f"requeued {reply['count']} job(s)")
    for job_id in reply["ids"]:
        emit(f"  {job_id}")
    for skipped in reply["skipped"]:
        emit(f"skipped {skipped['id']}: {skipped['reason']}")
    if reply["more"]:
        emit("more jobs match: run the same command again for the next ones")
    return 0


async def _backfill(client: Client, args: argparse.Namespace) -> int:
    start = parse_instant(args.start, None, "--from")
    end = parse_instant(args.end, None, "--to")
    reply = await client.backfill_job(args.ref, start, end)
    if wants_json(args):
        emit_json(reply)
        return 0
    span = f"[{local_time(format_instant(start))}, {local_time(format_instant(end))})"
    if reply["count"]:
        emit(
            f"queued {reply['count']} run(s) of {args.ref} for its occurrences from "
            f"{local_time(reply['first'])} to {local_time(reply['last'])} (range {span})"
        )
    elif not reply["already_queued"]:
        emit(f"queued no run of {args.ref}: none of its occurrences in {span} has come")
    if reply["already_queued"]:
        emit(
            f"{reply['already_queued']} occurrence(s) left out: a backfill run of each "
            "is still queued or running"
        )
    return 0


async def _reschedule(client: Client, args: argparse.Namespace) -> int:
    run_at = format_instant(parse_instant(args.at, None, "--at"))
    return _report_job(args, await client.call("RescheduleJob", {"id": args.ref, "run_at": run_at}))


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _last_result(last: dict[str, Any] | None) -> str:
    if not last:
        return "-"
    outcome = "success" if last["success"] else f"failure: {last.get('error') or '?'}"
    return f"{outcome} at {local_time(last['finished_at'])} ({last['duration_ms']:.0f} ms)"
