"""Bad input and security: each refusal has the status of SPEC 13, a problem+json
body, never a traceback or a 500, and changes nothing in the daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from nexus_schedd.client import Client
from nexus_schedd.web.config import WebConfig
from tests.web.conftest import (
    ADMIN_TOKEN,
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


async def job_state(socket: str, ref: str) -> dict[str, Any]:
    async with Client(socket) as client:
        job: dict[str, Any] = (await client.call("GetJob", {"id": ref}))["job"]
        return job


async def jobs_for_target(socket: str, target: str) -> list[dict[str, Any]]:
    async with Client(socket) as client:
        jobs: list[dict[str, Any]] = (await client.call("ListJobs", {"target_id": target}))["jobs"]
        return jobs


@pytest.fixture
async def anonymous(scheduler: SchedulerData, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API with no token attached to requests (each test sets its own)."""
    config = api_web_config(scheduler.socket, tmp_path / "i.db", max_body_bytes=4096)
    async with serve_in_process(config) as http:
        yield http


async def test_no_token_is_401_with_a_bearer_challenge(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    for method, path in (
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/events"),
    ):
        response = await anonymous.request(method, path)
        assert_problem(response, 401, "Unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    added = await anonymous.post(
        "/api/v1/jobs", json={"job_type": "log", "target_id": "sec-none", "run_at": LATER}
    )
    assert_problem(added, 401, "Unauthorized")
    assert await jobs_for_target(scheduler.socket, "sec-none") == []


async def test_a_wrong_token_is_401_and_changes_nothing(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    job = await add_log_job(scheduler.socket, "sec-wrong-token")
    before = await job_state(scheduler.socket, job.id)
    for header in (f"Bearer {ADMIN_TOKEN}x", "Bearer ", f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN):
        response = await anonymous.post(
            f"/api/v1/jobs/{job.id}/pause", headers={"Authorization": header}
        )
        assert_problem(response, 401, "Unauthorized")
        assert "Bearer" in response.headers["www-authenticate"]
    assert await job_state(scheduler.socket, job.id) == before


async def test_a_read_token_on_a_write_is_403_and_changes_nothing(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    job = await add_log_job(scheduler.socket, "sec-read-token")
    before = await job_state(scheduler.socket, job.id)
    headers = bearer(READ_TOKEN)
    assert (await anonymous.get(f"/api/v1/jobs/{job.id}", headers=headers)).status_code == 200
    for action in ("cancel", "pause", "trigger", "reschedule", "requeue", "backfill"):
        response = await anonymous.post(f"/api/v1/jobs/{job.id}/{action}", headers=headers, json={})
        assert_problem(response, 403, "PermissionDenied")
    bulk = await anonymous.post("/api/v1/jobs/requeue", headers=headers, json={"all": True})
    assert_problem(bulk, 403, "PermissionDenied")
    added = await anonymous.post(
        "/api/v1/jobs",
        headers=headers,
        json={"job_type": "log", "target_id": "sec-read", "run_at": LATER},
    )
    assert_problem(added, 403, "PermissionDenied")
    assert await job_state(scheduler.socket, job.id) == before
    assert await jobs_for_target(scheduler.socket, "sec-read") == []


async def test_a_confined_token_gets_404_for_other_job_types_as_if_absent(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    job = await add_log_job(scheduler.socket, "sec-confined")
    before = await job_state(scheduler.socket, job.id)
    headers = bearer(EXEC_TOKEN)
    absent = await anonymous.get("/api/v1/jobs/no-such-job-at-all", headers=headers)
    hidden = await anonymous.get(f"/api/v1/jobs/{job.id}", headers=headers)
    assert_problem(hidden, 404, "io.nexus.Scheduler.JobNotFound")
    assert hidden.json()["title"] == absent.json()["title"]
    for action in ("pause", "cancel", "trigger", "requeue"):
        response = await anonymous.post(f"/api/v1/jobs/{job.id}/{action}", headers=headers)
        assert_problem(response, 404, "JobNotFound")
    runs = await anonymous.get("/api/v1/runs", params={"job_id": "heartbeat"}, headers=headers)
    assert_problem(runs, 404, "JobNotFound")
    # A bulk requeue must name a job type the token may touch.
    unnamed = await anonymous.post("/api/v1/jobs/requeue", headers=headers, json={"all": True})
    assert_problem(unnamed, 400, "InvalidSpec")
    assert unnamed.json()["field"] == "job_type"
    other = await anonymous.post("/api/v1/jobs/requeue", headers=headers, json={"job_type": "log"})
    assert_problem(other, 400, "UnknownJobType")  # as if the type did not exist
    listed = await anonymous.get("/api/v1/jobs", params={"job_type": "log"}, headers=headers)
    assert listed.json() == {"jobs": [], "next_cursor": None}
    added = await anonymous.post(
        "/api/v1/jobs",
        headers=headers,
        json={"job_type": "log", "target_id": "sec-confined", "run_at": LATER},
    )
    assert_problem(added, 400, "UnknownJobType")
    batch = await anonymous.post(
        "/api/v1/jobs/batch",
        headers=headers,
        json={"jobs": [{"job_type": "log", "target_id": "sec-confined", "run_at": LATER}]},
    )
    assert_problem(batch, 400, "UnknownJobType")
    assert await job_state(scheduler.socket, job.id) == before
    assert await jobs_for_target(scheduler.socket, "sec-confined") == []


async def test_a_token_in_the_url_is_refused_outside_the_calendar(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    for path in ("/api/v1/status", "/api/v1/jobs", "/api/v1/events"):
        response = await anonymous.get(path, params={"token": ADMIN_TOKEN})
        assert_problem(response, 400, "TokenInURL")
    # Even next to a valid header: a token in a URL leaks into logs, so it is refused.
    added = await anonymous.post(
        "/api/v1/jobs",
        params={"token": ADMIN_TOKEN},
        headers=bearer(ADMIN_TOKEN),
        json={"job_type": "log", "target_id": "sec-url", "run_at": LATER},
    )
    assert_problem(added, 400, "TokenInURL")
    assert await jobs_for_target(scheduler.socket, "sec-url") == []


async def test_a_body_over_max_body_bytes_is_413(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    spec = {"job_type": "log", "target_id": "sec-big", "payload": {"x": "y" * 5000}}
    response = await anonymous.post("/api/v1/jobs", json=spec, headers=bearer(ADMIN_TOKEN))
    assert_problem(response, 413, "PayloadTooLarge")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"job_type": "log", "target_id": "sec-big", "payload": {"x": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}'

    chunked = await anonymous.post(
        "/api/v1/jobs",
        content=chunks(),
        headers={**bearer(ADMIN_TOKEN), "Content-Type": "application/json"},
    )
    assert_problem(chunked, 413, "PayloadTooLarge")
    assert await jobs_for_target(scheduler.socket, "sec-big") == []


async def test_a_body_that_is_not_json_is_415(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    body = '{"job_type": "log", "target_id": "sec-415"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = await anonymous.post(
            "/api/v1/jobs",
            content=body,
            headers={**bearer(ADMIN_TOKEN), "Content-Type": content_type},
        )
        assert_problem(response, 415, "UnsupportedMediaType")
    assert await jobs_for_target(scheduler.socket, "sec-415") == []


@pytest.mark.parametrize(
    "body",
    [b"{", b"[1, 2]", b'"text"', b'{"job_type": NaN}', b"\xff\xfe", b"{" * 5000 + b"}" * 5000],
    ids=["truncated", "array", "string", "nan", "not-utf8", "deep"],
)
async def test_invalid_json_is_400(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData, body: bytes
) -> None:
    response = await anonymous.post(
        "/api/v1/jobs",
        content=body,
        headers={**bearer(ADMIN_TOKEN), "Content-Type": "application/json"},
    )
    if response.status_code == 413:
        return  # the deep one may be over the 4 KiB limit of this fixture
    assert_problem(response, 400, "InvalidSpec")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"recurrence": {"kind": "cron", "cron": "61 * * * *"}}, "recurrence"),
        ({"recurrence": {"kind": "cron", "cron": "0 0 30 2 *"}}, "recurrence"),
        ({"recurrence": {"kind": "daily", "timezone": "Mars/Olympus"}}, "timezone"),
        ({"run_at": "tomorrow-ish"}, "run_at"),
        ({"payload": [1, 2]}, "payload"),
        ({"priority": "high"}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"colour": "blue"}, "colour"),
        ({"job_type": "no_such_handler"}, ""),
    ],
    ids=[
        "cron",
        "never-fires",
        "zone",
        "time",
        "payload",
        "priority",
        "retries",
        "unknown",
        "type",
    ],
)
async def test_invalid_specs_are_400_with_field_and_reason(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData, spec: dict[str, Any], field: str
) -> None:
    body = {"job_type": "log", "target_id": "sec-spec", **spec}
    response = await anonymous.post("/api/v1/jobs", json=body, headers=bearer(ADMIN_TOKEN))
    if body["job_type"] == "no_such_handler":
        assert_problem(response, 400, "io.nexus.Scheduler.UnknownJobType")
    else:
        problem = assert_problem(response, 400, "io.nexus.Scheduler.InvalidSpec")
        assert field in problem["field"] and problem["reason"], problem
    assert await jobs_for_target(scheduler.socket, "sec-spec") == []


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "lots"},
        {"status": "sleeping"},
        {"overdue": "maybe"},
        {"colour": "blue"},
        {"cursor": "x" * 2000},
    ],
)
async def test_invalid_queries_are_400(anonymous: httpx.AsyncClient, query: dict[str, str]) -> None:
    response = await anonymous.get("/api/v1/jobs", params=query, headers=bearer(READ_TOKEN))
    problem = assert_problem(response, 400, "InvalidSpec")
    assert problem["field"] == next(iter(query))


