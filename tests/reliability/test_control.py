"""Hostile control-socket input against the REAL daemon process: fuzzed messages,
oversized messages, slow and idle clients, 1,000 concurrent clients."""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.daemon.daemon_process import DaemonProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

MAX_MESSAGE = 65536
MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 1.0
CONFIG = f"""
[daemon]
log_format = "json"

[control]
admin_group = ""
max_message_bytes = {MAX_MESSAGE}
max_connections = {MAX_CONNECTIONS}
idle_timeout_s = {IDLE_TIMEOUT_S}
"""
MUTATING = {
    "AddJob",
    "AddJobs",
    "CancelJob",
    "PauseJob",
    "ResumeJob",
    "TriggerJob",
    "RescheduleJob",
    "RequeueJob",
    "RequeueJobs",
    "BackfillJob",
    "Reload",
}
METHODS = sorted(
    MUTATING
    | {"GetStatus", "GetJob", "ListJobs", "ListRuns", "Preview", "ListHandlers", "ExportCalendar"}
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["2025-13-45T99:99", "Mars/Olympus", "0 0 30 2 *", "*/0 * * * *", "P-1D"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
parameter_names = st.sampled_from(
    [
        "id",
        "job",
        "jobs",
        "status",
        "limit",
        "cursor",
        "recurrence",
        "run_at",
        "days",
        "count",
        "until",
        "all",
        "since",
        "from",
        "to",
        "trace_context",
    ]
)
job_fields = st.fixed_dictionaries(
    {},
    optional={
        "job_type": st.sampled_from(["log", "exec", "nope", ""]) | st.text(max_size=5),
        "run_at": json_values,
        "recurrence": json_values,
        "payload": json_values,
        "timezone": json_values,
        "priority": json_values,
        "max_retries": json_values,
    },
)
messages = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries(
        {
            "method": st.sampled_from(METHODS).map(lambda m: "io.nexus.Scheduler." + m)
            | st.text(max_size=30),
            "parameters": st.dictionaries(parameter_names, json_values, max_size=3)
            | st.fixed_dictionaries({"job": job_fields}),
        },
        optional={"more": st.booleans(), "oneway": st.booleans()},
    ).map(lambda message: json.dumps(message).encode()),
)


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    workdir = Path(tempfile.mkdtemp(prefix="nxs-ctl-", dir="/tmp"))
    process = DaemonProcess(workdir, CONFIG)
    try:
        process.start()
        yield process
    finally:
        process.close()


def exchange(daemon: DaemonProcess, raw: bytes, *, timeout: float = 10.0) -> bytes:
    """Send one framed message and read until the reply's NUL or EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(daemon.socket_path))
        # The daemon may answer and close before an oversized message is all sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw + b"\0")
        received = b""
        expected = raw.count(b"\0") + 1
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while received.count(b"\0") < expected:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    return received


def call(daemon: DaemonProcess, method: str, **parameters: Any) -> dict[str, Any]:
    message = {"method": "io.nexus.Scheduler." + method, "parameters": parameters}
    reply: dict[str, Any] = json.loads(exchange(daemon, json.dumps(message).encode()).rstrip(b"\0"))
    return reply


def jobs_snapshot(daemon: DaemonProcess) -> list[dict[str, Any]]:
    reply = call(daemon, "ListJobs", limit=1000)
    assert "error" not in reply, reply
    jobs: list[dict[str, Any]] = reply["parameters"]["jobs"]
    return jobs


def rss_kib(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_serving(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.stderr_tail()
    reply = call(daemon, "GetStatus")
    assert "status" in reply.get("parameters", {}), reply


def assert_serving_again(daemon: DaemonProcess) -> None:
    """After many clients hung up: the daemon frees a connection's slot when it
    notices the hang-up, so until it has noticed them all a new connection may
    still be refused at the limit (closed without a reply). Wait for that to end
    (bounded), then check it serves."""
    request = json.dumps({"method": "io.nexus.Scheduler.GetStatus", "parameters": {}}).encode()
    daemon.wait_until(
        lambda: bool(exchange(daemon, request)),
        timeout=30,
        what="a connection to be served again after the others closed",
    )
    assert_serving(daemon)


class FuzzTally:
    """What the fuzzer's requests did, across examples."""

    def __init__(self) -> None:
        self.mutations_accepted = 0
        self.requests = 0


@pytest.fixture(scope="module")
def tally() -> FuzzTally:
    return FuzzTally()


@pytest.fixture(scope="module")
def baseline(daemon: DaemonProcess) -> list[dict[str, Any]]:
    reply = call(
        daemon,
        "AddJob",
        job={"job_type": "log", "name": "anchor", "run_at": "2099-01-01T00:00:00Z"},
    )
    assert "error" not in reply, reply
    return jobs_snapshot(daemon)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=messages)
