"""The control server: Varlink over the daemon's Unix socket.

Each connection is served by its own task; requests on one connection are
answered in order. A request is decoded, checked against the IDL and the
peer's access level, then dispatched to :class:`SchedulerMethods`. Whatever a
client sends, the worst outcome is an error reply or its own connection
closed: other clients and the engine never notice.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from nexus_schedd import __version__
from nexus_schedd.clock import Clock, SystemClock
from nexus_schedd.control import access as access_control
from nexus_schedd.control import unix_stream
from nexus_schedd.control.methods import MethodContext, NotImplementedByDaemon, SchedulerMethods
from nexus_schedd.control.settings import ControlSettings
from nexus_schedd.control.varlink import (
    EXPECTED_MORE,
    INTERFACE_NOT_FOUND,
    INVALID_PARAMETER,
    METHOD_NOT_FOUND,
    METHOD_NOT_IMPLEMENTED,
    PERMISSION_DENIED,
    SERVICE_INTERFACE,
    Interface,
    ParameterError,
    decode_message,
    encode_message,
    error_reply,
    load_interface,
    reply,
)
from nexus_schedd.engine.service import SchedulerService
from nexus_schedd.errors import INTERFACE, PermissionDenied, SchedulerError

VENDOR = "nexus-schedd"
PRODUCT = "nexus-schedd"
URL = "https://varlink.org/"
"""GetInfo's url: the project has no public home page; point at the protocol."""

_STREAMING_METHODS = frozenset({"Watch"})
SEND_PART_BYTES = 64 * 1024
"""A Watch batch is written in sends of about this many bytes: few system calls,
a bounded buffer, and the idle timeout applies to each send."""
_CLOSED = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


ReloadCallback = Callable[[], Awaitable[Mapping[str, Any]]]


