"""The JSON API's routes, in-process (httpx on the ASGI app) against the real daemon."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route

from nexus_schedd.client import Client
from nexus_schedd.clock import SystemClock
from nexus_schedd.model.times import format_instant
from nexus_schedd.web.api import OPERATIONS, Api
from nexus_schedd.web.app import Dashboard
from nexus_schedd.web.config import WebConfig
from tests.web.conftest import (
    EXEC_TOKEN,
    READ_TOKEN,
    SchedulerData,
    add_log_job,
    api_web_config,
    assert_problem,
    bearer,
    serve_in_process,
)

pytestmark = pytest.mark.anyio

LATER = "2031-01-01T00:00:00Z"


async def test_add_returns_201_with_location_and_the_varlink_job_object(
    api: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    spec = {"job_type": "log", "target_id": "api-add", "run_at": LATER, "payload": {"a": 1}}
    response = await api.post("/api/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    async with Client(scheduler.socket) as client:
        varlink = await client.call("GetJob", {"id": job["id"]})
    assert job == varlink["job"]
    read_back = await api.get(response.headers["location"])
    assert read_back.status_code == 200 and read_back.json() == job


async def test_an_equal_named_add_returns_200_with_the_existing_job(
    api: httpx.AsyncClient,
) -> None:
    spec = {"job_type": "log", "name": "api-named", "run_at": LATER}
    first = await api.post("/api/v1/jobs", json=spec)
    again = await api.post("/api/v1/jobs", json=spec)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await api.post("/api/v1/jobs", json={**spec, "priority": 5})
    body = assert_problem(other, 409, "io.nexus.Scheduler.JobExists")
    assert body["id"] == first.json()["id"]


async def test_batch_adds_all_or_nothing(api: httpx.AsyncClient) -> None:
    good = {"job_type": "log", "target_id": "api-batch", "run_at": LATER}
    added = await api.post("/api/v1/jobs/batch", json={"jobs": [good, good]})
    assert added.status_code == 200 and len(added.json()["jobs"]) == 2
    bad = await api.post(
        "/api/v1/jobs/batch",
        json={"jobs": [{**good, "target_id": "api-batch-bad"}, {**good, "misfire": "never"}]},
    )
    body = assert_problem(bad, 400, "InvalidSpec")
    assert body["field"].startswith("misfire") or "jobs[1]" in body["field"]
    page = await api.get("/api/v1/jobs", params={"target_id": "api-batch-bad"})
    assert page.json() == {"jobs": [], "next_cursor": None}


async def test_the_traceparent_header_becomes_the_jobs_trace_context(
    api: httpx.AsyncClient,
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    spec = {"job_type": "log", "target_id": "api-traced", "run_at": LATER}
    headers = {"traceparent": traceparent, "tracestate": "vendor=opaque"}
    one = await api.post("/api/v1/jobs", json=spec, headers=headers)
    assert one.status_code == 201, one.text
    assert one.json()["trace_context"] == headers
    batch = await api.post("/api/v1/jobs/batch", json={"jobs": [spec]}, headers=headers)
    assert batch.status_code == 200, batch.text
    assert batch.json()["jobs"][0]["trace_context"] == headers
    # A malformed traceparent is ignored, as the W3C asks of a receiver (and its
    # tracestate with it): the job is added without a trace context.
    bad = await api.post(
        "/api/v1/jobs", json=spec, headers={"traceparent": "00-xyz", "tracestate": "a=b"}
    )
    assert bad.status_code == 201, bad.text
    assert bad.json().get("trace_context") is None
    document = (await api.get("/api/v1/openapi.json")).json()
    for path in ("/api/v1/jobs", "/api/v1/jobs/batch"):
        names = {p["name"] for p in document["paths"][path]["post"]["parameters"]}
        assert {"traceparent", "tracestate"} <= names


async def test_list_pages_with_cursor_and_filters(api: httpx.AsyncClient) -> None:
    specs = [{"job_type": "log", "target_id": "api-pages", "run_at": LATER}] * 5
    await api.post("/api/v1/jobs/batch", json={"jobs": specs})
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"target_id": "api-pages", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/api/v1/jobs", params=params)).json()
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5 and pages == 3
    pending = await api.get(
        "/api/v1/jobs", params=[("status", "pending"), ("status", "paused"), ("job_type", "log")]
    )
    assert pending.status_code == 200
    assert {job["status"] for job in pending.json()["jobs"]} <= {"pending", "paused"}


async def test_actions_change_state_and_reschedule_takes_varlink_parameters(
    api: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    job = await add_log_job(scheduler.socket, "api-actions")
    paused = await api.post(f"/api/v1/jobs/{job.id}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    until = await api.post(f"/api/v1/jobs/{job.id}/pause", json={"until": "2030-12-31T00:00:00Z"})
    assert until.status_code == 200 and until.json()["paused_until"].startswith("2030-12-31")
    past = await api.post(f"/api/v1/jobs/{job.id}/pause", json={"until": "2001-01-01T00:00:00Z"})
    assert_problem(past, 400, "InvalidSpec")
    resumed = await api.post("/api/v1/jobs/api-actions/resume", json={})
    assert resumed.json()["status"] == "pending"
    moved = await api.post(
        f"/api/v1/jobs/{job.id}/reschedule", json={"run_at": "2032-02-02T10:00:00Z"}
    )
    assert moved.status_code == 200 and moved.json()["run_at"].startswith("2032-02-02T10:00")
    canceled = await api.post(f"/api/v1/jobs/{job.id}/cancel")
    assert canceled.json()["status"] == "canceled"


async def test_backfill_queues_one_run_per_occurrence_and_names_bad_input(
    api: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    job = await add_log_job(scheduler.socket, "api-backfill", run_at="2025-01-01T00:00:00Z")
    url = f"/api/v1/jobs/{job.id}/backfill"
    done = await api.post(url, json={"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T03:00"})
    assert done.status_code == 200, done.text
    reply = done.json()
    assert (reply["count"], reply["already_queued"]) == (3, 0)
    assert (reply["first"], reply["last"]) == (
        "2025-01-01T00:00:00+00:00",
        "2025-01-01T02:00:00+00:00",
    )
    added = (await api.get(f"/api/v1/jobs/{reply['ids'][-1]}")).json()
    assert added["backfill_of"] == {"job_id": job.id, "occurrence": 2}
    assert added["scheduled_for"] == "2025-01-01T02:00:00+00:00"
    backwards = await api.post(url, json={"from": "2025-01-02T00:00Z", "to": "2025-01-01T00:00Z"})
    assert_problem(backwards, 400, "InvalidSpec")
    assert backwards.json()["field"] == "to"
    missing = await api.post(url, json={"from": "2025-01-01T00:00Z"})
    assert missing.status_code == 400
    day = {"from": "2025-01-01T00:00Z", "to": "2025-01-02T00:00Z"}
    one_shot = await api.post(f"/api/v1/jobs/{reply['ids'][0]}/backfill", json=day)
    assert_problem(one_shot, 400, "InvalidSpec")
    assert one_shot.json()["field"] == "id"


async def test_requeue_one_and_in_bulk(api: httpx.AsyncClient, scheduler: SchedulerData) -> None:
    job = await add_log_job(scheduler.socket, "api-requeue", target_id="api-requeue")
    pending = await api.post(f"/api/v1/jobs/{job.id}/requeue")
    assert_problem(pending, 409, "InvalidJobState")
    await api.post(f"/api/v1/jobs/{job.id}/cancel")
    back = await api.post(f"/api/v1/jobs/{job.id}/requeue", json={"run_at": "2041-01-01T00:00:00Z"})
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "pending"
    assert back.json()["run_at"].startswith("2041-01-01T00:00:00")
    await api.post(f"/api/v1/jobs/{job.id}/cancel")
    unfiltered = await api.post("/api/v1/jobs/requeue", json={})
    assert_problem(unfiltered, 400, "InvalidSpec")
    assert unfiltered.json()["field"] == "all"
    bulk = await api.post(
        "/api/v1/jobs/requeue", json={"status": ["canceled"], "target_id": "api-requeue"}
    )
    assert bulk.status_code == 200, bulk.text
    assert bulk.json() == {"count": 1, "ids": [job.id], "skipped": [], "more": False}


async def test_runs_status_preview_and_calendar(
    api: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    runs = await api.get("/api/v1/runs", params={"job_id": "heartbeat", "limit": 2})
    assert runs.status_code == 200
    page = runs.json()
    assert len(page["runs"]) == 2 and {run["job_id"] for run in page["runs"]} == {
        scheduler.heartbeat.id
    }
    failed = await api.get("/api/v1/runs", params={"outcome": "failure"})
    assert any(run["job_id"] == scheduler.broken.id for run in failed.json()["runs"])
    status = (await api.get("/api/v1/status")).json()
    assert set(status["counts"]) >= {"pending", "failed_permanent"}
    preview = await api.get(
        "/api/v1/preview",
        params={"cron": "30 2 * * *", "tz": "Europe/Berlin", "from": "2025-03-29T00:00:00+01:00"},
    )
    assert preview.json()["occurrences"][:2] == [
        "2025-03-29T02:30:00+01:00",
        "2025-03-30T03:00:00+02:00",
    ]
    every = await api.get("/api/v1/preview", params={"every": "2 hour", "count": 3})
    assert len(every.json()["occurrences"]) == 3
    calendar = await api.get("/api/v1/calendar.ics", params={"days": 2})
    assert calendar.headers["content-type"].startswith("text/calendar")
    assert "BEGIN:VCALENDAR" in calendar.text and "nightly-report" in calendar.text


async def test_preview_leaves_out_the_dates_of_an_exclusion_calendar(
    api: httpx.AsyncClient,
) -> None:
    query = {"every": "1 day", "tz": "UTC", "from": "2031-01-02T09:00:00Z", "count": 2}
    preview = await api.get("/api/v1/preview", params={**query, "exclude": "closed"})
    assert preview.status_code == 200, preview.text
    assert preview.json()["occurrences"] == [
        "2031-01-02T09:00:00+00:00",
        "2031-01-04T09:00:00+00:00",
    ]
    unknown = await api.get("/api/v1/preview", params={**query, "exclude": "nope"})
    problem = assert_problem(unknown, 400, "InvalidSpec")
    assert problem["field"] == "exclude" and "'nope'" in problem["reason"]


async def test_calendar_accepts_the_read_token_in_the_url(
    scheduler: SchedulerData, tmp_path: Path
) -> None:
    async with serve_in_process(api_web_config(scheduler.socket, tmp_path / "i.db")) as http:
        response = await http.get("/api/v1/calendar.ics", params={"token": READ_TOKEN})
        assert response.status_code == 200 and "BEGIN:VCALENDAR" in response.text
        wrong = await http.get("/api/v1/calendar.ics", params={"token": "nope-nope-nope"})
        assert_problem(wrong, 401, "Unauthorized")


async def test_a_confined_token_sees_only_its_job_types(
    scheduler: SchedulerData, tmp_path: Path
) -> None:
    async with Client(scheduler.socket) as client:
        await client.add_job(
            {
                "job_type": "exec",
                "name": "api-confined-exec",
                "run_at": format_instant(SystemClock().now() + timedelta(days=10)),
                "payload": {"argv": [scheduler.fail_script]},
            }
        )
    async with serve_in_process(api_web_config(scheduler.socket, tmp_path / "i.db")) as http:
        http.headers.update(bearer(EXEC_TOKEN))
        jobs = (await http.get("/api/v1/jobs", params={"limit": 1000})).json()["jobs"]
        assert jobs and {job["job_type"] for job in jobs} == {"exec"}
        mine = await http.get(f"/api/v1/jobs/{scheduler.broken.id}")
        assert mine.status_code == 200
        runs = (await http.get("/api/v1/runs")).json()["runs"]
        assert {run["job_type"] for run in runs} == {"exec"}
        calendar = await http.get("/api/v1/calendar.ics", params={"days": 366})
        assert "api-confined-exec" in calendar.text and "nightly-report" not in calendar.text


async def test_openapi_describes_every_route_of_the_app(
    scheduler: SchedulerData, tmp_path: Path
) -> None:
    """The document is built from the route table; this checks it against the app."""
    dashboard = Dashboard(api_web_config(scheduler.socket, tmp_path / "i.db"))
    app = dashboard.asgi()
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/api/v1")
    served = {
        (method, "/api/v1" + route.path.replace(":str", ""))
        for route in mount.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    async with serve_in_process(api_web_config(scheduler.socket, tmp_path / "j.db")) as http:
        document = (await http.get("/api/v1/openapi.json")).json()
    described = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert served == described
    assert len(described) == len(OPERATIONS)
    spec_routes = {
        ("GET", "/api/v1/status"),
        ("POST", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs/batch"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/{ref}"),
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/preview"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/calendar.ics"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/jobs/requeue"),
        *(
            ("POST", f"/api/v1/jobs/{{ref}}/{action}")
            for action in (
                "cancel",
                "pause",
                "resume",
                "trigger",
                "requeue",
                "reschedule",
                "backfill",
            )
        ),
    }
    assert spec_routes == described
    assert document["openapi"].startswith("3.1")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            if path != "/api/v1/openapi.json":
                assert {"401", "503"} <= set(operation["responses"]), (method, path)
    json.dumps(document)  # plain JSON


async def test_an_unexpected_error_is_a_plain_500_problem(
    scheduler: SchedulerData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: object, call: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Api, "status", broken)
    async with serve_in_process(api_web_config(scheduler.socket, tmp_path / "i.db")) as http:
        response = await http.get("/api/v1/status", headers=bearer(READ_TOKEN))
    body = assert_problem(response, 500, "io.nexus.Scheduler.InternalError")
    assert "secret internals" not in response.text and "Traceback" not in body["detail"]


async def test_the_api_is_off_unless_enabled(web: httpx.AsyncClient) -> None:
    response = await web.get("/api/v1/status", headers=bearer(READ_TOKEN))
    assert response.status_code == 404
    assert WebConfig().api.enabled is False
