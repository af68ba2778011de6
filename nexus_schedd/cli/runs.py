"""``nexus-schedctl runs [ID] [--limit N]``: the run history, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from nexus_schedd.cli.common import (
    connected,
    emit,
    emit_json,
    fetch_pages,
    local_time,
    positive_int,
    table,
    wants_json,
)
from nexus_schedd.control.client import Client


def register(subparsers: Any) -> None:
    """Add ``runs``."""
    runs = subparsers.add_parser("runs", help="run history, newest first")
    runs.add_argument("ref", nargs="?", metavar="ID", help="only this job (id or name)")
    runs.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="at most N runs (default 50)"
    )
    runs.set_defaults(func=connected(_runs))


async def _runs(client: Client, args: argparse.Namespace) -> int:
    parameters: dict[str, Any] = {}
    if args.ref is not None:
        parameters["job_id"] = args.ref
    runs, cursor = await fetch_pages(client, "ListRuns", parameters, "runs", args.limit)
    if wants_json(args):
        emit_json({"runs": runs, "next_cursor": cursor})
        return 0
    rows = [
        [
            run["job_id"],
            run.get("job_type") or "-",
            str(run["attempt"]),
            local_time(run["scheduled_for"]),
            local_time(run["started_at"]),
            "-" if run.get("duration_ms") is None else f"{run['duration_ms']:.0f} ms",
            run.get("outcome") or "running",
            (run.get("error") or "").splitlines()[0] if run.get("error") else "",
        ]
        for run in runs
    ]
    emit(
        table(
            ["JOB", "TYPE", "ATTEMPT", "SCHEDULED", "STARTED", "DURATION", "OUTCOME", "ERROR"],
            rows,
        )
    )
    return 0
