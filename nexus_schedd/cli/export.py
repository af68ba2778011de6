"""``nexus-schedctl export --ical [--days N] [-o FILE]``: the schedule as iCalendar."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

from nexus_schedd.cli.common import connected, emit_json, positive_int, wants_json
from nexus_schedd.control.client import Client


def register(subparsers: Any) -> None:
    """Add ``export``."""
    export = subparsers.add_parser("export", help="export the upcoming schedule")
    export.add_argument(
        "--ical", action="store_true", required=True, help="as RFC 5545 iCalendar (.ics)"
    )
    export.add_argument(
        "--days", type=positive_int, metavar="N", help="window for jobs without an RRULE (30)"
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=connected(_export))


async def _export(client: Client, args: argparse.Namespace) -> int:
    parameters = {} if args.days is None else {"days": args.days}
    reply = await client.call("ExportCalendar", parameters)
    if wants_json(args):
        emit_json(reply)
        return 0
    text: str = reply["ical"]
    if args.output:
        await anyio.Path(args.output).write_text(text, encoding="utf-8", newline="")
    else:
        sys.stdout.write(text)
    return 0
