"""systemd integration without libsystemd: sd_notify, the watchdog and socket activation.

The protocols are small and stable (see ``sd_notify(3)`` and ``sd_listen_fds(3)``):
notifications are datagrams of ``KEY=VALUE`` lines sent to ``$NOTIFY_SOCKET``;
activated sockets arrive as file descriptors 3, 4, ... announced by
``$LISTEN_FDS`` for the process ``$LISTEN_PID``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import structlog

SD_LISTEN_FDS_START = 3

_log = structlog.get_logger("nexus_schedd.systemd")


@dataclass(frozen=True, slots=True)
class Notifier:
    """Sends sd_notify messages to ``address``; does nothing when it is None
    (not started by systemd, or ``Type=`` is not ``notify``)."""

    address: str | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket)."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # sd_notify ignores anything else (e.g. vsock addresses it cannot reach).
            _log.warning(
                "notify_socket_unsupported", address=address, note="notifications disabled"
            )
            address = None
        return cls(address)

    @property
    def enabled(self) -> bool:
        """True when notifications go somewhere."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=VALUE``) as one datagram. Returns False when it was not sent.

        A failed send is logged, never raised: the daemon must not die because
        its supervisor went away.
        """
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(message)
        except OSError as exc:
            _log.warning("sd_notify_failed", address=self.address, error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (start-up or reload finished), with an optional STATUS line."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """STATUS=<one line> shown by ``systemctl status``."""
        return self.notify(*_status(text))

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as ``Type=notify-reload`` requires."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """WATCHDOG=1: the service is alive."""
        return self.notify("WATCHDOG=1")


def _status(text: str | None) -> list[str]:
    if not text:
        return []
    return ["STATUS=" + " ".join(text.splitlines())]


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None when
    the watchdog is off or meant for another process (``$WATCHDOG_PID``)."""
    env = os.environ if env is None else env
    raw_usec = env.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid and (not raw_pid.isdigit() or int(raw_pid) != os.getpid()):
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def listen_fds(
    env: MutableMapping[str, str] | None = None, *, unset_environment: bool = True
) -> list[socket.socket]:
    """The sockets systemd passed for this process (socket activation), in order.

    Honours ``$LISTEN_PID`` (fds meant for another process are ignored) and, like
    ``sd_listen_fds(1)``, removes ``LISTEN_PID``, ``LISTEN_FDS`` and
    ``LISTEN_FDNAMES`` so children (exec jobs) do not inherit them.
    """
    env = os.environ if env is None else env
    raw_pid = env.get("LISTEN_PID", "")
    raw_count = env.get("LISTEN_FDS", "")
    if unset_environment:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    if not raw_pid.isdigit() or int(raw_pid) != os.getpid():
        return []
    if not raw_count.isdigit():
        return []
    sockets: list[socket.socket] = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(raw_count)):
        # Passed fds are inheritable; ours must not leak into exec jobs.
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


__all__ = ["SD_LISTEN_FDS_START", "Notifier", "listen_fds", "watchdog_interval"]
