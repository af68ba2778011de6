"""``nexus-schedctl add --traceparent``: the job's runs join the caller's trace
(SPEC 15); without the flag, OpenTelemetry's environment carriers $TRACEPARENT and
$TRACESTATE are read, so a traced script's adds join its trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.control.harness import Daemon

pytestmark = pytest.mark.anyio

SCHEDCTL = str(Path(sys.executable).with_name("nexus-schedctl"))
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def add(daemon: Daemon, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TRACEPARENT", "TRACESTATE", "NEXUS_SCHEDD_SOCKET")
    }
    environment.update(env, NEXUS_SCHEDD_SOCKET=str(daemon.socket_path))
    done = await anyio.run_process(
        [SCHEDCTL, "--json", "add", "log", "--in", "1h", *args], check=False, env=environment
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def context_of(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["job"].get("trace_context")


async def test_add_sends_the_trace_context_given(daemon: Daemon) -> None:
    done = await add(daemon, "--traceparent", TRACEPARENT, "--tracestate", "vendor=opaque")
    assert context_of(done) == {"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"}


async def test_add_reads_the_environment_carriers_and_the_flag_wins(daemon: Daemon) -> None:
    from_env = await add(daemon, TRACEPARENT=TRACEPARENT, TRACESTATE="k=v")
    assert context_of(from_env) == {"traceparent": TRACEPARENT, "tracestate": "k=v"}
    flag_wins = await add(daemon, "--traceparent", OTHER, TRACEPARENT=TRACEPARENT)
    assert context_of(flag_wins) == {"traceparent": OTHER}
    assert context_of(await add(daemon)) is None
    # A malformed $TRACEPARENT is ignored (it is not this command line's mistake).
    assert context_of(await add(daemon, TRACEPARENT="garbage")) is None


async def test_a_malformed_traceparent_flag_is_refused_naming_it(daemon: Daemon) -> None:
    done = await add(daemon, "--traceparent", "00-nope")
    assert done.returncode == 1
    assert "--traceparent" in done.stderr
    lonely = await add(daemon, "--tracestate", "k=v")
    assert lonely.returncode == 1 and "--tracestate" in lonely.stderr
