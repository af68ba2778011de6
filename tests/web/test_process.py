"""The real ``nexus-schedweb`` console script on a loopback port."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.daemon.daemon_process import DaemonProcess, console_script
from tests.web.conftest import SchedulerData, daemon_config
from tests.web.web_process import WebProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture
def web_process(scheduler: SchedulerData, tmp_path: Path) -> Iterator[WebProcess]:
    process = WebProcess(tmp_path, scheduler.socket, '[web]\nlog_format = "json"\n')
    process.start()
    yield process
    process.close()


def test_real_process_serves_pages_metrics_and_stops_cleanly_on_sigterm(
    web_process: WebProcess,
) -> None:
    with httpx.Client(base_url=web_process.url, timeout=10) as http:
        overview = http.get("/")
        assert overview.status_code == 200 and "heartbeat" in http.get("/jobs").text
        assert http.get("/timeline").status_code == 200
        assert "nexus_schedd_up 1.0" in http.get("/metrics").text
        assert http.get("/jobs/no-such-job").status_code == 404
    assert web_process.stop() == 0
    events = [json.loads(line) for line in web_process.log().splitlines() if line.startswith("{")]
    assert {"web_starting", "web_stopped"} <= {event["event"] for event in events}


def test_events_stream_delivers_watch_events_and_ends_on_sigterm(
    web_process: WebProcess, scheduler: SchedulerData
) -> None:
    seen: list[dict[str, object]] = []
    with (
        httpx.Client(base_url=web_process.url, timeout=15) as http,
        http.stream("GET", "/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        kind = ""
        for line in lines:
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "change":
                seen.append(json.loads(line.removeprefix("data: ")))
                # The every-second heartbeat finishes a run within a second or two.
                if any(item["kind"] == "run_finished" for item in seen):
                    break
        # An open stream does not hold up shutdown: the server ends it.
        assert web_process.stop() == 0
        remaining = list(lines)  # returns only because the server closed the stream
        assert all(line == "" or line.startswith(("event: ", "data: ", ":")) for line in remaining)
    finished = next(item for item in seen if item["kind"] == "run_finished")
    run = finished["run"]
    assert isinstance(run, dict) and run["outcome"] == "success" and run["job_type"] == "log"
    assert "payload" not in json.dumps(finished)


def test_real_process_refuses_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "web.toml"
    config.write_text('[web]\nactions_enabled = true\nlisten = "127.0.0.1:8470"\n')
    result = subprocess.run(
        [console_script("nexus-schedweb"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "web.actions_enabled" in result.stderr and "token" in result.stderr
    config.write_text('[web]\nlisten = "nowhere"\n')
    result = subprocess.run(
        [console_script("nexus-schedweb"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "web.listen" in result.stderr


def test_dashboard_follows_the_daemon_when_it_goes_away(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, daemon_config(tmp_path))
    daemon.start()
    web = WebProcess(tmp_path, str(daemon.socket_path))
    try:
        web.start()
        with httpx.Client(base_url=web.url, timeout=10) as http:
            assert http.get("/").status_code == 200
            daemon.close()
            down = http.get("/")
            assert down.status_code == 503 and "not reachable" in down.text
            assert "nexus_schedd_up 0.0" in http.get("/metrics").text
        assert web.stop() == 0
    finally:
        web.close()
        daemon.close()


def test_real_process_reports_an_address_in_use_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                console_script("nexus-schedweb"),
                "--listen",
                f"127.0.0.1:{port}",
                "--socket",
                str(tmp_path / "none.sock"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [event["event"] for event in events] == ["web_listen_failed"]
    assert events[0]["reason"] == "Address already in use"
