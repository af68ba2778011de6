"""``nexus-schedctl watch [--type T] [--job ID]``: job and run events as they happen."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nexus_schedd.cli.common import connected, local_time, wants_json
from nexus_schedd.control.client import Client


def register(subparsers: Any) -> None:
    """Add ``watch``."""
    watch = subparsers.add_parser("watch", help="stream job and run events until interrupted")
    watch.add_argument("--type", dest="job_type", metavar="T", help="only this job type")
    watch.add_argument("--job", dest="job_id", metavar="ID", help="only this job id")
    watch.set_defaults(func=connected(_watch))


async def _watch(client: Client, args: argparse.Namespace) -> int:
    parameters: dict[str, Any] = {
        key: value
        for key, value in (("job_type", args.job_type), ("job_id", args.job_id))
        if value is not None
    }
    parameters["announce"] = True
    async for reply in client.stream("Watch", parameters):
        if reply.get("subscribed"):
            # On stderr, so stdout stays one event per line; scripts may wait for it.
            print("nexus-schedctl: watching (interrupt to stop)", file=sys.stderr, flush=True)
            continue
        event = reply["event"]
        if wants_json(args):
            # Each Watch reply as the protocol sends it, one per line (SPEC 7).
            line = json.dumps({"event": event}, ensure_ascii=False, separators=(",", ":"))
        else:
            line = describe_event(event)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


def describe_event(event: dict[str, Any]) -> str:
    """One aligned line: time, kind, job id, type and what changed."""
    job = event.get("job") or {}
    run = event.get("run") or {}
    job_id = job.get("id") or run.get("job_id") or "-"
    job_type = job.get("job_type") or run.get("job_type") or "-"
    if run:
        detail = f"attempt {run.get('attempt')} {run.get('outcome') or 'started'}"
        if run.get("error"):
            detail += f": {str(run['error']).splitlines()[0]}"
    else:
        detail = f"{job.get('status', '-')}, next run {local_time(job.get('run_at'))}"
    return f"{local_time(event['at'])}  {event['kind']:<12}  {job_id}  {job_type}  {detail}"
