"""systemd integration without libsystemd: sd_notify on a real datagram socket, the
watchdog interval, socket activation through a real passed fd, and the
journald-facing log format (JSON lines when stderr is not a terminal)."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from nexus_schedd.daemon.logging import configure_logging
from nexus_schedd.daemon.systemd import Notifier, listen_fds, watchdog_interval


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="nx-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def notify_socket(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound where systemd's would be, as systemd does it."""
    path = str(short_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.bind(path)
    with sock:
        yield sock, path


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_notifier_without_notify_socket_does_nothing() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("up") is False
    assert notifier.watchdog() is False


def test_ready_status_watchdog_and_stopping_reach_the_socket(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
    assert notifier.ready("3 running, 0 due")
    assert receive(sock) == ["READY=1", "STATUS=3 running, 0 due"]
    assert notifier.status("line one\nline two")
    assert receive(sock) == ["STATUS=line one line two"]
    assert notifier.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert receive(sock) == ["STOPPING=1"]


def test_reloading_carries_the_monotonic_clock_in_microseconds(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier(path).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic = receive(sock)
    assert reloading == "RELOADING=1"
    name, _, value = monotonic.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_notify_socket_is_supported() -> None:
    name = f"nexus-schedd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.bind("\0" + name)
        assert Notifier.from_environment({"NOTIFY_SOCKET": "@" + name}).ready()
        assert receive(sock) == ["READY=1"]


def test_a_vanished_notify_socket_is_logged_not_raised(short_dir: Path) -> None:
    notifier = Notifier(str(short_dir / "gone"))
    with structlog.testing.capture_logs() as logs:
        assert notifier.ready() is False
    assert logs[0]["event"] == "sd_notify_failed"


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "1000000"}) == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert watchdog_interval(env) is None


def test_listen_fds_for_another_process_are_ignored_and_the_variables_unset() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "control"}
    assert listen_fds(env) == []
    assert env == {}


def test_no_socket_activation_gives_no_sockets() -> None:
    assert listen_fds({}) == []


# Plays systemd's part in the child: put the passed socket at fd 3, name this
# very process in LISTEN_PID, and exec the service (exec keeps the pid).
EXEC_AS_SYSTEMD = """
import os, sys
passed, script = int(sys.argv[1]), sys.argv[2]
os.dup2(passed, 3)
os.close(passed)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="control")
os.execv(sys.executable, [sys.executable, script])
"""

SERVICE = """
import json, os, socket
from nexus_schedd.daemon.systemd import listen_fds

sockets = listen_fds()
leftover = sorted(k for k in os.environ if k.startswith("LISTEN_"))
[server] = sockets
conn, _ = server.accept()
with conn:
    conn.sendall(json.dumps([
        len(sockets), server.fileno(), server.family.name, server.type.name,
        server.getsockname(), os.get_inheritable(server.fileno()), leftover,
    ]).encode())
server.close()
"""


def test_socket_activation_hands_over_the_listening_socket(short_dir: Path) -> None:
    path = str(short_dir / "control.sock")
    script = short_dir / "service.py"
    script.write_text(SERVICE)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind(path)
        listener.listen()
        fd = listener.fileno()
        child = subprocess.Popen(
            [sys.executable, "-c", EXEC_AS_SYSTEMD, str(fd), str(script)], pass_fds=[fd]
        )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(path)
            reply = b""
            while chunk := client.recv(4096):
                reply += chunk
    finally:
        assert child.wait(timeout=30) == 0
    count, fileno, family, kind, name, inheritable, leftover = json.loads(reply)
    assert (count, fileno, family, kind, name) == (1, 3, "AF_UNIX", "SOCK_STREAM", path)
    assert inheritable is False  # exec jobs must not inherit the control socket
    assert leftover == []


# journald: the daemon's log format when stderr is not a terminal.


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("restore_logging")
def test_logs_are_json_lines_with_timestamp_level_and_event_when_not_on_a_tty() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream=stream)
    log = structlog.get_logger()
    log.debug("hidden at info")
    log.info("run finished", job_id="01J", job_type="log", attempt=1, outcome="success")
    [line] = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "run finished"
    assert event["level"] == "info"
    assert event["job_id"] == "01J" and event["outcome"] == "success"
    assert datetime.fromisoformat(event["timestamp"]).utcoffset() is not None


@pytest.mark.usefixtures("restore_logging")
def test_logs_are_console_lines_on_a_tty() -> None:
    stream = _Terminal()
    configure_logging("debug", "auto", stream=stream)
    structlog.get_logger().debug("daemon ready", pid=7)
    text = stream.getvalue()
    assert "daemon ready" in text and "pid" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.usefixtures("restore_logging")
def test_configuring_twice_replaces_the_setup_and_library_logs_share_the_format() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "console", stream=first)
    configure_logging("warning", "json", stream=second)
    structlog.get_logger().info("below the new level")
    structlog.get_logger().warning("disk nearly full")
    logging.getLogger("httpx").warning("connection reset")
    assert first.getvalue() == ""
    lines = [json.loads(line) for line in second.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["disk nearly full", "connection reset"]
    assert lines[1]["logger"] == "httpx" and lines[1]["level"] == "warning"
