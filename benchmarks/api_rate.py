"""Workload 7, the HTTP API: single durable adds through ``POST /api/v1/jobs`` of a
real ``nexus-schedweb`` (HTTP/1.1 keep-alive, 16 concurrent httpx clients) beside
the same adds through Varlink (16 concurrent client connections) to the same real
daemon: jobs/s and round-trip p50/p99, and the ratio API / Varlink; and CPU us
per add of each process (the clients, nexus-schedweb, the daemon, its writer),
so a figure bound by the clients is not read as the server's.

    python -m benchmarks.api_rate [--singles 4000] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx

from benchmarks.common import (
    BIN_DIR,
    Report,
    Row,
    cpu_seconds,
    daemon_config,
    emit,
    process_tree,
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
def running_web(tmp: Path, daemon_socket: Path, token: str) -> Iterator[tuple[str, int]]:
    """A real ``nexus-schedweb`` with the API on; yields its /api/v1 URL and pid."""
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
        yield f"{url}/api/v1", proc.pid
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


class LeanHttpClient:
    """One keep-alive HTTP/1.1 connection sending the same POST again and again.

    The load generator of the measured phase. httpx, the obvious client, costs
    the benchmark's process more CPU per request than nexus-schedweb spends
    answering it (877 against 530 us per add, round 6 stop 40): on two shared
    cores the figure then measured httpx. An application's clients run in other
    processes, usually on other hosts; this one builds its request once and
    parses only the status line and Content-Length, so nearly all the CPU of
    the phase is the server's.
    """

    def __init__(self, url: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self._host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
        self._port = int(port)
        head = [f"POST {path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self._request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self._buffer = b""
        self._stream: anyio.abc.SocketStream | None = None

    async def __aenter__(self) -> LeanHttpClient:
        self._stream = await anyio.connect_tcp(self._host, self._port)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    async def post(self) -> int:
        """Send the request; return the response's status code (its body is read and dropped)."""
        stream = self._stream
        assert stream is not None
        await stream.send(self._request)
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            self._buffer += await stream.receive()
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise RuntimeError(f"unexpected Transfer-Encoding: {value.strip()}")
        if length is None:
            raise RuntimeError(f"a response without Content-Length: {lines[0]}")
        while len(self._buffer) < length:
            self._buffer += await stream.receive()
        self._buffer = self._buffer[length:]
        return status


async def _api_singles(
    api_url: str, token: str, total: int, run_at: str, *, use_httpx: bool = False
) -> dict[str, Any]:
    per_client = total // CLIENTS
    round_trips: list[float] = []
    failures: list[int] = []
    headers = {"Authorization": f"Bearer {token}"}
    body = {"job_type": "bench", "run_at": run_at}

    async def one_httpx_client() -> None:
        # One keep-alive connection per client, as 16 application workers would have.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=120, headers=headers) as http:
            for _ in range(per_client):
                sent = time.perf_counter()
                response = await http.post(f"{api_url}/jobs", json=body)
                round_trips.append((time.perf_counter() - sent) * 1000.0)
                if response.status_code != 201:
                    failures.append(response.status_code)

    async def one_lean_client() -> None:
        path = api_url.split("/", 3)[3]
        encoded = json.dumps(body).encode()
        async with LeanHttpClient(api_url, f"/{path}/jobs", headers, encoded) as http:
            for _ in range(per_client):
                sent = time.perf_counter()
                status = await http.post()
                round_trips.append((time.perf_counter() - sent) * 1000.0)
                if status != 201:
                    failures.append(status)

    one_client = one_httpx_client if use_httpx else one_lean_client
    started = time.perf_counter()
    with anyio.fail_after(600):
        async with anyio.create_task_group() as tg:
            for _ in range(CLIENTS):
                tg.start_soon(one_client)
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} API adds failed, e.g. HTTP {failures[0]}")
    jobs = per_client * CLIENTS
    return {
        "clients": CLIENTS,
        "client_library": "httpx" if use_httpx else "lean",
        "jobs": jobs,
        "jobs_per_s": jobs / elapsed,
        **summary_ms(round_trips),
    }


class CpuMeter:
    """CPU seconds of the processes an add passes through, over one measured phase."""

    def __init__(self, daemon_pid: int, web_pid: int | None = None) -> None:
        writers = [pid for pid in process_tree(daemon_pid) if pid != daemon_pid]
        self._processes: dict[str, list[int]] = {"daemon": [daemon_pid], "writer": writers}
        if web_pid is not None:
            self._processes["web"] = [web_pid]
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        # The daemon's own CPU without its writer: /proc/<pid>/stat is per process.
        ticks = os.sysconf("SC_CLK_TCK")
        figures = {"clients": time.process_time()}
        for name, pids in self._processes.items():
            total = 0.0
            for pid in pids:
                if name == "daemon":
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / ticks
                else:
                    total += cpu_seconds(pid)
            figures[name] = total
        return figures

    def __enter__(self) -> CpuMeter:
        self._start = self._now()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._now()
        self.used = {name: end[name] - self._start[name] for name in end}

    def per_add_us(self, adds: int) -> dict[str, float]:
        return {name: round(seconds * 1e6 / adds, 1) for name, seconds in self.used.items()}


def run(singles: int, *, use_httpx: bool = False) -> Report:
    """Both sides against one daemon; its jobs are a month ahead so nothing runs."""
    run_at = format_instant(datetime.now(UTC) + timedelta(days=30))
    token = secrets.token_urlsafe(32)
    with workdir("nxb-api-") as tmp, running_daemon(tmp, daemon_config()) as daemon:
        # Varlink first, without nexus-schedweb (whose Watch stream would share the
        # two cores), as an application talking Varlink runs; each side warmed first.
        anyio.run(_varlink_singles, daemon.socket_path, CLIENTS, run_at)
        with CpuMeter(daemon.pid) as varlink_cpu:
            varlink = anyio.run(_varlink_singles, daemon.socket_path, singles, run_at)
        varlink["cpu_us_per_add"] = varlink_cpu.per_add_us(varlink["jobs"])
        with running_web(tmp, daemon.socket_path, token) as (api_url, web_pid):
            api_singles = partial(_api_singles, use_httpx=use_httpx)
            anyio.run(api_singles, api_url, token, CLIENTS, run_at)
            with CpuMeter(daemon.pid, web_pid) as api_cpu:
                api = anyio.run(api_singles, api_url, token, singles, run_at)
        api["cpu_us_per_add"] = api_cpu.per_add_us(api["jobs"])
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
    for name in ("clients", "web", "daemon", "writer"):
        report.rows.append(
            Row(
                f"CPU us per add: {name}",
                api["cpu_us_per_add"][name],
                varlink["cpu_us_per_add"].get(name),
                "lower",
                label,
            )
        )
    report.details = {"api": api, "varlink": varlink}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--singles", type=int, default=4000)
    parser.add_argument("--quick", action="store_true", help="800 adds per side")
    parser.add_argument(
        "--httpx",
        action="store_true",
        help="send the API's adds with httpx instead of the lean client (the client then"
        " costs more CPU than the server)",
    )
    args = parser.parse_args()
    emit([run(800 if args.quick else args.singles, use_httpx=args.httpx)])


if __name__ == "__main__":
    main()
