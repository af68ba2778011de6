"""All seven workloads in one run, printed as one table plus JSON (``make bench``).

    python -m benchmarks.run_all [--quick] [--json-out benchmarks/results.json]

Defaults are the workloads of issue 6 (about 10 minutes on the project's 2-core
machine): throughput through the real daemon 100,000 jobs (issue 21), throughput
100,000 jobs (APScheduler's SQL store 10,000), lateness
1,000 jobs/s for 60 s, idle 30 s, scale 1,000,000 and then 5,000,000 jobs,
memory after 1,000,000 jobs added over the socket (a tenth cron),
multi-node 20,000 jobs on PostgreSQL with 1 and with 3 node processes,
4,000 single adds through the HTTP API and through Varlink (16 clients each), and
hand-off to queues 5,000 jobs to each of RabbitMQ, Redis, NATS JetStream and Celery.
``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from benchmarks import (
    add_rate,
    api_rate,
    daemon_throughput,
    idle,
    lateness,
    memory_adds,
    multinode,
    queues,
    scale,
    throughput,
)
from benchmarks.common import Report, emit


def machine() -> dict[str, object]:
    """The numbers' context: cores, CPU model, Python."""
    import os

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    quick = args.quick
    started = time.monotonic()
    reports: list[Report] = [
        daemon_throughput.run(20_000 if quick else 100_000, default_log_level=True, watched=True),
        # The same at a fifth of the jobs: APScheduler's memory store costs more
        # per job the more jobs wait (one sorted list), the daemon does not, so
        # the ratio is only meaningful with its size.
        *([] if quick else [daemon_throughput.run(20_000)]),
        throughput.run(20_000 if quick else 100_000, 1_000 if quick else 10_000),
        add_rate.run(10 if quick else 100, 1_600 if quick else 8_000, 300 if quick else 2_000),
        lateness.run(1000, 5 if quick else 60),
        idle.run(20_000 if quick else 100_000, 5 if quick else 30),
        scale.run(
            [100_000, 200_000] if quick else [1_000_000, 5_000_000],
            100_000 if quick else 1_000_000,
        ),
        # Jobs added to a running daemon (not a filled store): its memory bound.
        memory_adds.run(100_000 if quick else 1_000_000),
        # Needs the PostgreSQL server (NEXUS_SCHEDD_TEST_POSTGRES_DSN); an
        # unreachable one gives empty rows, not a failed run.
        multinode.run(5_000 if quick else 20_000, [1, 3]),
        # Single adds through nexus-schedweb's HTTP API beside the same through Varlink.
        api_rate.run(800 if quick else 4_000),
        # Needs RabbitMQ, Redis and NATS on their local ports; one that does not
        # answer gives an empty row.
        queues.run(1_000 if quick else 5_000),
    ]
    print(f"\nmachine: {machine()}; total {time.monotonic() - started:.0f} s\n")
    emit(reports)
    if args.json_out is not None:
        document = {"machine": machine(), "reports": [r.to_json() for r in reports]}
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
