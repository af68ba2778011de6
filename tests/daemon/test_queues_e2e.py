"""End-to-end hand-off to queues: a real daemon, real Redis and RabbitMQ, nexus-schedctl."""

from __future__ import annotations

import json
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from nexus_schedd.client import Client
from tests.daemon.daemon_process import DaemonProcess
from tests.daemon.test_daemon_e2e import schedctl, schedctl_json, wait_status
from tests.handlers.queues.conftest import AMQP_PORT, REDIS_PORT, REDIS_URL, need

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
T = TypeVar("T")


def config(*, amqp_port: int = AMQP_PORT, extra: str = "") -> str:
    return f"""
[daemon]
log_format = "json"
shutdown_grace_s = 5

[control]
admin_group = ""

[defaults]
backoff_base_s = 0.2
backoff_jitter = 0.0

[handlers.redis]
url = "{REDIS_URL}"
allow = ["nxs-test-*"]

[handlers.amqp]
url = "amqp://guest:guest@127.0.0.1:{amqp_port}/"
allow = ["nxs-test-*"]
connect_timeout_s = 120
{extra}
"""


def call(daemon: DaemonProcess, use: Callable[[Client], Awaitable[T]]) -> T:
    """Run one client call against the daemon."""

    async def run() -> T:
        async with Client(daemon.socket_path) as client:
            return await use(client)

    return anyio.run(run)


def stream_entries(stream: str) -> list[dict[bytes, bytes]]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [fields for _id, fields in client.xrange(stream)]
    finally:
        client.close()


@pytest.fixture
def stream() -> Iterator[str]:
    need("Redis", REDIS_PORT)
    name = f"nxs-test-{uuid.uuid4().hex[:12]}"
    yield name
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(name)
    client.close()


@pytest.fixture
def dead_broker() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung broker)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_hand_offs_refusals_timeouts_and_a_dead_broker_through_a_real_daemon(
    tmp_path: Path, stream: str, dead_broker: int
) -> None:
    daemon = DaemonProcess(tmp_path, config(amqp_port=dead_broker))
    try:
        daemon.start()
        # Refused when added, with the field named.
        refused = schedctl(
            daemon, "add", "redis", "--payload", json.dumps({"stream": "billing"}), check=False
        )
        assert refused.returncode != 0 and "payload.stream" in refused.stderr
        unknown = schedctl(
            daemon,
            "add",
            "redis",
            "--payload",
            json.dumps({"stream": stream, "ttl": 1}),
            check=False,
        )
        assert unknown.returncode != 0 and "payload.ttl" in unknown.stderr

        # A hung broker holds its own attempt, not the other job types.
        stuck = schedctl_json(
            daemon,
            "add",
            "amqp",
            "--payload",
            json.dumps({"routing_key": stream}),
            "--timeout",
            "120",
        )["job"]
        daemon.wait_event("run_started", job_id=stuck["id"])
        logged = schedctl_json(daemon, "add", "log")["job"]
        wait_status(daemon, logged["id"], "completed")
        published = schedctl_json(
            daemon, "add", "redis", "--payload", json.dumps({"stream": stream, "body": "hi"})
        )["job"]
        wait_status(daemon, published["id"], "completed")
        assert schedctl_json(daemon, "show", stuck["id"])["job"]["status"] == "running"
        [entry] = stream_entries(stream)
        assert entry[b"message_id"].decode() == f"{published['id']}:0"

        # Request mode with no worker: the attempt times out (retriable; no retries left).
        waiting = schedctl_json(
            daemon, "add", "redis",
            "--payload", json.dumps({"stream": stream, "mode": "request"}),
            "--timeout", "1", "--max-retries", "0",
        )["job"]  # fmt: skip
        wait_status(daemon, waiting["id"], "failed_permanent")
        runs = call(daemon, lambda c: c.list_runs(waiting["id"]))
        assert [run.outcome.value for run in runs.items if run.outcome] == ["timeout"]
        schedctl(daemon, "cancel", stuck["id"])
    finally:
        daemon.close()


