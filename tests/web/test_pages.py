"""The dashboard's pages against a real daemon with real data (in-process ASGI)."""

from __future__ import annotations

import itertools
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from nexus_schedd.client import Client
from nexus_schedd.web.app import Dashboard
from nexus_schedd.web.config import WebConfig
from tests.web.conftest import SchedulerData, serve_in_process

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_overview_shows_counts_backlog_lateness_and_recent_failures(
    web: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    response = await web.get("/")
    assert response.status_code == 200
    html = response.text
    async with Client(scheduler.socket) as client:
        failed = (await client.status())["counts"]["failed_permanent"]
    assert failed >= 1
    assert re.search(rf'id="count-failed_permanent">\s*{failed}<', html)
    assert 'id="due-backlog"' in html and "lateness p99" in html
    # The failed exec run, with the job's name and the script's error output.
    failures = html.split("Recent failures", 1)[1]
    assert "broken-export" in failures
    assert "failure" in failures


async def test_jobs_lists_every_job_and_filters_by_status_type_and_target(
    web: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    everything = (await web.get("/jobs")).text
    for name in ("heartbeat", "nightly-report", "one-shot-later", "broken-export"):
        assert name in everything
    failed = (await web.get("/jobs", params={"status": "failed_permanent"})).text
    assert "broken-export" in failed and "nightly-report" not in failed
    by_type = (await web.get("/jobs", params={"type": "exec"})).text
    assert "broken-export" in by_type and "heartbeat" not in by_type
    by_target = (await web.get("/jobs", params={"target": "acme"})).text
    assert "nightly-report" in by_target and "one-shot-later" not in by_target


async def test_jobs_pages_through_the_protocol_cursor(
    web: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    first = (await web.get("/jobs", params={"limit": "2"})).text
    next_link = re.search(r'href="([^"]+)" rel="next"', first)
    assert next_link, "a first page of 2 jobs links to the next page"
    url = next_link.group(1).replace("&amp;", "&")
    assert "limit=2" in url and "cursor=" in url
    second = await web.get(url)
    assert second.status_code == 200
    first_names = set(re.findall(r'<a href="/jobs/[^"]+">([^<]+)</a>', first))
    second_names = set(re.findall(r'<a href="/jobs/[^"]+">([^<]+)</a>', second.text))
    assert len(first_names) == 2 and second_names and not first_names & second_names


async def test_job_page_shows_definition_next_occurrences_and_runs(
    web: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    report = await web.get("/jobs/nightly-report")
    assert report.status_code == 200
    assert scheduler.report.id in report.text
    assert "cron 30 2 * * * (Europe/Berlin)" in report.text
    assert "acme" in report.text and "&#34;sales&#34;" in report.text
    assert "on failure</dt><dd>adds a <code>log</code> job" in report.text
    occurrences = re.findall(r'<time datetime="([^"]+)"', report.text)
    assert len(occurrences) == 10
    berlin = ZoneInfo("Europe/Berlin")
    local = [datetime.fromisoformat(text).astimezone(berlin) for text in occurrences]
    assert all((instant.hour, instant.minute) == (2, 30) for instant in local)
    assert all((b.date() - a.date()).days == 1 for a, b in itertools.pairwise(local))

    broken = (await web.get(f"/jobs/{scheduler.broken.id}")).text
    assert "failed_permanent" in broken
    assert "o-failure" in broken and "exit" in broken.lower()
    assert "None: the job is failed_permanent" in broken


async def test_runs_page_filters_by_outcome(web: httpx.AsyncClient) -> None:
    failures = (await web.get("/runs", params={"outcome": "failure"})).text
    assert "broken-export" in failures and "heartbeat" not in failures
    successes = (await web.get("/runs", params={"outcome": "success"})).text
    assert "heartbeat" in successes and "broken-export" not in successes


async def test_timeline_draws_the_next_24_hours_as_svg(web: httpx.AsyncClient) -> None:
    response = await web.get("/timeline")
    assert response.status_code == 200
    svg = re.search(r"<svg .*?</svg>", response.text, re.S)
    assert svg
    lanes = re.findall(r'<g class="tl-lane[^"]*">.*?</g>', svg.group(0), re.S)
    labels = {re.search(r">([^<]+)<title>", lane).group(1): lane for lane in lanes}  # type: ignore[union-attr]
    assert {"heartbeat", "nightly-report", "one-shot-later"} <= set(labels)
    assert labels["nightly-report"].count('class="tl-mark"') == 1
    assert labels["one-shot-later"].count('class="tl-mark"') == 1
    assert labels["sync-&lt;b&gt;inventory&lt;/b&gt;"].count('class="tl-mark"') == 12
    # A job every second has more marks than fit: the rest of its lane is a band.
    assert 'class="tl-band"' in labels["heartbeat"]
    assert "broken-export" not in labels
    assert len(re.findall(r'class="tl-hour"', svg.group(0))) >= 11
    assert "<script" not in svg.group(0)


async def test_names_and_payloads_are_escaped(web: httpx.AsyncClient) -> None:
    html = (await web.get("/jobs")).text
    assert "sync-&lt;b&gt;inventory&lt;/b&gt;" in html
    assert "<b>inventory</b>" not in html


@pytest.mark.parametrize(
    ("path", "params", "status", "text"),
    [
        ("/jobs/no-such-job", None, 404, "no job with id or name"),
        ("/jobs/" + "x" * 300, None, 404, "no job"),
        ("/no/such/page", None, 404, "There is no page"),
        ("/jobs", {"status": "sleeping"}, 400, "Unknown status"),
        ("/runs", {"outcome": "exploded"}, 400, "Unknown outcome"),
        ("/jobs", {"limit": "100000000000000000000"}, 400, "limit must be"),
        ("/jobs", {"limit": "-3"}, 400, "limit must be"),
        ("/jobs", {"overdue": "maybe"}, 400, "overdue"),
        ("/jobs", {"cursor": "not-a-cursor"}, 400, "Bad request"),
        ("/runs", {"job": "no-such-job"}, 404, "no job"),
    ],
)
async def test_bad_input_gets_a_page_with_the_right_status(
    web: httpx.AsyncClient, path: str, params: dict[str, str] | None, status: int, text: str
) -> None:
    response = await web.get(path, params=params)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert text in response.text
    assert "Traceback" not in response.text


async def test_daemon_down_gives_503_pages_and_up_zero_metrics() -> None:
    missing = Path(tempfile.mkdtemp(dir="/tmp")) / "gone.sock"
    async with serve_in_process(WebConfig(socket=str(missing))) as http:
        for path in ("/", "/jobs", "/jobs/x", "/runs", "/timeline"):
            response = await http.get(path)
            assert response.status_code == 503, path
            assert "not reachable" in response.text and str(missing) in response.text
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert "nexus_schedd_up 0.0" in metrics.text
        assert (
            "nexus_schedd_jobs"
            not in metrics.text.replace("# HELP", "").split("nexus_schedd_up")[0]
        )
    missing.parent.rmdir()


async def test_unexpected_errors_render_a_plain_500_page_without_traceback(
    scheduler: SchedulerData, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(self: Any, request: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Dashboard, "runs", explode)
    async with serve_in_process(WebConfig(socket=scheduler.socket)) as http:
        response = await http.get("/runs")
        assert response.status_code == 500
        assert "Internal Server Error" in response.text
        assert "secret internals" not in response.text and "Traceback" not in response.text
        assert (await http.get("/jobs")).status_code == 200


async def test_pages_send_security_headers_and_a_session_cookie(web: httpx.AsyncClient) -> None:
    response = await web.get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("nexus_session=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    stylesheet = await web.get("/static/style.css")
    assert stylesheet.status_code == 200 and "text/css" in stylesheet.headers["content-type"]


async def test_job_page_says_until_when_a_paused_job_resumes(
    web: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    from tests.web.conftest import add_log_job

    job = await add_log_job(scheduler.socket, "paused-until-page")
    async with Client(scheduler.socket) as client:
        await client.pause_job(job.id, until="2030-12-31T00:00:00Z")
    page = (await web.get(f"/jobs/{job.id}")).text
    assert "paused until" in page and "then it resumes by itself" in page
    assert "2030-12-31" in page
