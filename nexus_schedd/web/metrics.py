"""Prometheus metrics of one daemon, as seen through its control socket.

Gauges (jobs by status, running, due backlog, start lateness quantiles, the
daemon's event-loop lag, up) are read from GetStatus at each scrape, so they are
never stale; when the daemon cannot be reached only ``nexus_schedd_up 0`` is
reported. Counters and histograms of runs are fed from Watch events, so they
count what finished while this dashboard was watching (Prometheus' ``rate()``
and ``increase()`` handle the resets a restart causes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nexus_schedd.model.events import Event, EventKind

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300)


class RunMetrics:
    """Run counters and histograms, fed from Watch events for the process's lifetime."""

    def __init__(self) -> None:
        self.runs = Counter(
            "nexus_schedd_runs",
            "Runs that finished while the dashboard watched, by outcome and job type.",
            ["outcome", "job_type"],
            registry=None,
        )
        self.duration = Histogram(
            "nexus_schedd_run_duration_seconds",
            "Duration of finished runs, by job type.",
            ["job_type"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.lateness = Histogram(
            "nexus_schedd_start_lateness_seconds",
            "How late first attempts started after their scheduled time, by job type.",
            ["job_type"],
            buckets=LATENESS_BUCKETS,
            registry=None,
        )

    def observe(self, event: Event) -> None:
        """Count one Watch event (only run events matter here)."""
        run = event.run
        if run is None:
            return
        job_type = run.job_type or (event.job.job_type if event.job else "") or "unknown"
        if event.kind is EventKind.RUN_STARTED and run.attempt == 1:
            # Retries start late on purpose (backoff): only first attempts measure lateness.
            lateness = (run.started_at - run.scheduled_for).total_seconds()
            self.lateness.labels(job_type=job_type).observe(max(0.0, lateness))
        elif event.kind is EventKind.RUN_FINISHED and run.outcome is not None:
            self.runs.labels(outcome=run.outcome.value, job_type=job_type).inc()
            if run.duration_ms is not None:
                self.duration.labels(job_type=job_type).observe(run.duration_ms / 1000.0)

    def collectors(self) -> tuple[Collector, ...]:
        """The collectors to register in a scrape's registry."""
        return (self.runs, self.duration, self.lateness)


class StatusCollector(Collector):
    """Gauges from one GetStatus snapshot (``None``: the daemon is unreachable)."""

    def __init__(self, status: Mapping[str, Any] | None) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status
        up = GaugeMetricFamily(
            "nexus_schedd_up", "1 when the daemon answered GetStatus for this scrape, else 0."
        )
        up.add_metric([], 0.0 if status is None else 1.0)
        yield up
        if status is None:
            return
        jobs = GaugeMetricFamily("nexus_schedd_jobs", "Jobs by status.", labels=["status"])
        for name, count in sorted(dict(status.get("counts") or {}).items()):
            jobs.add_metric([str(name)], float(count))
        yield jobs
        yield _gauge("nexus_schedd_running", "Attempts running now.", status.get("running"))
        yield _gauge(
            "nexus_schedd_due_backlog",
            "Jobs that are due but not yet started.",
            status.get("due_backlog"),
        )
        yield _gauge(
            "nexus_schedd_event_loop_lag_seconds",
            "The daemon's recent event-loop lag.",
            _ms(status.get("loop_lag_ms")),
        )
        yield _gauge(
            "nexus_schedd_uptime_seconds",
            "Seconds since the daemon started.",
            status.get("uptime_s"),
        )
        quantiles = GaugeMetricFamily(
            "nexus_schedd_start_lateness_quantile_seconds",
            "The daemon's own start-lateness quantiles over its recent runs.",
            labels=["quantile"],
        )
        for quantile, key in (("0.5", "lateness_p50_ms"), ("0.99", "lateness_p99_ms")):
            value = _ms(status.get(key))
            if value is not None:
                quantiles.add_metric([quantile], value)
        yield quantiles
        info = GaugeMetricFamily(
            "nexus_schedd_info", "The daemon's version and node.", labels=["version", "node"]
        )
        info.add_metric([str(status.get("version", "")), str(status.get("node", ""))], 1.0)
        yield info


def render(run_metrics: RunMetrics, status: Mapping[str, Any] | None) -> bytes:
    """The text exposition of one scrape."""
    # A registry per scrape: the status gauges belong to this snapshot only, and no
    # process-wide default registry (a mutable module global) is involved.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    for collector in run_metrics.collectors():
        registry.register(collector)
    return generate_latest(registry)


def _gauge(name: str, documentation: str, value: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _ms(value: Any) -> float | None:
    return None if value is None else float(value) / 1000.0
