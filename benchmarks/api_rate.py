"""Workload 7, the HTTP API: single durable adds through ``POST /api/v1/jobs`` of a
real ``nexus-schedweb`` (HTTP/1.1 keep-alive, 16 concurrent httpx clients) beside
the same adds through Varlink (16 concurrent client connections) to the same real
daemon: jobs/s and round-trip p50/p99, and the ratio API / Varlink.

    python -m benchmarks.api_rate [--singles 4000] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx

from benchmarks.common import (
    BIN_DIR,
    Report,
    Row,
    daemon_config,
    emit,
    running_daemon,
    summary_ms,
    workdir,
)
from nexus_schedd.client import Client
from nexus_schedd.model.times import format_instant

CLIENTS = 16


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_web(tmp: Path, daemon_socket: Path, token: str) -> Iterator[str]:
    """A real ``nexus-schedweb`` with the API on; yields its /api/v1 URL."""
    port = _free_port()
    config = tmp / "web.toml"
    config.write_text(
        f"""
[web]
log_level = "warning"
log_format = "json"

[api]
enabled = true
idempotency_db = "{tmp / "idempotency.db"}"

[[api.tokens]]
name = "bench"
sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"
scope = "admin"
"""
    )
    log = (tmp / "web.log").open("wb")
    proc = subprocess.Popen(
        [
            str(BIN_DIR / "nexus-schedweb"),
            "--config",
            str(config),
            "--socket",
            str(daemon_socket),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env={k: v for k, v in os.environ.items() if not k.startswith("NEXUS_SCHEDD_")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nexus-schedweb exited: {(tmp / 'web.log').read_text()}")
            try:
                if httpx.get(f"{url}/api/v1/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nexus-schedweb did not answer within 60 s")
            time.sleep(0.1)
        yield f"{url}/api/v1"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


async def _varlink_singles(socket_path: Path, total: int, run_at: str) -> dict[str, Any]:
    per_client = total // CLIENTS
    round_trips: list[float] = []

    async def one_client() -> None:
        async with Client(socket_path, timeout=120) as client:
            for _ in range(per_client):
                sent = time.perf_counter()
                await client.add_job({"job_type": "bench", "run_at": run_at})
                round_trips.append((time.perf_counter() - sent) * 1000.0)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(CLIENTS):
            tg.start_soon(one_client)
    elapsed = time.perf_counter() - started
    jobs = per_client * CLIENTS
    return {
        "clients": CLIENTS,
        "jobs": jobs,
        "jobs_per_s": jobs / elapsed,
        **summary_ms(round_trips),
    }


async def _api_singles(api_url: str, token: str, total: int, run_at: str) -> dict[str, Any]:
    per_client = total // CLIENTS
    round_trips: list[float] = []
    failures: list[int] = []
    headers = {"Authorization": f"Bearer {token}"}
    body = {"job_type": "bench", "run_at": run_at}

    async def one_client() -> None:
        # One keep-alive connection per client, as 16 application workers would have.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=120, headers=headers) as http:
            for _ in range(per_client):
                sent = time.perf_counter()
                response = await http.post(f"{api_url}/jobs", json=body)
                round_trips.append((time.perf_counter() - sent) * 1000.0)
                if response.status_code != 201:
                    failures.append(response.status_code)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(CLIENTS):
            tg.start_soon(one_client)
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} API adds failed, e.g. HTTP {failures[0]}")
    jobs = per_client * CLIENTS
    return {
        "clients": CLIENTS,
        "jobs": jobs,
        "jobs_per_s": jobs / elapsed,
        **summary_ms(round_trips),
    }


def run(singles: int) -> Report:
    """Both sides against one daemon; its jobs are a month ahead so nothing runs."""
    run_at = format_instant(datetime.now(UTC) + timedelta(days=30))
    token = secrets.token_urlsafe(32)
    with workdir("nxb-api-") as tmp, running_daemon(tmp, daemon_config()) as daemon:
        # Varlink first, without nexus-schedweb (whose Watch stream would share the
        # two cores), as an application talking Varlink runs; each side warmed first.
        anyio.run(_varlink_singles, daemon.socket_path, CLIENTS, run_at)
        varlink = anyio.run(_varlink_singles, daemon.socket_path, singles, run_at)
        with running_web(tmp, daemon.socket_path, token) as api_url:
            anyio.run(_api_singles, api_url, token, CLIENTS, run_at)
            api = anyio.run(_api_singles, api_url, token, singles, run_at)
    label = f"Varlink, {CLIENTS} connections"
    report = Report("7 HTTP API adds")
    report.rows += [
        Row(
            f"API single adds/s ({CLIENTS} keep-alive clients)",
            round(api["jobs_per_s"]),
            round(varlink["jobs_per_s"]),
            theirs_label=label,
        ),
        Row("API single add p50 ms", api["p50_ms"], varlink["p50_ms"], "lower", label),
        Row("API single add p99 ms", api["p99_ms"], varlink["p99_ms"], "lower", label),
    ]
    report.details = {"api": api, "varlink": varlink}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--singles", type=int, default=4000)
    parser.add_argument("--quick", action="store_true", help="800 adds per side")
    args = parser.parse_args()
    emit([run(800 if args.quick else args.singles)])


if __name__ == "__main__":
    main()