def test_kill_9_during_hand_offs_loses_no_acknowledged_job(tmp_path: Path, stream: str) -> None:
    """Every job is handed off at least once across a SIGKILL; a repeat carries the
    same message id as the hand-off it repeats."""
    count = 600
    daemon = DaemonProcess(tmp_path, config())
    daemon.start()
    specs = [{"job_type": "redis", "payload": {"stream": stream, "body": n}} for n in range(count)]
    jobs = call(daemon, lambda c: c.add_jobs(specs))  # acknowledged: on disk
    keys = {job.idempotency_key for job in jobs}
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        daemon.wait_until(
            lambda: client.xlen(stream) >= count // 10, timeout=60, what="hand-offs to start"
        )
        daemon.send(signal.SIGKILL)
        daemon.wait_exit(timeout=30)
        handed_before_restart = client.xlen(stream)
    finally:
        client.close()
    assert handed_before_restart < count, "every hand-off finished before the kill; raise count"

    again = DaemonProcess(tmp_path, config())
    try:
        again.start()

        def all_completed() -> bool:
            page = call(again, lambda c: c.list_jobs(status=["completed"], limit=count + 1))
            return len(page.items) == count

        again.wait_until(all_completed, timeout=120, what="every job to complete after the restart")
    finally:
        again.close()
    entries = stream_entries(stream)
    ids = [entry[b"message_id"].decode() for entry in entries]
    assert set(ids) == keys  # nothing lost, nothing foreign
    bodies: dict[str, set[int]] = {}
    for entry in entries:
        body = json.loads(entry[b"body"])
        bodies.setdefault(entry[b"message_id"].decode(), set()).add(body["payload"]["body"])
    # A repeated hand-off is the same job's message, under the same id.
    assert all(len(values) == 1 for values in bodies.values())
    daemon.close()


def redis_clients_named(name: str) -> int:
    """How many connections to the shared Redis carry this client name."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(1 for entry in client.client_list() if entry.get("name") == name)
    finally:
        client.close()


def test_a_reload_closes_the_replaced_handlers_connections_once_their_attempts_end(
    tmp_path: Path, stream: str
) -> None:
    """SPEC 14: a handler's broker connection is closed at reload, but not under
    an attempt still using it. The Redis client name tells the old handler's
    connections from the new one's on the shared server."""
    token = uuid.uuid4().hex[:12]
    old, new = f"nxs-old-{token}", f"nxs-new-{token}"

    def redis_only(client_name: str) -> str:
        return f"""
[daemon]
log_format = "json"
shutdown_grace_s = 5

[control]
admin_group = ""

[handlers.redis]
url = "{REDIS_URL}?client_name={client_name}"
allow = ["nxs-test-*"]
"""

    daemon = DaemonProcess(tmp_path, redis_only(old))
    try:
        daemon.start()
        # An attempt of the old handler in flight: a request waiting for its reply.
        waiting = schedctl_json(
            daemon, "add", "redis",
            "--payload", json.dumps({"stream": stream, "mode": "request"}),
            "--timeout", "120", "--max-retries", "0",
        )["job"]  # fmt: skip
        daemon.wait_until(lambda: len(stream_entries(stream)) == 1, timeout=30, what="the request")
        assert redis_clients_named(old) >= 1

        daemon.write_config(redis_only(new))
        schedctl(daemon, "reload")
        published = schedctl_json(
            daemon, "add", "redis", "--payload", json.dumps({"stream": stream, "body": "new"})
        )["job"]
        wait_status(daemon, published["id"], "completed")
        assert redis_clients_named(new) >= 1
        # Still in use by the waiting attempt: not closed under it.
        assert redis_clients_named(old) >= 1
        assert not daemon.events("handlers_closed")

        [request, _published] = stream_entries(stream)
        import redis

        worker = redis.Redis.from_url(REDIS_URL)
        try:
            reply = {"success": True, "output": "done"}
            worker.xadd(request[b"reply_to"], {"result": json.dumps(reply)})
        finally:
            worker.close()
        wait_status(daemon, waiting["id"], "completed")
        [closed] = daemon.wait_event("handlers_closed")
        assert "redis" in closed["handlers"]
        daemon.wait_until(
            lambda: redis_clients_named(old) == 0, timeout=30, what="the old connections to close"
        )
        assert redis_clients_named(new) >= 1
    finally:
        daemon.close()
