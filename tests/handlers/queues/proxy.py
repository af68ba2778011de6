"""A TCP proxy the test controls: it can refuse, hang up on, or stall a broker's clients."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc


@dataclass(eq=False)
class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``.

    ``up`` False refuses new connections (the listener stays, accepted sockets are
    closed at once: a broker that is down); ``drop()`` hangs up every connection it
    carries (a broker dropping its clients); ``stall`` True accepts connections
    but never forwards a byte (a broker that hangs).
    """

    target_port: int
    port: int = 0
    up: bool = True
    stall: bool = False
    accepted: int = 0
    _streams: set[anyio.abc.SocketStream] = field(default_factory=set)

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled; ``port`` is set when started."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self.port = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._carry)

    async def _carry(self, client: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        if not self.up:
            client.extra(anyio.abc.SocketAttribute.raw_socket).setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            await client.aclose()
            return
        if self.stall:
            self._streams.add(client)
            try:
                await anyio.sleep_forever()
            finally:
                self._streams.discard(client)
                await client.aclose()
        upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
        self._streams.update((client, upstream))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_pipe, client, upstream, tg.cancel_scope)
                tg.start_soon(_pipe, upstream, client, tg.cancel_scope)
        finally:
            self._streams.difference_update((client, upstream))
            with anyio.CancelScope(shield=True):
                await client.aclose()
                await upstream.aclose()

    async def drop(self) -> None:
        """Hang up every connection the proxy carries now."""
        for stream in list(self._streams):
            await stream.aclose()


async def _pipe(
    source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope
) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        scope.cancel()


@asynccontextmanager
async def running_proxy(target_port: int) -> AsyncIterator[TcpProxy]:
    """A started :class:`TcpProxy` in front of ``target_port``, stopped on exit."""
    proxy = TcpProxy(target_port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
