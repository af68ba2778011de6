"""Property-based fuzzing of the protocol layer: whatever bytes or JSON a client sends,
every reply is a well-formed Varlink reply (or the connection closes), and the
daemon keeps serving afterwards."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_schedd.control.settings import ControlSettings
from nexus_schedd.control.varlink import load_interface
from tests.control.harness import Daemon, blocking_call, running_daemon

METHODS = sorted(load_interface("io.nexus.Scheduler").methods)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
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
        "count",
        "days",
        "run_at",
        "job_type",
        "start",
        "interface",
        "trace_context",
        "x",
    ]
)
requests = st.fixed_dictionaries(
    {
        "method": st.one_of(
            st.sampled_from([f"io.nexus.Scheduler.{m}" for m in METHODS]),
            st.sampled_from(
                ["org.varlink.service.GetInfo", "org.varlink.service.GetInterfaceDescription"]
            ),
            st.text(max_size=30),
            json_values,
        ),
        "parameters": st.one_of(
            st.dictionaries(parameter_names, json_values, max_size=4), json_values
        ),
    },
    optional={"more": st.booleans() | json_values, "oneway": st.booleans() | json_values},
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for all examples, on an event loop in a background thread."""
    path = tmp_path_factory.mktemp("fuzz") / "schedd.db"
    limits = ControlSettings(max_message_bytes=8192, idle_timeout_s=5)
    with (
        anyio.from_thread.start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(running_daemon(path, limits)) as running,
    ):
        yield running


def exchange(path: Path, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and return everything until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close first (oversized message)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def assert_well_formed(received: bytes) -> None:
    assert received == b"" or received.endswith(b"\0"), "a reply was cut off"
    for raw in received.split(b"\0")[:-1]:
        message: Any = json.loads(raw)
        assert isinstance(message, dict)
        assert isinstance(message.get("parameters"), dict)
        assert set(message) <= {"parameters", "error", "continues"}
        if "error" in message:
            assert isinstance(message["error"], str) and "." in message["error"]


def assert_still_serving(daemon: Daemon) -> None:
    reply = blocking_call(daemon.socket_path, "io.nexus.Scheduler.ListHandlers")
    assert reply == {"parameters": {"handlers": ["log"]}}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=2048))
def test_random_bytes_get_well_formed_replies_or_a_closed_connection(
    daemon: Daemon, payload: bytes
) -> None:
    assert_well_formed(exchange(daemon.socket_path, payload))
    assert_still_serving(daemon)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(requests, min_size=1, max_size=4))
def test_random_json_requests_get_well_formed_replies(
    daemon: Daemon, messages: list[dict[str, Any]]
) -> None:
    payload = b"".join(json.dumps(message).encode() + b"\0" for message in messages)
    received = exchange(daemon.socket_path, payload)
    assert_well_formed(received)
    assert received.count(b"\0") <= len(messages) or any(m.get("more") for m in messages)
    assert_still_serving(daemon)
