"""A fault-injecting TCP proxy for tests: put it between a daemon and PostgreSQL.

The proxy runs its own asyncio event loop on a thread of the test process, so a
test that blocks (``DaemonProcess.wait_until`` polls with ``time.sleep``) never
stalls the traffic it is supposed to shape. Every method is thread-safe and
returns once the change is in force::

    with FaultProxy(("127.0.0.1", 5432)) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        ...                      # start daemons with ``url``
        proxy.reset()            # RST every open connection, both sides
        proxy.refuse()           # close the listening socket: new connects are refused
        proxy.blackhole()        # accept and hold new connections; forward nothing
        proxy.latency(0.2)       # delay each chunk towards the server by 0.2 s
        proxy.pass_through()     # heal: forward everything (held data flows on)

Modes, as a real network would show them:

- ``pass``: bytes are forwarded both ways as they come.
- ``latency(d)``: every chunk from the client waits ``d`` seconds before it is
  forwarded (in order). A request/response protocol such as PostgreSQL's pays
  ``d`` once per round trip; replies are not delayed again.
- ``blackhole``: nothing is forwarded in either direction, on open and new
  connections alike (new ones are accepted and held, without connecting
  upstream). Like a partition: peers see silence, not errors, and what was
  sent meanwhile is delivered when the link heals (TCP retransmits it).
- ``refuse``: the listening socket is closed, so connecting is refused
  (ECONNREFUSED); open connections go on. With :meth:`reset` first it is a
  database server that went down.
- :meth:`reset` (an action, the mode stays): every open connection is closed
  with ``SO_LINGER`` 0 on both sides, so the client and the server each get a
  TCP RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

Mode = Literal["pass", "latency", "blackhole", "refuse"]
T = TypeVar("T")

CHUNK = 65536
CONNECT_TIMEOUT_S = 10.0


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side and the server's side."""

    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    server_writer: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass
class ProxyStats:
    """Counters a test may report (all since the proxy started)."""

    accepted: int = 0
    resets: int = 0
    """Connections closed with RST by :meth:`FaultProxy.reset`."""
    open: int = 0


class FaultProxy:
    """A TCP proxy to ``upstream`` whose faults a test switches at run time."""

    def __init__(self, upstream: tuple[str, int], *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self.stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None

    # -- life cycle (called from the test's thread) --------------------------------

    def start(self) -> FaultProxy:
        """Start the loop thread and listen on an ephemeral port (``self.port``)."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._stopped = asyncio.Event()
            loop.run_until_complete(self._listen())
            ready.set()
            loop.run_until_complete(self._stopped.wait())
            loop.run_until_complete(self._close_all())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def close(self) -> None:
        """Stop listening, drop every connection and end the loop thread."""
        loop, stopped = self._loop, self._stopped
        if loop is None or stopped is None or self._thread is None:
            return
        loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- faults (called from the test's thread) -------------------------------------

    def pass_through(self) -> None:
        """Forward everything at once; data held by a blackhole flows on."""
        self._call(self._set_mode("pass", 0.0))

    def latency(self, seconds: float) -> None:
        """Delay every chunk towards the server by ``seconds`` (once per round trip)."""
        self._call(self._set_mode("latency", seconds))

    def blackhole(self) -> None:
        """Forward nothing, either way; accept new connections and hold them."""
        self._call(self._set_mode("blackhole", 0.0))

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused, open ones go on."""
        self._call(self._set_mode("refuse", 0.0))

    def reset(self) -> int:
        """Close every open connection with an RST to both peers; return how many."""
        return self._call(self._reset_all())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("the fault proxy is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)

    # -- the loop thread ----------------------------------------------------------------

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock, backlog=128)

    async def _set_mode(self, mode: Mode, delay_s: float) -> None:
        assert self._flowing is not None
        if mode == "refuse":
            server = self._server
            if server is not None:
                # Stop accepting first, and let connections already accepted get
                # their transports: on Python 3.11 a transport made for a server
                # closed meanwhile fails half-built (Server._attach asserts) and
                # its socket is never closed (a ResourceWarning, an error here).
                loop = asyncio.get_running_loop()
                for listening in server.sockets:
                    loop.remove_reader(listening.fileno())
                for _ in range(2):
                    await asyncio.sleep(0)
                # close() stops listening at once; wait_closed() would also wait for
                # the open connections (Python 3.12+), which a refusal leaves alone.
                server.close()
                self._server = None
        elif self._server is None:
            await self._listen()
        self.mode, self.delay_s = mode, delay_s
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _reset_all(self) -> int:
        links = list(self._links)
        for link in links:
            self._abort(link)
        self.stats.resets += len(links)
        for link in links:
            for task in link.tasks:
                task.cancel()
        return len(links)

    @staticmethod
    def _abort(link: _Link) -> None:
        """Close both sides with SO_LINGER 0: the kernel sends RST, not FIN."""
        linger = struct.pack("ii", 1, 0)
        for writer in (link.client_writer, link.server_writer):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(reader, writer)
        current = asyncio.current_task()
        assert current is not None
        link.tasks = [current]
        self._links.add(link)
        self.stats.accepted += 1
        self.stats.open += 1
        try:
            await self._serve(link)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Reset (or closed) while this connection was held or connecting.
            if self._stopped is not None and self._stopped.is_set():
                raise
        finally:
            self._links.discard(link)
            self.stats.open -= 1
            for side in (link.client_writer, link.server_writer):
                if side is not None and not side.transport.is_closing():
                    side.transport.abort()

    async def _serve(self, link: _Link) -> None:
        assert self._flowing is not None
        # A blackholed connection is accepted and held: no upstream connect yet.
        await self._flowing.wait()
        server_reader, server_writer = await asyncio.wait_for(
            asyncio.open_connection(*self.upstream), CONNECT_TIMEOUT_S
        )
        link.server_writer = server_writer
        upward = asyncio.create_task(self._pump(link.client_reader, server_writer, delayed=True))
        downward = asyncio.create_task(self._pump(server_reader, link.client_writer, delayed=False))
        link.tasks += [upward, downward]
        try:
            await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            upward.cancel()
            downward.cancel()
            await asyncio.gather(upward, downward, return_exceptions=True)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        flowing = self._flowing
        assert flowing is not None
        try:
            while True:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    break
                if delayed and self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                # A partition holds the data; it is delivered when the link heals.
                await flowing.wait()
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            self._abort(link)
            for task in link.tasks:
                task.cancel()
        await asyncio.sleep(0)