async def test_a_garbage_cursor_is_400_not_500(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get(
        "/api/v1/jobs", params={"cursor": "garbage!"}, headers=bearer(READ_TOKEN)
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_ids_are_404(anonymous: httpx.AsyncClient) -> None:
    headers = bearer(ADMIN_TOKEN)
    assert_problem(await anonymous.get("/api/v1/jobs/nope", headers=headers), 404, "JobNotFound")
    for action in ("cancel", "pause", "resume", "trigger", "reschedule"):
        body = {"run_at": LATER} if action == "reschedule" else {}
        response = await anonymous.post(f"/api/v1/jobs/nope/{action}", headers=headers, json=body)
        assert_problem(response, 404, "JobNotFound")
    runs = await anonymous.get("/api/v1/runs", params={"job_id": "nope"}, headers=headers)
    assert_problem(runs, 404, "JobNotFound")
    route = await anonymous.get("/api/v1/nothing-here", headers=headers)
    assert_problem(route, 404, "NotFound")
    method = await anonymous.delete("/api/v1/jobs", headers=headers)
    assert_problem(method, 405, "MethodNotAllowed")


async def test_invalid_state_changes_are_409_and_change_nothing(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    job = await add_log_job(scheduler.socket, "sec-state")
    before = await job_state(scheduler.socket, job.id)
    resumed = await anonymous.post(f"/api/v1/jobs/{job.id}/resume", headers=bearer(ADMIN_TOKEN))
    problem = assert_problem(resumed, 409, "io.nexus.Scheduler.InvalidJobState")
    assert problem["job_status"] == "pending"
    assert await job_state(scheduler.socket, job.id) == before
    done = await add_log_job(scheduler.socket, "sec-state-final")
    await anonymous.post(f"/api/v1/jobs/{done.id}/cancel", headers=bearer(ADMIN_TOKEN))
    canceled = await job_state(scheduler.socket, done.id)
    again = await anonymous.post(f"/api/v1/jobs/{done.id}/pause", headers=bearer(ADMIN_TOKEN))
    assert_problem(again, 409, "InvalidJobState")
    assert await job_state(scheduler.socket, done.id) == canceled


async def test_an_idempotency_key_replays_the_first_reply_and_refuses_another_body(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    headers = {**bearer(ADMIN_TOKEN), "Idempotency-Key": "sec-key-1"}
    spec = {"job_type": "log", "target_id": "sec-idem", "run_at": LATER}
    first = await anonymous.post("/api/v1/jobs", json=spec, headers=headers)
    again = await anonymous.post("/api/v1/jobs", json=spec, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    other = await anonymous.post("/api/v1/jobs", json={**spec, "priority": 3}, headers=headers)
    assert_problem(other, 422, "IdempotencyKeyReused")
    assert len(await jobs_for_target(scheduler.socket, "sec-idem")) == 1
    bad_key = await anonymous.post(
        "/api/v1/jobs", json=spec, headers={**headers, "Idempotency-Key": "a b"}
    )
    assert_problem(bad_key, 400, "InvalidSpec")


async def test_concurrent_duplicates_of_one_key_do_the_work_once(
    anonymous: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    headers = {**bearer(ADMIN_TOKEN), "Idempotency-Key": "sec-key-concurrent"}
    spec = {"job_type": "log", "target_id": "sec-idem-concurrent", "run_at": LATER}
    replies: list[httpx.Response] = []

    async def post() -> None:
        replies.append(await anonymous.post("/api/v1/jobs", json=spec, headers=headers))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(post)
    assert {reply.status_code for reply in replies} == {201}
    assert len({reply.content for reply in replies}) == 1
    assert len(await jobs_for_target(scheduler.socket, "sec-idem-concurrent")) == 1


async def test_a_daemon_that_is_down_is_503_with_retry_after(tmp_path: Path) -> None:
    config = api_web_config(str(tmp_path / "no-daemon.sock"), tmp_path / "i.db")
    async with serve_in_process(config) as http:
        http.headers.update(bearer(ADMIN_TOKEN))
        for method, path in (
            ("GET", "/api/v1/status"),
            ("GET", "/api/v1/jobs/x"),
            ("GET", "/api/v1/events"),
        ):
            response = await http.request(method, path)
            assert_problem(response, 503, "DaemonUnreachable")
            assert response.headers["retry-after"]
        keyed = {"Idempotency-Key": "down-1"}
        spec = {"job_type": "log"}
        down = await http.post("/api/v1/jobs", json=spec, headers=keyed)
        assert_problem(down, 503, "DaemonUnreachable")
        # Nothing was done, so the key was not kept: another body is not a conflict.
        retried = await http.post("/api/v1/jobs", json={**spec, "priority": 1}, headers=keyed)
        assert_problem(retried, 503, "DaemonUnreachable")


async def test_problem_types_end_with_the_varlink_error_name(
    anonymous: httpx.AsyncClient,
) -> None:
    response = await anonymous.get("/api/v1/jobs/nope", headers=bearer(READ_TOKEN))
    assert response.json()["type"].endswith("/io.nexus.Scheduler.JobNotFound") or response.json()[
        "type"
    ].endswith(":io.nexus.Scheduler.JobNotFound")
    assert WebConfig().api.enabled is False
