"""The control socket's settings (config ``[control]``), apart from the server so
that loading the config does not import it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Access control and limits of the control socket (config ``[control]``)."""

    socket_mode: int = 0o660
    admin_group: str = "nexus-schedd"
    read_group: str = ""
    max_message_bytes: int = 1048576
    max_connections: int = 128
    idle_timeout_s: float = 300.0
    default_timezone: str = "UTC"
    """Zone for recurrences and times sent without one."""
    overdue_after_s: float = 300.0
    """How late a pending job must be for ListJobs' ``overdue`` filter."""
