"""``nexus-schedctl preview``: list the next occurrences of a recurrence, no daemon needed.

The times come from the same recurrence engine the daemon uses
(:mod:`nexus_schedd.model.schedule`), so what preview shows is what will run.
With ``--exclude`` the exclusion calendars are the daemon's (its config's
``[calendars.NAME]``), so the list comes from the daemon's Preview method.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from nexus_schedd.cli.common import add_exclude_option, exclude_names
from nexus_schedd.clock import SystemClock
from nexus_schedd.control.client import Client
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model.recurrence import UNIT_KINDS, Recurrence, RecurrenceKind
from nexus_schedd.model.schedule import preview, validate_schedule
from nexus_schedd.model.times import (
    local_wall_time,
    parse_instant,
    parse_interval,
    parse_unit,
    resolve_zone,
)

DEFAULT_COUNT = 10
MAX_COUNT = 1000
_LOCALTIME = Path("/etc/localtime")


def register(subparsers: Any) -> None:
    """Add the ``preview`` command to ``nexus-schedctl``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "preview",
        help="show the next occurrences of a cron expression or interval "
        "(no daemon needed, except for --exclude)",
        description=(
            "Show when a recurrence fires, with the daemon's DST rules. For --every the "
            "first time listed is --from itself; for --cron, the first match after --from. "
            "--until and --max-occurrences end the list as they would end the job. "
            "--exclude leaves out the dates of the daemon's exclusion calendars (it asks "
            "the running daemon, which holds them)."
        ),
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--cron", metavar="EXPR", help="cron expression, e.g. '30 2 * * *'")
    which.add_argument(
        "--every",
        nargs=2,
        metavar=("N", "UNIT"),
        help="interval, e.g. '--every 15 minute' (UNIT: minute|hour|day|week|month|year)",
    )
    parser.add_argument(
        "--tz", metavar="ZONE", help="IANA zone or offset (default: this machine's zone, else UTC)"
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="RFC 3339 / ISO 8601 start (default now; without an offset, read in --tz)",
    )
    parser.add_argument(
        "--count", default=str(DEFAULT_COUNT), metavar="N", help=f"how many (1..{MAX_COUNT})"
    )
    parser.add_argument(
        "--until",
        metavar="TIME",
        help="no occurrence after this time, as 'add --until' (without an offset, read in --tz)",
    )
    parser.add_argument(
        "--max-occurrences",
        metavar="N",
        help="the job's occurrences in total, as 'add --count' (the first listed is the first)",
    )
    add_exclude_option(parser)
    # Also accepted after the command; SUPPRESS keeps the global flag's value otherwise.
    parser.add_argument(
        "--json",
        dest="json",
        action="store_true",
        default=argparse.SUPPRESS,
        help='print the protocol\'s Preview reply, {"occurrences": [...]}',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the occurrences the arguments describe; exit code 0."""
    zone_name = args.tz if args.tz is not None else local_zone_name()
    zone = resolve_zone(zone_name, "--tz")
    count = _parse_count(args.count)
    start = SystemClock().now() if args.start is None else parse_instant(args.start, zone, "--from")
    if args.cron is not None:
        recurrence = Recurrence(kind=RecurrenceKind.CRON, cron=args.cron, timezone=zone_name)
    else:
        number, unit = args.every
        kind = UNIT_KINDS[parse_unit(unit, "--every")]
        recurrence = Recurrence(
            kind=kind, interval=parse_interval(number, "--every"), timezone=zone_name
        )
    if args.until is not None:
        recurrence = replace(recurrence, ends_at=parse_instant(args.until, zone, "--until"))
    if args.max_occurrences is not None:
        recurrence = replace(
            recurrence, max_occurrences=_parse_positive(args.max_occurrences, "--max-occurrences")
        )
    try:
        validate_schedule(recurrence, start)
    except InvalidSpec as exc:
        if exc.field == "recurrence.ends_at":
            raise InvalidSpec("--until", exc.reason) from None
        raise
    exclude = exclude_names(getattr(args, "exclude", None))
    if exclude:
        times = anyio.run(_daemon_preview, args, recurrence, count, exclude)
    else:
        wall = None if args.start is None else local_wall_time(args.start)
        times = preview(recurrence, start, count, wall)
    if getattr(args, "json", False):
        # The protocol's Preview reply, as --json promises (SPEC 7).
        occurrences = [t.isoformat() for t in times]
        sys.stdout.write(json.dumps({"occurrences": occurrences}) + "\n")
    else:
        zone = resolve_zone(zone_name)
        sys.stdout.write("".join(_human_line(t.astimezone(zone)) + "\n" for t in times))
    return 0


async def _daemon_preview(
    args: argparse.Namespace, recurrence: Recurrence, count: int, exclude: Sequence[str]
) -> list[datetime]:
    """The daemon's Preview, which knows the exclusion calendars. ``--from`` goes
    as written: the daemon reads a time without an offset in the recurrence's
    zone, as the local preview does."""
    try:
        async with Client(args.socket, timeout=args.timeout) as client:
            return await client.preview(recurrence, start=args.start, count=count, exclude=exclude)
    except InvalidSpec as exc:
        option = {"exclude": "--exclude", "recurrence.ends_at": "--until", "start": "--from"}
        raise InvalidSpec(option.get(exc.field, exc.field), exc.reason) from None


def local_zone_name() -> str:
    """This machine's zone: ``$TZ`` if it names a zone, else the zone ``/etc/localtime``
    links to, else ``UTC``."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = str(_LOCALTIME.resolve())
    except OSError:
        target = ""
    if "/zoneinfo/" in target:
        candidates.append(target.split("/zoneinfo/", 1)[1])
    for name in candidates:
        if not name:
            continue
        try:
            resolve_zone(name)
        except InvalidSpec:
            continue
        return name
    return "UTC"


def _parse_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise InvalidSpec(
            "--count", f"must be a whole number 1..{MAX_COUNT}, got {text!r}"
        ) from None
    if not 1 <= count <= MAX_COUNT:
        raise InvalidSpec("--count", f"must be 1..{MAX_COUNT}, got {count}")
    return count


def _parse_positive(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidSpec(option, f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise InvalidSpec(option, f"must be >= 1, got {value}")
    return value


def _human_line(instant: datetime) -> str:
    """``2025-10-26T02:30:00+02:00  Sun  CEST``: the time first, so it cuts cleanly."""
    return f"{instant.isoformat()}  {instant.strftime('%a')}  {instant.tzname() or ''}".rstrip()
