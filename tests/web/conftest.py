"""Fixtures for the dashboard tests: one real daemon with real data for the whole
folder, and the dashboard's ASGI app in-process (httpx) or as the real process."""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from nexus_schedd.client import Client
from nexus_schedd.clock import SystemClock
from nexus_schedd.model import Job
from nexus_schedd.model.times import format_instant
from nexus_schedd.web.api.config import ApiConfig, ApiToken
from nexus_schedd.web.app import Dashboard
from nexus_schedd.web.config import WebConfig
from tests.daemon.daemon_process import DaemonProcess

TOKEN = "test-token-0123456789"
BASE_URL = "http://testserver"


def daemon_config(tmp: Path) -> str:
    """A daemon config for tests: JSON logs, any group, exec allowed for our scripts."""
    return f"""
[daemon]
log_format = "json"
shutdown_grace_s = 2

[control]
admin_group = ""

[defaults]
backoff_base_s = 0.2
backoff_jitter = 0.0

[handlers.exec]
allow = ["{tmp}/*"]

[calendars.closed]
dates = [2031-01-03]
"""


@dataclass(frozen=True)
class SchedulerData:
    """The real daemon and the jobs the folder's tests read."""

    daemon: DaemonProcess
    socket: str
    heartbeat: Job
    report: Job
    every_two_hours: Job
    later: Job
    broken: Job
    fail_script: str


@pytest.fixture(scope="session")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerData]:
    """A real ``nexus-schedd`` with a mix of jobs, one of them already failed."""
    tmp = tmp_path_factory.mktemp("web-daemon")
    fail_script = tmp / "fail.sh"
    fail_script.write_text("#!/bin/sh\necho 'disk full on /srv' >&2\nexit 1\n")
    fail_script.chmod(fail_script.stat().st_mode | stat.S_IXUSR)
    daemon = DaemonProcess(tmp, daemon_config(tmp))
    daemon.start()
    try:
        jobs = anyio.run(_populate, str(daemon.socket_path), str(fail_script))
        yield SchedulerData(daemon, str(daemon.socket_path), *jobs, fail_script=str(fail_script))
    finally:
        daemon.close()


async def _populate(socket: str, fail_script: str) -> tuple[Job, ...]:
    async with Client(socket) as client:
        heartbeat = await client.add_job(
            {
                "job_type": "log",
                "name": "heartbeat",
                "recurrence": {"kind": "cron", "cron": "* * * * * *"},
                "payload": {"message": "beat"},
                "misfire": "skip",
            }
        )
        report = await client.add_job(
            {
                "job_type": "log",
                "name": "nightly-report",
                "target_id": "acme",
                "recurrence": {"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin"},
                "payload": {"report": "sales", "format": "pdf"},
                "on_failure": {"job_type": "log", "payload": {"message": "report failed"}},
            }
        )
        every_two_hours = await client.add_job(
            {
                "job_type": "log",
                "name": "sync-<b>inventory</b>",
                "target_id": "warehouse-7",
                "recurrence": {"kind": "hourly", "interval": 2},
            }
        )
        later = await client.add_job(
            {"job_type": "log", "name": "one-shot-later", "run_at": _in_hours(3)}
        )
        broken = await client.add_job(
            {
                "job_type": "exec",
                "name": "broken-export",
                "payload": {"argv": [fail_script]},
                "max_retries": 0,
            }
        )

        async def broken_failed() -> bool:
            return (await client.get_job(broken.id)).status.value == "failed_permanent"

        async def two_heartbeats() -> bool:
            return len((await client.list_runs("heartbeat", limit=2)).items) >= 2

        # Real history: a failed run and a few heartbeats.
        await eventually(broken_failed, "the exec job to fail")
        await eventually(two_heartbeats, "two heartbeat runs")
    return heartbeat, report, every_two_hours, later, broken


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 20.0
) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` after ``limit_s`` seconds."""
    try:
        with anyio.fail_after(limit_s):
            while True:
                if await check():
                    return
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit_s} s waiting for {what}") from None


def _in_hours(hours: float) -> str:
    return format_instant(SystemClock().now() + timedelta(hours=hours))


@asynccontextmanager
async def serve_in_process(config: WebConfig, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard app, lifespan running, behind an httpx client (cookies kept)."""
    app = Dashboard(config, **options).asgi()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield http


@pytest.fixture
async def web(scheduler: SchedulerData) -> AsyncIterator[httpx.AsyncClient]:
    """A read-only dashboard on the real daemon (the default config)."""
    async with serve_in_process(WebConfig(socket=scheduler.socket)) as http:
        yield http


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def add_log_job(socket: str, name: str, **fields: Any) -> Job:
    """A fresh hourly log job for a test that changes it. It is first due in 2031,
    so it stays pending (a job due now may be running when the page loads, and a
    running job offers no pause button); a fixed time keeps adds by one name equal."""
    spec = {
        "job_type": "log",
        "name": name,
        "run_at": "2031-01-01T00:00:00Z",
        "recurrence": {"kind": "hourly"},
        **fields,
    }
    async with Client(socket) as client:
        return await client.add_job(spec)


async def get_job(socket: str, ref: str) -> Job:
    """The job as the daemon has it now."""
    async with Client(socket) as client:
        return await client.get_job(ref)


# -- the JSON API -------------------------------------------------------------------

ADMIN_TOKEN = "api-admin-token-0123456789"
READ_TOKEN = "api-read-token-0123456789"
EXEC_TOKEN = "api-exec-only-token-0123456789"
"""An admin token confined to job types matching ``ex*`` (the ``exec`` handler)."""


def sha256_hex(secret: str) -> str:
    """What ``sha256sum`` prints for ``secret``: the form [[api.tokens]] stores."""
    return hashlib.sha256(secret.encode()).hexdigest()


def api_config_text(database: Path, *, extra: str = "") -> str:
    """An ``[api]`` table with the three test tokens (for a real ``nexus-schedweb``)."""
    return f"""
[api]
enabled = true
idempotency_db = "{database}"
{extra}
[[api.tokens]]
name = "admin"
sha256 = "{sha256_hex(ADMIN_TOKEN)}"
scope = "admin"

[[api.tokens]]
name = "reader"
sha256 = "{sha256_hex(READ_TOKEN)}"
scope = "read"

[[api.tokens]]
name = "exec-only"
sha256 = "{sha256_hex(EXEC_TOKEN)}"
scope = "admin"
job_types = ["ex*"]
"""


def api_web_config(socket: str, database: Path, **api: Any) -> WebConfig:
    """A dashboard config with the API on and the three test tokens."""
    tokens = (
        ApiToken("admin", hashlib.sha256(ADMIN_TOKEN.encode()).digest(), "admin"),
        ApiToken("reader", hashlib.sha256(READ_TOKEN.encode()).digest(), "read"),
        ApiToken("exec-only", hashlib.sha256(EXEC_TOKEN.encode()).digest(), "admin", ("ex*",)),
    )
    return WebConfig(
        socket=socket,
        api=ApiConfig(enabled=True, tokens=tokens, idempotency_db=database, **api),
    )


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(scheduler: SchedulerData, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process on the folder's daemon; requests carry the admin token."""
    config = api_web_config(scheduler.socket, tmp_path / "idempotency.db")
    async with serve_in_process(config) as http:
        http.headers.update(bearer(ADMIN_TOKEN))
        yield http


def assert_problem(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    """A problem+json reply with ``status`` whose type ends with ``name``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith(name), body
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body
