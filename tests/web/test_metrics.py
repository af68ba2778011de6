"""/metrics scraped and parsed with prometheus-client's own parser."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nexus_schedd.client import Client
from nexus_schedd.web.config import WebConfig
from tests.web.conftest import SchedulerData, eventually, serve_in_process

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def scrape(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, Any], sample_name: str, **labels: str) -> float | None:
    for family in families.values():
        for sample in family.samples:
            if sample.name == sample_name and all(
                sample.labels.get(key) == wanted for key, wanted in labels.items()
            ):
                return float(sample.value)
    return None


async def test_metrics_report_jobs_status_gauges_from_the_daemon(
    scheduler: SchedulerData,
) -> None:
    async with serve_in_process(WebConfig(socket=scheduler.socket)) as http:
        families = await scrape(http)
        async with Client(scheduler.socket) as client:
            status = await client.status()
    expected = {
        "nexus_schedd_up",
        "nexus_schedd_jobs",
        "nexus_schedd_running",
        "nexus_schedd_due_backlog",
        "nexus_schedd_event_loop_lag_seconds",
        "nexus_schedd_start_lateness_quantile_seconds",
        "nexus_schedd_runs",
        "nexus_schedd_run_duration_seconds",
        "nexus_schedd_start_lateness_seconds",
    }
    assert expected <= set(families)
    assert families["nexus_schedd_up"].type == "gauge"
    assert families["nexus_schedd_runs"].type == "counter"
    assert families["nexus_schedd_run_duration_seconds"].type == "histogram"
    assert families["nexus_schedd_start_lateness_seconds"].type == "histogram"
    assert value(families, "nexus_schedd_up") == 1.0
    by_status = {s.labels["status"]: s.value for s in families["nexus_schedd_jobs"].samples}
    assert set(by_status) == set(status["counts"])
    # The heartbeat moves between pending and running; totals and final states are stable.
    assert sum(by_status.values()) == sum(status["counts"].values())
    assert by_status["failed_permanent"] == status["counts"]["failed_permanent"] >= 1
    assert value(families, "nexus_schedd_due_backlog") is not None
    assert value(families, "nexus_schedd_event_loop_lag_seconds") is not None
    # Runs have started (the fixture waited for heartbeats): both quantiles are
    # exported, under their own labels.
    p50 = value(families, "nexus_schedd_start_lateness_quantile_seconds", quantile="0.5")
    p99 = value(families, "nexus_schedd_start_lateness_quantile_seconds", quantile="0.99")
    assert p50 is not None and p99 is not None
    assert 0 <= p50 <= p99


async def test_run_counters_and_histograms_follow_watch_events(
    scheduler: SchedulerData,
) -> None:
    async with serve_in_process(WebConfig(socket=scheduler.socket)) as http:
        await eventually(
            lambda: _watching(http), "the dashboard to report the daemon up", limit_s=10
        )
        async with Client(scheduler.socket) as client:
            failing = await client.add_job(
                {
                    "job_type": "exec",
                    "name": "metrics-failure",
                    "payload": {"argv": [scheduler.fail_script]},
                    "max_retries": 0,
                }
            )

        async def failure_counted() -> bool:
            families = await scrape(http)
            count = value(families, "nexus_schedd_runs_total", outcome="failure", job_type="exec")
            return count == 1.0

        async def heartbeat_counted() -> bool:
            families = await scrape(http)
            count = value(families, "nexus_schedd_runs_total", outcome="success", job_type="log")
            return (count or 0) >= 1

        await eventually(failure_counted, "the failed exec run in nexus_schedd_runs_total")
        # The every-second heartbeat succeeds while the dashboard watches.
        await eventually(heartbeat_counted, "a heartbeat success in nexus_schedd_runs_total")
        families = await scrape(http)
    assert value(families, "nexus_schedd_run_duration_seconds_count", job_type="exec") == 1.0
    assert value(families, "nexus_schedd_start_lateness_seconds_count", job_type="exec") == 1.0
    inf_bucket = value(
        families, "nexus_schedd_run_duration_seconds_bucket", job_type="exec", le="+Inf"
    )
    assert inf_bucket == 1.0
    assert failing.job_type == "exec"


async def _watching(http: httpx.AsyncClient) -> bool:
    # The pump says "live" in the page header once its Watch stream is open.
    return 'class="live up"' in (await http.get("/jobs", params={"limit": "1"})).text
