"""The control protocol's Unix streams (nexus_schedd.control.unix_stream) on real
sockets: the stream contract, and no error in the event loop when a waiting
task is cancelled just as its socket turns ready."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from nexus_schedd.control import unix_stream

pytestmark = pytest.mark.anyio


@contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What reaches the running loop's exception handler inside the block."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


def listening(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.setblocking(False)
    return listener


async def test_a_receive_cancelled_as_data_arrives_leaves_no_error_in_the_loop() -> None:
    mine, peer = socket.socketpair()
    with peer, loop_errors() as errors:
        async with unix_stream.UnixStream(mine) as stream, anyio.create_task_group() as tg:
            tg.start_soon(stream.receive)
            await anyio.wait_all_tasks_blocked()  # the receive waits for the socket
            peer.send(b"x")  # readable at the loop's next poll...
            await anyio.lowlevel.checkpoint()  # ...which runs this task's next step first
            tg.cancel_scope.cancel()  # so the receive is cancelled in that same iteration
        await anyio.wait_all_tasks_blocked()
    assert errors == []


async def test_an_accept_cancelled_as_a_client_connects_leaves_no_error_in_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as listener, loop_errors() as errors:
        async with anyio.create_task_group() as tg:
            tg.start_soon(unix_stream.accept, listener)
            await anyio.wait_all_tasks_blocked()
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(path))
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
        client.close()
        await anyio.wait_all_tasks_blocked()
    assert errors == []


async def test_bytes_go_both_ways_and_a_closed_peer_ends_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as listener:
        async with await unix_stream.connect(path) as client:
            async with await unix_stream.accept(listener) as server:
                big = bytes(range(256)) * 4096  # 1 MiB: more than a socket buffer holds
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.send, big)
                    received = bytearray()
                    while len(received) < len(big):
                        received += await server.receive()
                assert bytes(received) == big
                await server.send(b"reply")
                assert await client.receive() == b"reply"
                await client.send_eof()
                with pytest.raises(anyio.EndOfStream):
                    await server.receive()
            with pytest.raises(anyio.EndOfStream):
                await client.receive()


async def test_closing_a_stream_wakes_the_task_waiting_on_it() -> None:
    mine, peer = socket.socketpair()
    with peer:
        stream = unix_stream.UnixStream(mine)
        outcome: list[BaseException] = []

        async def receive() -> None:
            try:
                await stream.receive()
            except anyio.ClosedResourceError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            await stream.aclose()
        assert len(outcome) == 1
        assert mine.fileno() == -1
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"late")


async def test_a_second_task_receiving_at_once_is_refused() -> None:
    mine, peer = socket.socketpair()
    with peer:
        async with unix_stream.UnixStream(mine) as stream, anyio.create_task_group() as tg:
            tg.start_soon(stream.receive)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await stream.receive()
            tg.cancel_scope.cancel()


async def test_sending_to_a_closed_peer_breaks_the_stream() -> None:
    mine, peer = socket.socketpair()
    async with unix_stream.UnixStream(mine) as stream:
        peer.close()
        with pytest.raises(anyio.BrokenResourceError) as raised:
            await stream.send(b"x")
        assert isinstance(raised.value.__cause__, BrokenPipeError)


async def test_peer_closed_peeks_without_taking_the_data() -> None:
    mine, peer = socket.socketpair()
    async with unix_stream.UnixStream(mine) as stream:
        assert not stream.peer_closed()  # open and idle
        peer.send(b"reply")
        assert not stream.peer_closed()  # data waiting is not a close...
        assert await stream.receive() == b"reply"  # ...and the peek left it there
        peer.close()
        assert stream.peer_closed()
    assert stream.peer_closed()  # closed here


async def test_connecting_where_nothing_listens_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await unix_stream.connect(tmp_path / "absent.sock")
    path = tmp_path / "stale.sock"
    listening(path).close()  # the file stays, nothing listens
    with pytest.raises(ConnectionRefusedError):
        await unix_stream.connect(path)


async def test_the_stream_reports_its_socket_and_addresses(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as listener:
        async with await unix_stream.connect(path) as client:
            assert client.extra(anyio.abc.SocketAttribute.family) == socket.AF_UNIX
            assert client.extra(anyio.abc.SocketAttribute.remote_address) == str(path)
            raw = client.extra(anyio.abc.SocketAttribute.raw_socket)
            assert isinstance(raw, socket.socket) and raw.getblocking() is False
            async with await unix_stream.accept(listener) as server:
                assert server.extra(anyio.abc.SocketAttribute.local_address) == str(path)
