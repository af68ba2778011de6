"""A change whose reply never comes is reported as "outcome unknown", not as a
daemon that could not be reached: the client library raises OutcomeUnknown and
``nexus-schedctl`` exits 75 (issue 17, finding 4)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from nexus_schedd.client import Client, DaemonUnreachable, OutcomeUnknown
from nexus_schedd.errors import EXIT_OUTCOME_UNKNOWN, EXIT_UNREACHABLE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

SCHEDCTL = str(Path(sys.executable).with_name("nexus-schedctl"))


@pytest.fixture
async def silent_daemon() -> AsyncIterator[Path]:
    """A control socket that reads requests and never answers (a daemon whose
    store stalls past the client's timeout), or drops the connection on "drop"."""
    directory = Path(tempfile.mkdtemp(prefix="nxs-ou-", dir="/tmp"))
    path = directory / "control.sock"
    listener = await anyio.create_unix_listener(path)

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            received = b""
            while b"\0" not in received:
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            if b"drop" in received:
                return  # closes the connection without a reply
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield path
        tg.cancel_scope.cancel()
    await listener.aclose()
    await anyio.Path(path).unlink(missing_ok=True)
    await anyio.Path(directory).rmdir()


async def test_a_change_without_a_reply_is_outcome_unknown(silent_daemon: Path) -> None:
    async with Client(silent_daemon, timeout=0.3) as client:
        with pytest.raises(OutcomeUnknown, match=r"outcome unknown: .*AddJob"):
            await client.add_job({"job_type": "log"})
    async with Client(silent_daemon, timeout=0.3) as client:
        with pytest.raises(OutcomeUnknown, match="connection was closed"):
            await client.cancel_job("drop")


async def test_a_read_without_a_reply_is_only_unreachable(silent_daemon: Path) -> None:
    async with Client(silent_daemon, timeout=0.3) as client:
        with pytest.raises(DaemonUnreachable) as raised:
            await client.get_job("x")
    assert not isinstance(raised.value, OutcomeUnknown)


async def test_schedctl_exits_75_for_an_unknown_outcome_and_69_for_a_read(
    silent_daemon: Path,
) -> None:
    env = {**os.environ, "NEXUS_SCHEDD_SOCKET": str(silent_daemon)}
    add = await anyio.run_process(
        [SCHEDCTL, "--timeout", "0.3", "add", "log", "--at", "2030-01-01T00:00:00Z"],
        check=False,
        env=env,
    )
    assert add.returncode == EXIT_OUTCOME_UNKNOWN == 75, add.stderr
    assert b"outcome unknown" in add.stderr
    show = await anyio.run_process(
        [SCHEDCTL, "--timeout", "0.3", "show", "x"], check=False, env=env
    )
    assert show.returncode == EXIT_UNREACHABLE, show.stderr
