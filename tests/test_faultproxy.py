"""The fault proxy itself, in front of the test PostgreSQL server."""

from __future__ import annotations

import time

import anyio
import asyncpg
import pytest

from tests.faultproxy import FaultProxy
from tests.store.factories import POSTGRES_DSN, check_postgres_reachable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

UPSTREAM = ("127.0.0.1", 5432)


def via(proxy: FaultProxy) -> str:
    return POSTGRES_DSN.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


async def test_each_fault_shows_as_a_real_network_would() -> None:
    await check_postgres_reachable()
    with FaultProxy(UPSTREAM) as proxy:
        connection = await asyncpg.connect(via(proxy), timeout=5)
        try:
            assert await connection.fetchval("SELECT 1") == 1

            proxy.latency(0.2)
            started = time.monotonic()
            assert await connection.fetchval("SELECT 2") == 2
            assert time.monotonic() - started >= 0.2  # a lower bound the proxy enforces

            proxy.blackhole()
            with pytest.raises(TimeoutError):
                await connection.fetchval("SELECT 3", timeout=0.5)
            with pytest.raises(TimeoutError):
                await asyncpg.connect(via(proxy), timeout=0.5)

            proxy.pass_through()
            held = await asyncpg.connect(via(proxy), timeout=5)
            assert await held.fetchval("SELECT 4") == 4

            assert proxy.reset() >= 1
            with pytest.raises((asyncpg.InterfaceError, OSError, asyncpg.PostgresError)):
                await held.fetchval("SELECT 5", timeout=5)
            await held.close(timeout=1)

            proxy.refuse()
            with pytest.raises(OSError):
                await asyncpg.connect(via(proxy), timeout=5)
            proxy.pass_through()
            again = await asyncpg.connect(via(proxy), timeout=5)
            assert await again.fetchval("SELECT 6") == 6
            await again.close()
        finally:
            connection.terminate()
    await anyio.lowlevel.checkpoint()
