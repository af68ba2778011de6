"""``nexus-schedctl status | handlers | reload``: the daemon as a whole."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nexus_schedd.cli.common import connected, emit, emit_json, local_time, wants_json
from nexus_schedd.control.client import Client
from nexus_schedd.errors import EXIT_REFUSED, ConfigError


def register(subparsers: Any) -> None:
    """Add ``status``, ``handlers`` and ``reload``."""
    status = subparsers.add_parser(
        "status", help="counts by status, backlog, next due, lateness, uptime"
    )
    status.set_defaults(func=connected(_status))
    handlers = subparsers.add_parser("handlers", help="list the loaded handlers")
    handlers.set_defaults(func=connected(_handlers))
    reload = subparsers.add_parser(
        "reload", help="re-read the daemon's config (handlers, limits, static schedules)"
    )
    reload.set_defaults(func=connected(_reload))


async def _status(client: Client, args: argparse.Namespace) -> int:
    reply = await client.call("GetStatus")
    if wants_json(args):
        emit_json(reply)
        return 0
    status = reply["status"]
    counts = ", ".join(f"{name} {count}" for name, count in status["counts"].items())
    lines = [
        ("version", status["version"]),
        ("node", status["node"] or "-"),
        ("started", local_time(status["started_at"])),
        ("uptime", _duration(status["uptime_s"])),
        ("jobs", counts),
        ("running", str(status["running"])),
        ("due backlog", str(status["due_backlog"])),
        ("next due", local_time(status["next_due"])),
        ("lateness p50", _ms(status["lateness_p50_ms"])),
        ("lateness p99", _ms(status["lateness_p99_ms"])),
        ("loop lag", _ms(status["loop_lag_ms"])),
    ]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        emit(f"{label + ':':<{width + 1}} {value}")
    return 0


async def _handlers(client: Client, args: argparse.Namespace) -> int:
    reply = await client.call("ListHandlers")
    if wants_json(args):
        emit_json(reply)
    else:
        for name in reply["handlers"]:
            emit(name)
    return 0


async def _reload(client: Client, args: argparse.Namespace) -> int:
    try:
        reply = await client.call("Reload")
    except ConfigError as exc:
        # The daemon refused the new config and kept the old one: an operation
        # refused (exit 1), not a usage error of this command.
        print(
            f"nexus-schedctl: reload refused, the old config stays: {exc.message}", file=sys.stderr
        )
        return EXIT_REFUSED
    if wants_json(args):
        emit_json(reply)
        return 0
    result = reply["result"]
    emit("reloaded")
    for key, value in result.items() if isinstance(result, dict) else []:
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        emit(f"  {key}: {shown or '-'}")
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"
