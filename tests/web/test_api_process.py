"""The API in the real ``nexus-schedweb`` process: the curl and PHP examples, TLS,
the refusal to serve tokens in clear beyond loopback, Server-Sent Events with
Last-Event-ID, and Idempotency-Key surviving restarts of both processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from nexus_schedd.client import Client
from tests.daemon.daemon_process import DaemonProcess, console_script
from tests.web.conftest import (
    ADMIN_TOKEN,
    EXEC_TOKEN,
    READ_TOKEN,
    SchedulerData,
    api_config_text,
    bearer,
    daemon_config,
)
from tests.web.web_process import WebProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "api"
IN_CI = bool(os.environ.get("CI"))


@pytest.fixture
def api_process(scheduler: SchedulerData, tmp_path: Path) -> Iterator[WebProcess]:
    config = '[web]\nlog_format = "json"\n' + api_config_text(tmp_path / "idempotency.db")
    process = WebProcess(tmp_path, scheduler.socket, config)
    process.start()
    yield process
    process.close()


def run_example(command: list[str], api_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NEXUS_API_URL": api_url,
        "NEXUS_API_TOKEN": ADMIN_TOKEN,
    }
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_the_curl_example_schedules_reads_back_and_lists_runs(api_process: WebProcess) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is missing") if IN_CI else pytest.skip("curl is missing")
    result = run_example(["sh", str(EXAMPLES / "curl.sh")], f"{api_process.url}/api/v1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP 201" in result.stdout  # the repeated request got the first reply
    assert '"outcome":"success"' in result.stdout and '"target_id":"invoice-42"' in result.stdout


def test_the_php_example_schedules_reads_back_and_lists_runs(api_process: WebProcess) -> None:
    php = shutil.which("php")
    if php is None:
        message = "php-cli is missing (apt-get install php-cli php-curl)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    result = run_example([php, str(EXAMPLES / "schedule.php")], f"{api_process.url}/api/v1")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0].startswith("scheduled job ") and "(HTTP 201, Location: /api/v1/jobs/" in lines[0]
    )
    assert "type=log target=invoice-42" in lines[1]
    assert lines[2] == "1 run(s):" and "outcome success" in lines[3]
    bad = run_example([php, str(EXAMPLES / "schedule.php")], "http://127.0.0.1:9/api/v1")
    assert bad.returncode == 1 and bad.stderr.startswith("error: cannot reach")


def test_events_stream_numbers_events_and_resumes_after_last_event_id(
    api_process: WebProcess,
) -> None:
    def read_events(
        headers: dict[str, str], wanted: int
    ) -> list[tuple[str, str, dict[str, object]]]:
        events: list[tuple[str, str, dict[str, object]]] = []
        with (
            httpx.Client(base_url=api_process.url, timeout=20) as http,
            http.stream("GET", "/api/v1/events", headers=headers) as stream,
        ):
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            ident = kind = ""
            for line in stream.iter_lines():
                if line.startswith("id: "):
                    ident = line[4:]
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((ident, kind, json.loads(line[6:])))
                    ident = ""
                    if len(events) >= wanted:
                        break
        return events

    # The every-second heartbeat job of the folder's daemon keeps events coming.
    first = read_events(bearer(READ_TOKEN), 4)
    changes = [event for event in first if event[1] != "daemon"]
    assert changes and all(event[0] for event in changes)
    kinds = {event[1] for event in changes}
    assert kinds <= {"job_added", "job_updated", "job_removed", "run_started", "run_finished"}
    # Full Varlink objects, not summaries.
    assert any("payload" in json.dumps(event[2]) for event in changes)
    resume_from = changes[0][0]
    resumed = read_events({**bearer(READ_TOKEN), "Last-Event-ID": resume_from}, 3)
    boot, _, seq = resume_from.partition("-")
    assert resumed[0][0] == f"{boot}-{int(seq) + 1}"  # nothing missed, nothing repeated
    unknown = read_events({**bearer(READ_TOKEN), "Last-Event-ID": "feedface-12"}, 1)
    assert unknown[0][1] == "reset" and "missed" in str(unknown[0][2]["reason"])


def test_a_confined_token_streams_only_its_job_types(
    api_process: WebProcess, scheduler: SchedulerData
) -> None:
    seen: list[dict[str, object]] = []
    with (
        httpx.Client(base_url=api_process.url, timeout=20) as http,
        http.stream("GET", "/api/v1/events", headers=bearer(EXEC_TOKEN)) as stream,
    ):
        assert stream.status_code == 200
        added = False
        for line in stream.iter_lines():
            if not added:
                # Subscribed (the first line arrived): now make an exec event happen.
                anyio.run(_add_exec_job, scheduler)
                added = True
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if "kind" in event:
                    seen.append(event)
                    run = event.get("run") or {}
                    if event["kind"] == "run_finished" and run.get("job_type") == "exec":
                        break
    types = {
        part["job_type"]
        for event in seen
        for part in (event.get("job"), event.get("run"))
        if isinstance(part, dict)
    }
    assert types == {"exec"}  # the every-second log heartbeat never shows


async def _add_exec_job(scheduler: SchedulerData) -> None:
    async with Client(scheduler.socket) as client:
        await client.add_job(
            {"job_type": "exec", "payload": {"argv": [scheduler.fail_script]}, "max_retries": 0}
        )


def test_idempotency_keys_survive_restarts_of_both_processes(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, daemon_config(tmp_path))
    daemon.start()
    database = tmp_path / "keys" / "idempotency.db"
    config = api_config_text(database)
    web = WebProcess(tmp_path, str(daemon.socket_path), config)
    spec = {"job_type": "log", "target_id": "restart", "run_at": "2031-01-01T00:00:00Z"}
    headers = {**bearer(ADMIN_TOKEN), "Idempotency-Key": "restart-key-1"}
    try:
        web.start()
        with httpx.Client(base_url=web.url, timeout=10) as http:
            first = http.post("/api/v1/jobs", json=spec, headers=headers)
            assert first.status_code == 201
        assert web.stop() == 0
        daemon.close()
        daemon = DaemonProcess(tmp_path, daemon_config(tmp_path))
        daemon.start()
        web = WebProcess(tmp_path, str(daemon.socket_path), config, port=web.port)
        web.start()
        with httpx.Client(base_url=web.url, timeout=10) as http:
            # Pooled connections to the daemon outlive a daemon restart: writes work.
            http.get("/api/v1/status", headers=bearer(ADMIN_TOKEN))
            daemon.close()
            daemon = DaemonProcess(tmp_path, daemon_config(tmp_path))
            daemon.write_config(daemon_config(tmp_path))
            daemon.socket_path = Path(web.daemon_socket)
            daemon.start()
            fresh = http.post(
                "/api/v1/jobs",
                json={**spec, "target_id": "after-restart"},
                headers=bearer(ADMIN_TOKEN),
            )
            assert fresh.status_code == 201, fresh.text
            again = http.post("/api/v1/jobs", json=spec, headers=headers)
            assert again.status_code == 201 and again.content == first.content
            assert again.headers["idempotent-replayed"] == "true"
            other = http.post("/api/v1/jobs", json={**spec, "priority": 2}, headers=headers)
            assert other.status_code == 422
            jobs = http.get(
                "/api/v1/jobs", params={"target_id": "restart"}, headers=bearer(ADMIN_TOKEN)
            )
            assert len(jobs.json()["jobs"]) == 1
        assert oct(database.stat().st_mode & 0o777) == "0o600"
    finally:
        web.close()
        daemon.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def test_tls_from_tls_cert_and_tls_key(scheduler: SchedulerData, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing")
    cert, key = _self_signed(tmp_path)
    config = f'[web]\ntls_cert = "{cert}"\ntls_key = "{key}"\n' + api_config_text(tmp_path / "i.db")
    web = WebProcess(tmp_path, scheduler.socket, config, tls_ca=cert)
    try:
        web.start()
        assert web.url.startswith("https://")
        with httpx.Client(base_url=web.url, timeout=10, verify=web.verify()) as http:
            status = http.get("/api/v1/status", headers=bearer(READ_TOKEN))
            assert status.status_code == 200 and "counts" in status.json()
        assert web.stop() == 0
    finally:
        web.close()


def _start_refused(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("nexus-schedweb"), "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_api_beyond_loopback_without_tls_is_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "web.toml"
    config.write_text('[web]\nlisten = "0.0.0.0:8470"\n' + api_config_text(tmp_path / "i.db"))
    result = _start_refused(config)
    assert result.returncode == 2
    assert "web.listen" in result.stderr and "allow_plain_http" in result.stderr
    config.write_text(api_config_text(tmp_path / "i.db"))
    result = _start_refused(config, "--listen", "[::]:8470")
    assert result.returncode == 2 and "allow_plain_http" in result.stderr


def test_a_bad_api_config_names_file_key_and_reason(tmp_path: Path) -> None:
    config = tmp_path / "web.toml"
    config.write_text('[api]\nenabled = true\n[[api.tokens]]\nname = "x"\nsha256 = "abc"\n')
    result = _start_refused(config)
    assert result.returncode == 2
    assert str(config) in result.stderr and "api.tokens[0].sha256" in result.stderr
    (tmp_path / "a-file").write_text("")
    config.write_text(api_config_text(tmp_path / "a-file" / "keys.db"))
    result = _start_refused(config)
    assert result.returncode == 2
    assert "api.idempotency_db" in result.stderr and "a-file" in result.stderr