def bind_control_socket(
    path: str | os.PathLike[str], mode: int = 0o660, group: str = "nexus-schedd"
) -> socket.socket:
    """A listening Unix socket at ``path`` with ``mode``, group-owned by ``group`` when
    that group exists.

    Creates the parent directory. A socket file left by a dead daemon is
    replaced; one that a live daemon answers on is not (OSError EADDRINUSE).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        if not stat.S_ISSOCK(target.lstat().st_mode):
            raise OSError(errno.EEXIST, f"{target} exists and is not a socket")
        if _answers(target):
            raise OSError(errno.EADDRINUSE, f"a daemon is already listening on {target}")
        target.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(target))
        os.chmod(target, mode)
        gid = access_control.group_id(group)
        if gid is not None:
            with contextlib.suppress(PermissionError):
                os.chown(target, -1, gid)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


class ControlServer:
    """Serves ``org.varlink.service`` and ``io.nexus.Scheduler`` for one engine."""

    def __init__(
        self,
        service: SchedulerService,
        settings: ControlSettings | None = None,
        *,
        reload: ReloadCallback | None = None,
        log: Any = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings if settings is not None else ControlSettings()
        self._log = log if log is not None else structlog.get_logger("nexus_schedd.control")
        self._scheduler = load_interface(INTERFACE)
        self._service_interface = load_interface(SERVICE_INTERFACE)
        self._interfaces: dict[str, Interface] = {
            SERVICE_INTERFACE: self._service_interface,
            INTERFACE: self._scheduler,
        }
        self._methods = SchedulerMethods(
            service,
            MethodContext(
                clock=clock or SystemClock(),
                default_timezone=self.settings.default_timezone,
                overdue_after_s=self.settings.overdue_after_s,
                reload=reload,
            ),
        )
        declared = set(self._scheduler.methods)
        implemented = set(self._methods.names())
        if declared != implemented:
            raise RuntimeError(f"IDL and implementation disagree: {sorted(declared ^ implemented)}")
        self.connections = 0
        """Connections currently being served."""

    async def serve(
        self,
        sock: socket.socket,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections on the listening ``sock`` until cancelled.

        Takes ownership of ``sock`` (it is closed on return).
        """
        sock.setblocking(False)
        with sock:
            async with anyio.create_task_group() as tg:
                task_status.started()
                await self._accept_connections(sock, tg)

    async def _accept_connections(self, sock: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                stream = await unix_stream.accept(sock)
            except OSError as exc:
                # Out of file descriptors and the like: back off instead of spinning.
                self._log.warning("control_accept_failed", error=str(exc))
                await anyio.sleep(0.1)
                continue
            if self.connections >= self.settings.max_connections:
                self._log.warning(
                    "control_connection_refused",
                    reason="limit reached",
                    max_connections=self.settings.max_connections,
                )
                await stream.aclose()
                continue
            self.connections += 1
            tg.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        try:
            async with stream:
                peer = access_control.peer_credentials(
                    stream.extra(anyio.abc.SocketAttribute.raw_socket)
                )
                level = access_control.access_for(
                    peer, self.settings.admin_group, self.settings.read_group
                )
                await self._conversation(stream, level)
        except _CLOSED:
            pass
        except Exception:
            self._log.exception("control_connection_failed")
        finally:
            self.connections -= 1

    async def _conversation(
        self, stream: anyio.abc.SocketStream, level: access_control.Access
    ) -> None:
        buffered = BufferedByteReceiveStream(stream)
        limit = self.settings.max_message_bytes
        while True:
            raw: bytes | None = None
            oversized = False
            with anyio.move_on_after(self.settings.idle_timeout_s):
                try:
                    raw = await buffered.receive_until(b"\0", limit)
                except anyio.DelimiterNotFound:
                    oversized = True
                except anyio.IncompleteRead:
                    return  # EOF, possibly in the middle of a message: nothing to answer
            # receive_until only enforces the limit while it waits for more data: a
            # whole oversized message that arrived in one read is caught here.
            if oversized or (raw is not None and len(raw) > limit):
                await self._send(stream, error_reply(INVALID_PARAMETER, {"parameter": "message"}))
                return
            if raw is None:
                return  # idle timeout
            request = self._parse(raw)
            if isinstance(request, dict) and "error" in request:
                await self._send(stream, request)
                continue
            assert isinstance(request, _Request)
            if request.streaming:
                problem = self._refusal(request, level)
                if problem is not None:
                    if not request.oneway:
                        await self._send(stream, problem)
                    continue
                if not request.oneway:
                    await self._stream(stream, buffered, request)
                    return  # a Watch connection ends with its stream
                continue
            answer = await self._answer(request, level)
            if not request.oneway:
                await self._send(stream, answer)

    def _parse(self, raw: bytes) -> _Request | dict[str, Any]:
        try:
            message = decode_message(raw)
        except ValueError:
            return error_reply(INVALID_PARAMETER, {"parameter": "message"})
        if not isinstance(message, dict):
            return error_reply(INVALID_PARAMETER, {"parameter": "message"})
        method = message.get("method")
        if not isinstance(method, str) or "." not in method:
            return error_reply(INVALID_PARAMETER, {"parameter": "method"})
        parameters = message.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            return error_reply(INVALID_PARAMETER, {"parameter": "parameters"})
        for flag in ("more", "oneway", "upgrade"):
            if not isinstance(message.get(flag, False), bool):
                return error_reply(INVALID_PARAMETER, {"parameter": flag})
        interface, name = method.rsplit(".", 1)
        return _Request(
            interface=interface,
            name=name,
            parameters=parameters,
            more=bool(message.get("more", False)),
            oneway=bool(message.get("oneway", False)),
        )

    async def _answer(self, request: _Request, level: access_control.Access) -> dict[str, Any]:
        problem = self._refusal(request, level)
        if problem is not None:
            return problem
        try:
            if request.interface == SERVICE_INTERFACE:
                return reply(self._service_call(request))
            return reply(await self._methods.call(request.name, request.parameters))
        except Exception as exc:
            return self._error(request, exc)

    def _refusal(self, request: _Request, level: access_control.Access) -> dict[str, Any] | None:
        """The error reply for a request that must not run, else None."""
        interface = self._interfaces.get(request.interface)
        if interface is None:
            return error_reply(INTERFACE_NOT_FOUND, {"interface": request.interface})
        if interface.method(request.name) is None:
            return error_reply(METHOD_NOT_FOUND, {"method": request.method})
        if not access_control.allowed(level, request.interface, request.name):
            self._log.warning("control_call_refused", method=request.method, access=level.name)
            if request.interface == SERVICE_INTERFACE:
                return error_reply(PERMISSION_DENIED)
            exc = PermissionDenied(f"{request.method} is not allowed for this user")
            return error_reply(exc.varlink_error, exc.parameters())
        if (
            request.name in _STREAMING_METHODS
            and request.interface == INTERFACE
            and not request.more
        ):
            return error_reply(EXPECTED_MORE)
        try:
            interface.check_parameters(request.name, request.parameters)
        except ParameterError as exc:
            return error_reply(INVALID_PARAMETER, {"parameter": exc.parameter})
        return None

    def _service_call(self, request: _Request) -> dict[str, Any]:
        if request.name == "GetInfo":
            return {
                "vendor": VENDOR,
                "product": PRODUCT,
                "version": __version__,
                "url": URL,
                "interfaces": list(self._interfaces),
            }
        name = request.parameters["interface"]
        interface = self._interfaces.get(name)
        if interface is None:
            raise _VarlinkFailure(INTERFACE_NOT_FOUND, {"interface": name})
        return {"description": interface.description}

    def _error(self, request: _Request, exc: Exception) -> dict[str, Any]:
        if isinstance(exc, _VarlinkFailure):
            return error_reply(exc.error, exc.parameters)
        if isinstance(exc, ParameterError):
            return error_reply(INVALID_PARAMETER, {"parameter": exc.parameter})
        if isinstance(exc, NotImplementedByDaemon):
            return error_reply(METHOD_NOT_IMPLEMENTED, {"method": request.method})
        if isinstance(exc, SchedulerError):
            error = exc.varlink_error
            if error.removeprefix(f"{INTERFACE}.") not in self._scheduler.errors:
                error, parameters = f"{INTERFACE}.InternalError", {"message": exc.message}
            else:
                parameters = exc.parameters()
            self._log.info("control_call_failed", method=request.method, error=error)
            return error_reply(error, parameters)
        self._log.exception("control_call_crashed", method=request.method)
        return error_reply(
            f"{INTERFACE}.InternalError", {"message": f"{type(exc).__name__}: {exc}"}
        )

    async def _stream(
        self, stream: anyio.abc.SocketStream, buffered: BufferedByteReceiveStream, request: _Request
    ) -> None:
        """Serve Watch: one reply per event until the client goes away (or sends anything).

        The replies of the events ready together are written together, in sends
        of up to :data:`SEND_PART_BYTES`: a write per event cost the daemon more
        CPU than the event itself (the system call wakes the reader), and an open
        dashboard watches every add and run (docs/performance.md, round 6 stop
        40). The bound keeps a batch of large events (payloads and outputs of
        up to 64 KiB each, 1,000 events) from being encoded and held at once."""
        async with anyio.create_task_group() as tg:

            async def until_client_leaves() -> None:
                with contextlib.suppress(*_CLOSED):
                    await buffered.receive()
                tg.cancel_scope.cancel()

            tg.start_soon(until_client_leaves)
            try:
                async with contextlib.aclosing(self._methods.Watch(request.parameters)) as events:
                    async for batch in events:
                        await self._send_all(
                            stream, [reply(parameters, continues=True) for parameters in batch]
                        )
            except _CLOSED:
                pass
            except Exception as exc:
                await self._send(stream, self._error(request, exc))
            tg.cancel_scope.cancel()

    async def _send(self, stream: anyio.abc.SocketStream, message: Mapping[str, Any]) -> None:
        await self._send_part(stream, encode_message(message))

    async def _send_all(
        self, stream: anyio.abc.SocketStream, messages: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write ``messages`` in order, encoded as they are sent, in sends of about
        :data:`SEND_PART_BYTES` (a larger message goes alone)."""
        part: list[bytes] = []
        size = 0
        for message in messages:
            encoded = encode_message(message)
            part.append(encoded)
            size += len(encoded)
            if size >= SEND_PART_BYTES:
                await self._send_part(stream, b"".join(part))
                part.clear()
                size = 0
        if part:
            await self._send_part(stream, b"".join(part))

    async def _send_part(self, stream: anyio.abc.SocketStream, data: bytes) -> None:
        """One send; a client that has not taken it within the idle timeout has
        stopped reading."""
        with anyio.move_on_after(self.settings.idle_timeout_s) as scope:
            await stream.send(data)
        if scope.cancelled_caught:
            raise anyio.BrokenResourceError("client stopped reading")


@dataclass(frozen=True, slots=True)
class _Request:
    interface: str
    name: str
    parameters: dict[str, Any]
    more: bool
    oneway: bool

    @property
    def method(self) -> str:
        return f"{self.interface}.{self.name}"

    @property
    def streaming(self) -> bool:
        return self.interface == INTERFACE and self.name in _STREAMING_METHODS


class _VarlinkFailure(Exception):
    def __init__(self, error: str, parameters: Mapping[str, Any]) -> None:
        super().__init__(error)
        self.error = error
        self.parameters = dict(parameters)