def test_fuzzed_messages_get_well_formed_replies_and_rejected_ones_change_nothing(
    daemon: DaemonProcess, baseline: list[dict[str, Any]], tally: FuzzTally, raw: bytes
) -> None:
    reply = exchange(daemon, raw)
    tally.requests += 1
    # A NUL inside the fuzzed bytes frames several messages: one reply each.
    for framed in reply.split(b"\0")[:-1] if reply else []:
        message = json.loads(framed)
        assert isinstance(message, dict)
        if "error" in message:
            assert isinstance(message["error"], str) and message["error"]
            continue
        assert "parameters" in message
        try:
            method = str(json.loads(raw)["method"]).rsplit(".", 1)[-1]
        except ValueError:
            method = ""
        if method in MUTATING and method != "Reload":
            tally.mutations_accepted += 1
    if reply:
        assert reply.endswith(b"\0"), reply[:200]
    if tally.mutations_accepted == 0:
        # Every mutation so far was rejected: the jobs are exactly as before.
        assert jobs_snapshot(daemon) == baseline


def test_daemon_still_serves_after_fuzzing_with_bounded_memory(
    daemon: DaemonProcess, tally: FuzzTally
) -> None:
    assert tally.requests > 0
    assert_serving(daemon)
    structlog.get_logger("tests.reliability").info(
        "fuzzed",
        requests=tally.requests,
        mutations_accepted=tally.mutations_accepted,
        rss_kib=rss_kib(daemon),
    )
    assert rss_kib(daemon) < 300 * 1024, "VmRSS of the daemon after fuzzing"


def test_oversized_messages_are_refused_and_the_connection_closed(daemon: DaemonProcess) -> None:
    before = rss_kib(daemon)
    for size in (MAX_MESSAGE + 1, 4 * 1024 * 1024):
        body = json.dumps(
            {"method": "io.nexus.Scheduler.AddJob", "parameters": {"pad": "x" * size}}
        ).encode()
        reply = exchange(daemon, body)
        message = json.loads(reply.rstrip(b"\0"))
        assert message["error"] == "org.varlink.service.InvalidParameter"
        assert message["parameters"] == {"parameter": "message"}
    # A never-terminated stream of bytes is cut off at the limit too.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.socket_path))
        sent = 0
        try:
            while sent < 8 * MAX_MESSAGE:
                sock.sendall(b"y" * 4096)
                sent += 4096
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        assert b"InvalidParameter" in received
    assert_serving(daemon)
    assert rss_kib(daemon) < before + 64 * 1024


def test_slow_and_idle_clients_are_closed_after_the_idle_timeout_and_block_no_one(
    daemon: DaemonProcess,
) -> None:
    idle: list[socket.socket] = []
    try:
        for index in range(20):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            idle.append(sock)
            sock.settimeout(15)
            sock.connect(str(daemon.socket_path))
            if index % 2:
                sock.sendall(b'{"method": "io.nexus.Sched')  # half a message, then silence
        assert_serving(daemon)  # served while the others hold their connections
        for sock in idle:
            assert sock.recv(100) == b"", "the daemon closes an idle connection"
    finally:
        for sock in idle:
            sock.close()
    assert_serving_again(daemon)


def test_a_thousand_concurrent_clients_excess_refused_promptly_others_served(
    daemon: DaemonProcess,
) -> None:
    before_jobs = jobs_snapshot(daemon)
    outcomes: dict[str, int] = {"served": 0, "refused": 0}
    request = json.dumps({"method": "io.nexus.Scheduler.GetStatus", "parameters": {}}).encode()

    async def client() -> None:
        try:
            stream = await anyio.connect_unix(daemon.socket_path)
        except OSError:
            outcomes["refused"] += 1
            return
        async with stream:
            received = b""
            try:
                await stream.send(request + b"\0")
                while b"\0" not in received:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
            if b"\0" in received and b'"status"' in received:
                outcomes["served"] += 1
            else:
                outcomes["refused"] += 1

    async def crowd() -> None:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(client)

    anyio.run(crowd)
    structlog.get_logger("tests.reliability").info(
        "thousand_clients", **outcomes, rss_kib=rss_kib(daemon)
    )
    assert outcomes["served"] + outcomes["refused"] == 1000
    assert outcomes["served"] >= MAX_CONNECTIONS // 2
    assert_serving_again(daemon)
    assert jobs_snapshot(daemon) == before_jobs
    assert rss_kib(daemon) < 300 * 1024
