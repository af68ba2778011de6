"""The one exception hierarchy of nexus-schedd.

Every error a user can see is a :class:`SchedulerError`. Each class names, in one
place, the Varlink error it becomes on the control socket and the exit code
``nexus-schedctl`` uses for it, so the server, the client and the CLI never
disagree about what a failure means.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

INTERFACE = "io.nexus.Scheduler"

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 69
EXIT_OUTCOME_UNKNOWN = 75
"""sysexits' EX_TEMPFAIL: a change was sent but its reply never came (see OutcomeUnknown)."""
EXIT_PERMISSION = 77


class SchedulerError(Exception):
    """Base class of every error nexus-schedd reports to a user."""

    varlink_error: ClassVar[str] = f"{INTERFACE}.InternalError"
    exit_code: ClassVar[int] = EXIT_REFUSED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def parameters(self) -> dict[str, Any]:
        """The Varlink error parameters for this error."""
        return {"message": self.message}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SchedulerError:
        """The error :meth:`parameters` describes (the client's side)."""
        return cls(str(parameters.get("message") or "") or cls.varlink_error)


class JobNotFound(SchedulerError):
    """No job has the given id or name."""

    varlink_error = f"{INTERFACE}.JobNotFound"

    def __init__(self, ref: str) -> None:
        super().__init__(f"no job with id or name {ref!r}")
        self.ref = ref

    def parameters(self) -> dict[str, Any]:
        return {"id": self.ref, "message": self.message}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SchedulerError:
        return cls(str(parameters.get("id", "")))


class InvalidJobState(SchedulerError):
    """The job's status does not allow the requested operation or transition."""

    varlink_error = f"{INTERFACE}.InvalidJobState"

    def __init__(self, message: str, *, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status

    def parameters(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SchedulerError:
        message = str(parameters.get("message") or "")
        return cls(message or "invalid job state", status=parameters.get("status"))


class InvalidSpec(SchedulerError):
    """A job definition, time, zone, recurrence or payload is not valid."""

    varlink_error = f"{INTERFACE}.InvalidSpec"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def parameters(self) -> dict[str, Any]:
        return {"field": self.field, "reason": self.reason}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SchedulerError:
        return cls(str(parameters.get("field", "")), str(parameters.get("reason", "")))


class UnknownJobType(SchedulerError):
    """No loaded handler supports the job type."""

    varlink_error = f"{INTERFACE}.UnknownJobType"

    def __init__(self, job_type: str) -> None:
        super().__init__(f"no handler supports job type {job_type!r}")
        self.job_type = job_type

    def parameters(self) -> dict[str, Any]:
        return {"job_type": self.job_type, "message": self.message}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SchedulerError:
        return cls(str(parameters.get("job_type", "")))


class JobExists(SchedulerError):
    """A job that is not final already has this name with a different definition."""

    varlink_error = f"{INTERFACE}.JobExists"

    def __init__(self, name: str, job_id: str) -> None:
        super().__init__(f"a different job named {name!r} exists ({job_id})")
        self.name = name
        self.job_id = job_id

    def parameters(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.job_id, "message": self.message}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SchedulerError:
        return cls(str(parameters.get("name", "")), str(parameters.get("id", "")))


class PermissionDenied(SchedulerError):
    """The caller may not perform this operation."""

    varlink_error = f"{INTERFACE}.PermissionDenied"
    exit_code = EXIT_PERMISSION


class StoreError(SchedulerError):
    """The store refused or failed a write (disk full, read-only, corrupt).

    ``permanent`` marks a store that is unusable for good (its schema changed
    or vanished, the database user lost its privileges): retrying cannot help,
    and the daemon stops with this message instead of retrying. Anything else
    (a lost connection, a timeout, a server restarting) is transient.
    """

    varlink_error = f"{INTERFACE}.StoreError"

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class StoreOpenFailed(StoreError):
    """The store could not be opened at start-up (daemon side only)."""


class ConfigError(SchedulerError):
    """A configuration file is unreadable or has a bad key or value."""

    varlink_error = f"{INTERFACE}.ConfigError"
    exit_code = EXIT_USAGE

    def __init__(self, file: str, key: str, reason: str) -> None:
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason

    def parameters(self) -> dict[str, Any]:
        return {"file": self.file, "key": self.key, "reason": self.reason}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SchedulerError:
        return cls(
            str(parameters.get("file", "")),
            str(parameters.get("key", "")),
            str(parameters.get("reason", "")),
        )


class DaemonUnreachable(SchedulerError):
    """The control socket could not be reached (client side only)."""

    varlink_error = f"{INTERFACE}.DaemonUnreachable"
    exit_code = EXIT_UNREACHABLE


class OutcomeUnknown(DaemonUnreachable):
    """A change (add, cancel, pause, ...) was sent but no reply came (client side only).

    The client gave up (its timeout) or lost the connection after the request
    left: the daemon may have made the change, or may still make it (a store
    write, once started, is finished). Look before retrying; an add with a
    ``name`` is safe to retry (the same definition returns the existing job).
    A subclass of :class:`DaemonUnreachable`, so code that caught that still does.
    """

    varlink_error = f"{INTERFACE}.OutcomeUnknown"
    exit_code = EXIT_OUTCOME_UNKNOWN


class ProtocolError(SchedulerError):
    """A peer broke the control protocol (client side only)."""

    varlink_error = "org.varlink.service.InvalidParameter"


ERRORS_BY_VARLINK_NAME: dict[str, type[SchedulerError]] = {
    cls.varlink_error: cls
    for cls in (
        JobNotFound,
        InvalidJobState,
        InvalidSpec,
        UnknownJobType,
        JobExists,
        PermissionDenied,
        StoreError,
        ConfigError,
    )
}

SERVICE_PERMISSION_DENIED = "org.varlink.service.PermissionDenied"
"""Varlink's own refusal (the server's access check): a PermissionDenied too."""


def error_from_reply(error: str, parameters: Mapping[str, Any]) -> SchedulerError:
    """The exception for a Varlink error reply (the inverse of each error's
    ``varlink_error`` and :meth:`~SchedulerError.parameters`)."""
    cls = ERRORS_BY_VARLINK_NAME.get(error)
    if cls is not None:
        try:
            return cls.from_parameters(parameters)
        except TypeError:
            pass
    if error == SERVICE_PERMISSION_DENIED:
        return PermissionDenied("permission denied")
    message = str(parameters.get("message") or "")
    detail = ", ".join(f"{key}={value}" for key, value in parameters.items())
    text = f"{error.rsplit('.', 1)[-1]}" + (f" ({detail})" if detail else "")
    if message:
        text = f"{text}: {message}"
    return ProtocolError(text)
