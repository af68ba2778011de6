"""Actions (pause, resume, trigger, cancel, requeue): off by default, then token + CSRF."""

from __future__ import annotations

import re

import httpx
import pytest

from nexus_schedd.client import Client
from nexus_schedd.web.config import WebConfig
from tests.web.conftest import (
    BASE_URL,
    TOKEN,
    SchedulerData,
    add_log_job,
    csrf_of,
    get_job,
    serve_in_process,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SAME_ORIGIN = {"Origin": BASE_URL}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def enabled(scheduler: SchedulerData, **options: object) -> WebConfig:
    return WebConfig(socket=scheduler.socket, actions_enabled=True, token=TOKEN, **options)  # type: ignore[arg-type]


async def csrf_for(http: httpx.AsyncClient, job_id: str) -> str:
    """Load the job page as a browser would: session cookie and the form's token."""
    return csrf_of((await http.get(f"/jobs/{job_id}")).text)


async def test_actions_are_refused_with_403_while_disabled(
    web: httpx.AsyncClient, scheduler: SchedulerData
) -> None:
    job = await add_log_job(scheduler.socket, "disabled-pause")
    csrf = await csrf_for(web, job.id)
    response = await web.post(
        f"/jobs/{job.id}/pause", data={"csrf": csrf}, headers={**SAME_ORIGIN, **BEARER}
    )
    assert response.status_code == 403
    assert "Actions are disabled" in response.text
    assert (await get_job(scheduler.socket, job.id)).status.value == "pending"


async def test_enabled_actions_without_credentials_get_401(scheduler: SchedulerData) -> None:
    job = await add_log_job(scheduler.socket, "anonymous-pause")
    async with serve_in_process(enabled(scheduler)) as http:
        csrf = await csrf_for(http, job.id)
        response = await http.post(
            f"/jobs/{job.id}/pause", data={"csrf": csrf}, headers=SAME_ORIGIN
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.post(
            f"/jobs/{job.id}/pause",
            data={"csrf": csrf},
            headers={**SAME_ORIGIN, "Authorization": "Bearer wrong-token"},
        )
        assert wrong.status_code == 401
    assert (await get_job(scheduler.socket, job.id)).status.value == "pending"


@pytest.mark.parametrize(
    ("csrf", "headers"),
    [
        ("", SAME_ORIGIN),
        ("forged", SAME_ORIGIN),
        (None, {"Origin": "http://evil.example"}),
        (None, {"Referer": "http://evil.example/page"}),
        (None, {}),
    ],
    ids=["missing-token", "forged-token", "foreign-origin", "foreign-referer", "no-origin"],
)
async def test_token_without_valid_csrf_is_refused_with_403(
    scheduler: SchedulerData, csrf: str | None, headers: dict[str, str]
) -> None:
    job = await add_log_job(scheduler.socket, "csrf-pause")
    async with serve_in_process(enabled(scheduler)) as http:
        real = await csrf_for(http, job.id)
        response = await http.post(
            f"/jobs/{job.id}/pause",
            data={"csrf": real if csrf is None else csrf},
            headers={**BEARER, **headers},
        )
        assert response.status_code == 403
        assert "CSRF" in response.text or "own pages" in response.text
    assert (await get_job(scheduler.socket, job.id)).status.value == "pending"


async def test_csrf_token_of_another_session_is_refused(scheduler: SchedulerData) -> None:
    job = await add_log_job(scheduler.socket, "other-session-pause")
    async with serve_in_process(enabled(scheduler)) as http:
        stolen = await csrf_for(http, job.id)
        http.cookies.clear()
        await csrf_for(http, job.id)  # a new session
        response = await http.post(
            f"/jobs/{job.id}/pause", data={"csrf": stolen}, headers={**SAME_ORIGIN, **BEARER}
        )
        assert response.status_code == 403
    assert (await get_job(scheduler.socket, job.id)).status.value == "pending"


async def test_token_and_csrf_pause_resume_trigger_and_cancel_the_job(
    scheduler: SchedulerData,
) -> None:
    job = await add_log_job(scheduler.socket, "guarded-job")
    async with serve_in_process(enabled(scheduler)) as http:
        csrf = await csrf_for(http, job.id)
        for action, status in (("pause", "paused"), ("resume", "pending"), ("trigger", None)):
            response = await http.post(
                f"/jobs/{job.id}/{action}", data={"csrf": csrf}, headers={**SAME_ORIGIN, **BEARER}
            )
            assert response.status_code == 303, response.text
            assert response.headers["location"] == f"/jobs/{job.id}?done={action}"
            if status is not None:
                assert (await get_job(scheduler.socket, job.id)).status.value == status
        page = await http.get(f"/jobs/{job.id}?done=trigger")
        assert "Job triggered." in page.text
        cancel = await http.post(
            f"/jobs/{job.id}/cancel", headers={**SAME_ORIGIN, **BEARER, "X-CSRF-Token": csrf}
        )
        assert cancel.status_code == 303
    assert (await get_job(scheduler.socket, job.id)).status.value == "canceled"


async def test_login_form_sets_a_cookie_that_authorises_actions(scheduler: SchedulerData) -> None:
    job = await add_log_job(scheduler.socket, "login-pause")
    async with serve_in_process(enabled(scheduler)) as http:
        login_page = await http.get("/login", params={"next": f"/jobs/{job.id}"})
        csrf = csrf_of(login_page.text)
        bad = await http.post(
            "/login", data={"csrf": csrf, "token": "nope", "next": "/"}, headers=SAME_ORIGIN
        )
        assert bad.status_code == 401 and "not valid" in bad.text
        good = await http.post(
            "/login",
            data={"csrf": csrf, "token": TOKEN, "next": f"/jobs/{job.id}"},
            headers=SAME_ORIGIN,
        )
        assert good.status_code == 303 and good.headers["location"] == f"/jobs/{job.id}"
        assert "nexus_auth" in http.cookies
        paused = await http.post(f"/jobs/{job.id}/pause", data={"csrf": csrf}, headers=SAME_ORIGIN)
        assert paused.status_code == 303
        assert (await get_job(scheduler.socket, job.id)).status.value == "paused"
        # Logging out ends it.
        await http.post("/logout", data={"csrf": csrf}, headers=SAME_ORIGIN)
        again = await http.post(f"/jobs/{job.id}/resume", data={"csrf": csrf}, headers=SAME_ORIGIN)
        assert again.status_code == 401


async def test_login_redirects_only_to_local_paths(scheduler: SchedulerData) -> None:
    async with serve_in_process(enabled(scheduler)) as http:
        csrf = csrf_of((await http.get("/login")).text)
        response = await http.post(
            "/login",
            data={"csrf": csrf, "token": TOKEN, "next": "//evil.example/x"},
            headers=SAME_ORIGIN,
        )
        assert response.status_code == 303 and response.headers["location"] == "/"


async def test_trusted_proxy_header_authorises_actions(scheduler: SchedulerData) -> None:
    job = await add_log_job(scheduler.socket, "proxy-pause")
    config = WebConfig(
        socket=scheduler.socket, actions_enabled=True, trust_proxy_header="X-Remote-User"
    )
    async with serve_in_process(config) as http:
        csrf = await csrf_for(http, job.id)
        anonymous = await http.post(
            f"/jobs/{job.id}/pause", data={"csrf": csrf}, headers=SAME_ORIGIN
        )
        assert anonymous.status_code == 401
        response = await http.post(
            f"/jobs/{job.id}/pause",
            data={"csrf": csrf},
            headers={**SAME_ORIGIN, "X-Remote-User": "alice"},
        )
        assert response.status_code == 303
    assert (await get_job(scheduler.socket, job.id)).status.value == "paused"


async def test_action_on_unknown_job_or_in_wrong_state_gets_404_and_409(
    scheduler: SchedulerData,
) -> None:
    async with serve_in_process(enabled(scheduler)) as http:
        csrf = await csrf_for(http, scheduler.broken.id)
        headers = {**SAME_ORIGIN, **BEARER}
        missing = await http.post("/jobs/no-such-job/pause", data={"csrf": csrf}, headers=headers)
        assert missing.status_code == 404
        final = await http.post(
            f"/jobs/{scheduler.broken.id}/pause", data={"csrf": csrf}, headers=headers
        )
        assert final.status_code == 409 and "failed_permanent" in final.text
        unknown = await http.post(
            f"/jobs/{scheduler.broken.id}/explode", data={"csrf": csrf}, headers=headers
        )
        assert unknown.status_code == 404
        oversized = await http.post(
            f"/jobs/{scheduler.broken.id}/pause", data={"csrf": "x" * 20000}, headers=headers
        )
        assert oversized.status_code == 413


async def test_actions_are_not_possible_with_get(web: httpx.AsyncClient) -> None:
    response = await web.get("/jobs/heartbeat/pause")
    assert response.status_code in (404, 405)


async def test_requeue_from_the_job_page_and_the_failed_runs_list(
    scheduler: SchedulerData,
) -> None:
    job = await add_log_job(scheduler.socket, "requeue-from-dashboard")
    async with Client(scheduler.socket) as client:
        await client.cancel_job(job.id)
    async with serve_in_process(enabled(scheduler)) as http:
        page = await http.get(f"/jobs/{job.id}", headers=BEARER)
        button = re.search(r'<button[^>]*id="action-requeue"[^>]*>', page.text)
        assert button is not None and "disabled" not in button.group(0)
        csrf = csrf_of(page.text)
        response = await http.post(
            f"/jobs/{job.id}/requeue", data={"csrf": csrf}, headers={**SAME_ORIGIN, **BEARER}
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == f"/jobs/{job.id}?done=requeue"
        back = await get_job(scheduler.socket, job.id)
        assert back.status.value == "pending"
        assert back.run_at == job.run_at  # canceled before its first run: that one again
        assert "Job requeued." in (await http.get(f"/jobs/{job.id}?done=requeue")).text

        # The failed-runs list offers it for a failed_permanent job, to a logged-in user.
        form = f'action="/jobs/{scheduler.broken.id}/requeue"'
        runs = await http.get("/runs", params={"outcome": "failure"}, headers=BEARER)
        assert form in runs.text
        anonymous = await http.get("/runs", params={"outcome": "failure"})
        assert form not in anonymous.text
    assert (await get_job(scheduler.socket, scheduler.broken.id)).status.value == (
        "failed_permanent"
    )
