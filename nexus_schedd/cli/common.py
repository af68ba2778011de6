"""What the ``nexus-schedctl`` commands share: connecting, output, time display."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import anyio

from nexus_schedd.control.client import Client
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model.times import parse_instant

CommandBody = Callable[[Client, argparse.Namespace], Awaitable[int]]


def connected(body: CommandBody) -> Callable[[argparse.Namespace], int]:
    """Wrap ``body`` into a command function that runs it with a connected client."""

    def command(args: argparse.Namespace) -> int:
        async def main() -> int:
            async with Client(args.socket, timeout=args.timeout) as client:
                return await body(client, args)

        return anyio.run(main)

    return command


PAGE_SIZE = 1000
"""Items asked for per request when a listing spans several pages."""


async def fetch_pages(
    client: Client, method: str, parameters: dict[str, Any], key: str, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` items of a paginated listing (``ListJobs``, ``ListRuns``),
    following ``next_cursor``; returns the items and the cursor to continue from."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = {**parameters, "limit": min(PAGE_SIZE, limit - len(items))}
        if cursor is not None:
            page["cursor"] = cursor
        reply = await client.call(method, page)
        items.extend(reply[key])
        cursor = reply.get("next_cursor")
        if cursor is None or len(items) >= limit:
            return items, cursor


def wants_json(args: argparse.Namespace) -> bool:
    """True when ``--json`` was given before or after the command."""
    return bool(getattr(args, "json", False))


def emit_json(value: Any) -> None:
    """Print the protocol's JSON."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def emit(text: str = "") -> None:
    """Print one line of human output."""
    sys.stdout.write(text + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned to their widest cell; the last column is not padded."""
    widths = [len(header) for header in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def local_time(text: str | None) -> str:
    """An RFC 3339 instant from the protocol shown in this machine's zone ("-" for none)."""
    if not text:
        return "-"
    instant = parse_instant(text).astimezone()
    return instant.strftime("%Y-%m-%d %H:%M:%S %Z")


def parse_json_argument(text: str, field: str) -> Any:
    """``JSON`` or ``@FILE`` (the file holds the JSON)."""
    source = text
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                source = handle.read()
        except OSError as exc:
            raise InvalidSpec(field, f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(source)
    except (ValueError, RecursionError) as exc:
        raise InvalidSpec(field, f"not valid JSON: {exc}") from None


def describe_recurrence(recurrence: dict[str, Any] | None) -> str:
    """``every 2 day (Europe/Berlin)``, ``cron 30 2 * * * (UTC) except holidays-de``,
    or ``once``."""
    if not recurrence:
        return "once"
    zone = recurrence.get("timezone") or "UTC"
    if recurrence.get("kind") == "cron":
        return f"cron {recurrence.get('cron')} ({zone})" + _excluding(recurrence)
    if recurrence.get("kind") == "once":
        return "once"
    unit = {
        "minutely": "minute",
        "hourly": "hour",
        "daily": "day",
        "weekly": "week",
        "monthly": "month",
        "yearly": "year",
    }.get(str(recurrence.get("kind")), str(recurrence.get("kind")))
    text = f"every {recurrence.get('interval', 1)} {unit} ({zone})"
    return text + _excluding(recurrence)


def _excluding(recurrence: dict[str, Any]) -> str:
    exclude = recurrence.get("exclude")
    return f" except {', '.join(exclude)}" if exclude else ""


def exclude_names(values: Sequence[str] | None) -> list[str]:
    """``--exclude`` values (repeatable, each possibly comma-separated) as calendar
    names, in order, each once."""
    names: list[str] = []
    for value in values or ():
        for name in value.split(","):
            name = name.strip()
            if not name:
                raise InvalidSpec("--exclude", f"empty calendar name in {value!r}")
            if name not in names:
                names.append(name)
    return names


def add_exclude_option(parser: argparse.ArgumentParser) -> None:
    """The ``--exclude NAME`` option of ``add`` and ``preview``."""
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="NAME",
        help="skip dates of the daemon config's [calendars.NAME] (repeatable or comma-separated)",
    )


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def now() -> datetime:
    """The current instant (through the one Clock)."""
    from nexus_schedd.clock import SystemClock

    return SystemClock().now()
