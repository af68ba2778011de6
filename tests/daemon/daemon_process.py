"""A real ``nexus-schedd`` subprocess for end-to-end tests.

The test plays systemd: it binds the NOTIFY_SOCKET the daemon reports to, reads
the daemon's JSON log lines from stderr, and sends it signals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN_DIR = Path(sys.executable).parent


def console_script(name: str) -> str:
    """The path of one of the package's console scripts in the running venv."""
    path = BIN_DIR / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"console script {name!r} not found next to {sys.executable}")
    return found


class DaemonProcess:
    """Start, observe and stop one daemon; every wait is bounded."""

    def __init__(self, workdir: Path, config_text: str, *, extra_env: dict[str, str] | None = None):
        self.workdir = workdir
        # Unix socket paths are limited to ~107 bytes: keep them short, under /tmp.
        self.sockdir = Path(tempfile.mkdtemp(prefix="nxs-", dir="/tmp"))
        self.socket_path = self.sockdir / "control.sock"
        self.notify_path = self.sockdir / "notify.sock"
        self.config_path = workdir / "nexus-schedd.toml"
        self.state_dir = workdir / "state"
        self.write_config(config_text)
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_lines: list[dict[str, Any]] = []
        self.raw_stderr: list[str] = []
        self.notifications: list[str] = []
        self.notification_times: list[tuple[float, str]] = []
        """Each notify line with the ``time.monotonic()`` at which it was received."""
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._notify_sock: socket.socket | None = None

    def write_config(self, text: str) -> None:
        """Replace the config file (for reload tests)."""
        self.config_path.write_text(text)

    def start(self, *, wait_ready: bool = True, timeout: float = 20.0) -> None:
        """Start the daemon; by default wait for READY=1 on the notify socket."""
        self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify_sock.bind(str(self.notify_path))
        self._notify_sock.settimeout(0.2)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_", "NEXUS_SCHEDD_"))
        }
        env.update({"NOTIFY_SOCKET": str(self.notify_path), "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        command = [
            console_script("nexus-schedd"),
            "--config",
            str(self.config_path),
            "--socket",
            str(self.socket_path),
            "--state-dir",
            str(self.state_dir),
        ]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._spawn(self._read_stderr)
        self._spawn(self._read_notify)
        if wait_ready:
            self.wait_notification("READY=1", timeout=timeout)

    def launch(self, command: list[str], env: dict[str, str]) -> None:
        """Start ``command`` (the daemon, or a wrapper that starts it) and read its stderr."""
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._spawn(self._read_stderr)

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                self.raw_stderr.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self.log_lines.append(event)

    def _read_notify(self) -> None:
        sock = self._notify_sock
        assert sock is not None
        while self.proc is not None:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                if self.proc.poll() is not None:
                    return
                continue
            except OSError:
                return
            received = time.monotonic()
            with self._lock:
                lines = data.decode().splitlines()
                self.notifications.extend(lines)
                self.notification_times.extend((received, line) for line in lines)

    def wait_until(self, predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; fail with the daemon's stderr tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc is not None and self.proc.poll() is not None and not predicate():
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) waiting for {what}\n{self.stderr_tail()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.stderr_tail()}")

    def wait_notification(self, message: str, *, timeout: float = 20.0, after: int = 0) -> int:
        """Wait for a notify line equal to ``message`` at index >= ``after``; return its index."""
        found: list[int] = []

        def seen() -> bool:
            with self._lock:
                for index in range(after, len(self.notifications)):
                    if self.notifications[index] == message:
                        found.append(index)
                        return True
            return False

        self.wait_until(seen, timeout=timeout, what=f"notification {message!r}")
        return found[0]

    def events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Log events, optionally those whose ``event`` and fields match."""
        with self._lock:
            lines = list(self.log_lines)
        return [
            line
            for line in lines
            if (event is None or line.get("event") == event)
            and all(line.get(key) == value for key, value in match.items())
        ]

    def wait_event(
        self, event: str, *, timeout: float = 20.0, count: int = 1, **match: Any
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` matching log events have been seen."""
        self.wait_until(
            lambda: len(self.events(event, **match)) >= count,
            timeout=timeout,
            what=f"{count} x log event {event!r} {match}",
        )
        return self.events(event, **match)

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stderr_tail(self, lines: int = 40) -> str:
        with self._lock:
            return "\n".join(self.raw_stderr[-lines:])

    def close(self) -> None:
        """Stop the daemon if still running and release every resource.

        Also waits for the daemon's SQLite writer process, which ends when the
        daemon does and closes the database after it, so that a test may use the
        state directory as soon as this returns.
        """
        if self.proc is not None:
            children = sqlite_writers(self.proc.pid)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            deadline = time.monotonic() + 10
            while any(running(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.01)
        for thread in self._threads:
            thread.join(timeout=5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        if self._notify_sock is not None:
            self._notify_sock.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)


def sqlite_writers(pid: int) -> list[int]:
    """The SQLite writer processes the daemon ``pid`` runs now."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = [int(child) for child in task.read_text().split()]
        except OSError:
            continue  # ended meanwhile
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"sqlite/writer_process.py" in cmdline:
                found.append(child)
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
