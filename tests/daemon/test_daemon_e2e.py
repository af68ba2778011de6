"""End-to-end: the real ``nexus-schedd`` process, driven from outside as users do
(config file, signals, ``nexus-schedctl``, the journal-style JSON log)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.daemon_process import DaemonProcess, console_script, sqlite_writers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def base_config(tmp_path: Path, *, schedules: str = "", extra: str = "") -> str:
    """A test config: JSON logs, fast retries, exec allowed for scripts under tmp_path."""
    return f"""
[daemon]
log_format = "json"
shutdown_grace_s = 10

[control]
admin_group = ""

[defaults]
backoff_base_s = 0.2
backoff_jitter = 0.0

[handlers.exec]
allow = ["{tmp_path}/*"]
{extra}
{schedules}
"""


def schedule(name: str, cron: str = "* * * * * *", job_type: str = "log") -> str:
    return f"""
[[schedules]]
name = "{name}"
job_type = "{job_type}"
cron = "{cron}"
payload = {{ message = "{name}" }}
misfire = "skip"
"""


def schedctl(
    daemon: DaemonProcess, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real ``nexus-schedctl`` against the daemon's socket."""
    result = subprocess.run(
        [console_script("nexus-schedctl"), "--socket", str(daemon.socket_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"nexus-schedctl {' '.join(args)} -> {result.returncode}\n{result.stderr}"
        )
    return result


def schedctl_json(daemon: DaemonProcess, *args: str) -> Any:
    return json.loads(schedctl(daemon, "--json", *args).stdout)


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def add_exec(daemon: DaemonProcess, argv: list[str], *extra: str) -> dict[str, Any]:
    payload = json.dumps({"argv": argv})
    job: dict[str, Any] = schedctl_json(daemon, "add", "exec", "--payload", payload, *extra)["job"]
    return job


def wait_status(
    daemon: DaemonProcess, job_id: str, status: str, timeout: float = 30.0
) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        seen.append(schedctl_json(daemon, "show", job_id)["job"])
        return bool(seen[-1]["status"] == status)

    daemon.wait_until(reached, timeout=timeout, what=f"job {job_id} to become {status}")
    return seen[-1]


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_static_schedule_jobs_run(tmp_path: Path, daemon_factory: Any) -> None:
    daemon = daemon_factory(base_config(tmp_path, schedules=schedule("every-second")))
    daemon.start()
    finished = daemon.wait_event("run_finished", count=2, job_type="log", outcome="success")
    assert len({event["job_id"] for event in finished}) == 1
    jobs = schedctl_json(daemon, "list")["jobs"]
    assert [(job["name"], job["static"]) for job in jobs] == [("every-second", True)]


def test_exec_job_exiting_75_twice_is_retried_and_completes(
    tmp_path: Path, daemon_factory: Any
) -> None:
    counter = tmp_path / "attempts"
    flaky = script(
        tmp_path,
        "flaky.sh",
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}\n"
        f'[ "$n" -lt 3 ] && exit 75\necho "done after $n"\nexit 0\n',
    )
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    job = add_exec(daemon, [str(flaky)])
    done = wait_status(daemon, job["id"], "completed")
    assert done["last_result"]["success"] is True
    runs = schedctl_json(daemon, "runs", job["id"])["runs"]
    assert sorted((run["attempt"], run["outcome"]) for run in runs) == [
        (1, "failure"),
        (2, "failure"),
        (3, "success"),
    ]
    assert counter.read_text().strip() == "3"


def test_hanging_exec_job_is_killed_at_its_timeout_with_its_children(
    tmp_path: Path, daemon_factory: Any
) -> None:
    pids = tmp_path / "pids"
    hang = script(tmp_path, "hang.sh", f"sleep 300 &\necho $$ $! > {pids}\nsleep 300\n")
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    job = add_exec(daemon, [str(hang)], "--timeout", "1", "--max-retries", "0")
    daemon.wait_until(pids.exists, timeout=20, what="the script to record its pids")
    shell_pid, child_pid = (int(value) for value in pids.read_text().split())
    final = wait_status(daemon, job["id"], "failed_permanent")
    assert "tim" in (final["last_result"]["error"] or "").lower()
    runs = schedctl_json(daemon, "runs", job["id"])["runs"]
    assert [run["outcome"] for run in runs] == ["timeout"]
    daemon.wait_until(
        lambda: process_gone(shell_pid) and process_gone(child_pid),
        timeout=15,
        what="the script and its child to be killed",
    )


def test_sighup_reconciles_static_schedules(tmp_path: Path, daemon_factory: Any) -> None:
    daemon = daemon_factory(base_config(tmp_path, schedules=schedule("alpha", "0 0 1 1 *")))
    daemon.start()
    assert [job["name"] for job in schedctl_json(daemon, "list")["jobs"]] == ["alpha"]

    daemon.write_config(base_config(tmp_path, schedules=schedule("beta")))
    reloading = len(daemon.notifications)
    daemon.send(signal.SIGHUP)
    index = daemon.wait_notification("RELOADING=1", after=reloading)
    daemon.wait_notification("READY=1", after=index)
    daemon.wait_event("config_reloaded")

    # beta runs every second: between runs it is pending, for a few ms running.
    jobs = {
        job["name"]: job
        for job in schedctl_json(daemon, "list")["jobs"]
        if job["status"] in ("pending", "running")
    }
    assert set(jobs) == {"beta"}
    alpha = schedctl_json(daemon, "list", "--status", "canceled")["jobs"]
    assert [job["name"] for job in alpha] == ["alpha"]
    daemon.wait_event("run_finished", job_id=jobs["beta"]["id"], outcome="success")


def test_bad_config_at_reload_is_refused_and_the_daemon_keeps_running(
    tmp_path: Path, daemon_factory: Any
) -> None:
    good = base_config(tmp_path, schedules=schedule("alpha", "0 0 1 1 *"))
    daemon = daemon_factory(good)
    daemon.start()
    daemon.write_config(good.replace("[defaults]", "[defaults]\nmax_retries = -1"))
    daemon.send(signal.SIGHUP)
    refused = daemon.wait_event("reload_refused")
    assert "max_retries" in refused[0]["error"]
    daemon.write_config(good.replace("[daemon]", "[daemon]\nbogus_key = 1"))
    daemon.send(signal.SIGHUP)
    refused = daemon.wait_event("reload_refused", count=2)
    assert "bogus_key" in refused[1]["error"]
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert schedctl_json(daemon, "status")  # still serving
    assert [
        job["name"] for job in schedctl_json(daemon, "list", "--status", "pending")["jobs"]
    ] == ["alpha"]


def test_a_reload_refused_after_parsing_changes_nothing(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """Problems found only once the new handlers are loaded (a schedule no handler
    runs, a value a handler refuses) refuse the whole reload: handlers, limits and
    schedules stay as they were, the refusal is logged, and ``reload`` exits 1."""
    good = base_config(
        tmp_path, schedules=schedule("alpha", "0 0 1 1 *") + schedule("beta", "0 0 1 1 *")
    )
    daemon = daemon_factory(good)
    daemon.start()
    before = schedctl_json(daemon, "handlers")["handlers"]
    assert "log" in before

    # beta kept, gamma new, alpha dropped, and one schedule of an unknown type; the
    # log handler disabled and a limit set: none of it may take effect.
    bad = base_config(
        tmp_path,
        schedules=schedule("beta", "0 0 1 1 *")
        + schedule("gamma", "0 0 1 1 *")
        + schedule("delta", "0 0 1 1 *", job_type="nosuch"),
        extra="[handlers.log]\nenabled = false\n\n[limits]\nlog = 1\n",
    )
    daemon.write_config(bad)
    refused = schedctl(daemon, "reload", check=False)
    assert refused.returncode == 1, refused.stderr
    # The first schedule it cannot run: beta's "log", with the log handler disabled.
    assert "schedules[0].job_type" in refused.stderr
    assert "no loaded handler supports job type 'log'" in refused.stderr
    event = daemon.wait_event("reload_refused")
    assert "schedules[0].job_type" in event[0]["error"]

    daemon.send(signal.SIGHUP)  # the same file by signal: refused and logged too
    daemon.wait_event("reload_refused", count=2)

    assert schedctl_json(daemon, "handlers")["handlers"] == before
    pending = schedctl_json(daemon, "list", "--status", "pending")["jobs"]
    assert sorted(job["name"] for job in pending) == ["alpha", "beta"]
    assert schedctl_json(daemon, "list", "--status", "canceled")["jobs"] == []
    assert schedctl_json(daemon, "add", "log", "--in", "1h")["job"]["status"] == "pending"

    # A value a handler refuses is a refused reload too, naming file and key.
    daemon.write_config(good.replace('allow = ["', 'allow = "').replace('/*"]', '/*"'))
    refused = schedctl(daemon, "reload", check=False)
    assert refused.returncode == 1
    assert "handlers.exec.allow" in refused.stderr
    assert str(daemon.config_path) in refused.stderr


def test_sigterm_drains_a_running_job_exits_0_and_loses_nothing(
    tmp_path: Path, daemon_factory: Any
) -> None:
    marker = tmp_path / "finished"
    slow = script(tmp_path, "slow.sh", f"sleep 2\ntouch {marker}\n")
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    running = add_exec(daemon, [str(slow)])
    later = [schedctl_json(daemon, "add", "log", "--in", "1h")["job"]["id"] for _ in range(5)]
    daemon.wait_event("run_started", job_id=running["id"])
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(timeout=30) == 0
    assert marker.exists(), "the running job was not allowed to finish"
    stopping = daemon.notifications.index("STOPPING=1")
    assert stopping > daemon.notifications.index("READY=1")

    # Restart on the same state: everything acknowledged is still there.
    again = daemon_factory(base_config(tmp_path))
    again.start()
    assert schedctl_json(again, "show", running["id"])["job"]["status"] == "completed"
    for job_id in later:
        assert schedctl_json(again, "show", job_id)["job"]["status"] == "pending"


def test_a_second_sigterm_exits_at_once_and_takes_running_commands_with_it(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """A forced exit does not drain, but its exec children must not outlive it (they
    would run on, and the restarted daemon would run the occurrence again)."""
    pids = tmp_path / "pids"
    hang = script(tmp_path, "hang.sh", f"sleep 300 &\necho $$ $! > {pids}\nwait\n")
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    add_exec(daemon, [str(hang)])
    daemon.wait_until(pids.exists, timeout=20, what="the script to record its pids")
    shell_pid, child_pid = (int(value) for value in pids.read_text().split())
    daemon.send(signal.SIGTERM)
    daemon.wait_notification("STOPPING=1")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(timeout=10) == 1
    daemon.wait_until(
        lambda: process_gone(shell_pid) and process_gone(child_pid),
        timeout=5,
        what="the command and its child to be killed with the daemon",
    )


def sqlite_writer_of(pid: int) -> int:
    """The pid of the SQLite writer process the daemon ``pid`` started."""
    writers = sqlite_writers(pid)
    assert len(writers) == 1, f"daemon {pid} runs {len(writers)} SQLite writer processes"
    return writers[0]


def test_ctrl_c_to_the_process_group_still_checkpoints_through_the_writer(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """A terminal's Ctrl-C reaches the daemon and its writer process at once: the
    writer stays for the daemon's last checkpoint, then both are gone."""
    slow = script(tmp_path, "slow.sh", "sleep 1\n")
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    assert daemon.proc is not None
    writer = sqlite_writer_of(daemon.proc.pid)
    running = add_exec(daemon, [str(slow)])
    daemon.wait_event("run_started", job_id=running["id"])
    os.kill(writer, signal.SIGINT)
    daemon.send(signal.SIGINT)
    assert daemon.wait_exit(timeout=30) == 0
    assert process_gone(writer), "the daemon exited before its writer"
    assert not daemon.events("sqlite_writer_died")
    assert not daemon.events("threads_left_running"), "a clean stop leaves no threads"

    # The run finished after the signal; its checkpoint went through the writer.
    again = daemon_factory(base_config(tmp_path))
    again.start()
    assert schedctl_json(again, "show", running["id"])["job"]["status"] == "completed"


def test_the_writer_process_does_not_outlive_a_daemon_killed_with_sigkill(
    tmp_path: Path, daemon_factory: Any
) -> None:
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    assert daemon.proc is not None
    writer = sqlite_writer_of(daemon.proc.pid)
    added = schedctl_json(daemon, "add", "log", "--in", "1h")["job"]["id"]
    daemon.send(signal.SIGKILL)
    daemon.wait_exit(timeout=10)
    deadline = time.monotonic() + 10  # a bound on the wait, not a measurement
    while not process_gone(writer) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process_gone(writer), "the writer process outlived the daemon"

    again = daemon_factory(base_config(tmp_path))
    again.start()
    assert schedctl_json(again, "show", added)["job"]["status"] == "pending"


def test_systemd_notify_protocol(tmp_path: Path, daemon_factory: Any) -> None:
    daemon = daemon_factory(
        base_config(tmp_path, schedules=schedule("alpha", "0 0 1 1 *")),
        extra_env={"WATCHDOG_USEC": "1000000"},
    )
    daemon.start(wait_ready=False)
    ready = daemon.wait_notification("READY=1")
    # READY=1 is only sent once the control socket accepts connections.
    assert daemon.socket_path.is_socket()
    assert schedctl_json(daemon, "status")
    assert any(line.startswith("STATUS=") for line in daemon.notifications)

    daemon.wait_until(
        lambda: daemon.notifications[ready:].count("WATCHDOG=1") >= 3,
        timeout=10,
        what="three watchdog pings at WATCHDOG_USEC=1s",
    )

    before = len(daemon.notifications)
    daemon.send(signal.SIGHUP)
    reloading = daemon.wait_notification("RELOADING=1", after=before)
    monotonic = [
        line for line in daemon.notifications[reloading:] if line.startswith("MONOTONIC_USEC=")
    ]
    assert monotonic and int(monotonic[0].split("=", 1)[1]) <= time.monotonic_ns() // 1000
    daemon.wait_notification("READY=1", after=reloading)

    daemon.send(signal.SIGTERM)
    daemon.wait_notification("STOPPING=1", after=reloading)
    assert daemon.wait_exit() == 0


def test_socket_activation_with_systemd_socket_activate(tmp_path: Path) -> None:
    activate = "/usr/bin/systemd-socket-activate"
    if not os.path.exists(activate):
        pytest.skip("systemd-socket-activate is not installed")
    process = DaemonProcess(tmp_path, base_config(tmp_path))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "LISTEN_"))}
        command = [
            activate,
            "--listen",
            str(process.socket_path),
            "-E",
            "PATH",
            console_script("nexus-schedd"),
            "--config",
            str(process.config_path),
            "--state-dir",
            str(process.state_dir),
        ]
        process.launch(command, env)
        process.wait_until(process.socket_path.exists, timeout=10, what="the activation socket")
        # The first connection starts the daemon, which serves it on the inherited socket.
        status = schedctl_json(process, "status")
        assert status
        process.wait_event("control_socket_inherited")
        process.send(signal.SIGTERM)
        assert process.wait_exit() == 0
    finally:
        process.close()


def run_daemon_once(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``nexus-schedd`` expecting it to exit on its own (bad start-up input)."""
    return subprocess.run(
        [console_script("nexus-schedd"), *args], capture_output=True, text=True, timeout=30
    )


def test_check_config_names_the_file_key_and_reason(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[defaults]\nmisfire = "sometimes"\n')
    result = run_daemon_once("--config", str(config), "--check-config")
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "defaults.misfire" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text(base_config(tmp_path, schedules=schedule("alpha")))
    result = run_daemon_once("--config", str(good), "--check-config")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("change", "key"),
    [
        # A value the exec handler refuses, and a key it does not know.
        (
            lambda text: text.replace('allow = ["', 'allow = "').replace('/*"]', '/*"'),
            "handlers.exec.allow",
        ),
        (lambda text: text.replace("allow = [", "alow = ["), "handlers.exec.alow"),
        # A schedule whose job type no loaded handler runs.
        (lambda text: text + schedule("ghost", job_type="nosuch"), "schedules[1].job_type"),
        # A schedule whose payload its handler's add-time check refuses.
        (
            lambda text: (
                text
                + '[[schedules]]\nname = "shell"\njob_type = "exec"\ncron = "* * * * *"\n'
                + 'payload = { argv = ["/bin/sh"] }\n'
            ),
            "schedules[1].payload.argv",
        ),
    ],
)
def test_check_config_and_start_up_load_the_handlers_to_check_them(
    tmp_path: Path, change: Any, key: str
) -> None:
    """What only the handlers can check is checked by --check-config and refused at
    start-up alike: exit 2, with the file, the key and the reason."""
    config = tmp_path / "bad.toml"
    config.write_text(change(base_config(tmp_path, schedules=schedule("alpha"))))
    checked = run_daemon_once("--config", str(config), "--check-config")
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert f"{config}: {key}" in checked.stderr
    started = run_daemon_once(
        "--config",
        str(config),
        "--state-dir",
        str(tmp_path / "state"),
        "--socket",
        str(tmp_path / "control.sock"),
    )
    assert started.returncode == 2, started.stderr
    assert f"{config}: {key}" in started.stderr
    assert "Traceback" not in started.stderr


def test_a_schedule_that_has_run_its_course_is_skipped_not_fatal(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """A schedule whose ends_at has passed can never fire again: --check-config warns,
    and the daemon starts and reconciles the other schedules."""
    ended = schedule("ended") + 'ends_at = "2020-01-01T00:00:00Z"\n'
    text = base_config(tmp_path, schedules=schedule("alpha", "0 0 1 1 *") + ended)
    config = tmp_path / "ended.toml"
    config.write_text(text)
    checked = run_daemon_once("--config", str(config), "--check-config")
    assert checked.returncode == 0, checked.stderr
    assert "schedules[1]" in checked.stderr and "'ended'" in checked.stderr
    daemon = daemon_factory(text)
    daemon.start()
    skipped = daemon.wait_event("static_schedule_skipped")
    assert skipped[0]["name"] == "ended"
    assert [job["name"] for job in schedctl_json(daemon, "list")["jobs"]] == ["alpha"]


def test_a_second_daemon_on_a_live_socket_refuses_to_start(
    tmp_path: Path, daemon_factory: Any
) -> None:
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    result = run_daemon_once(
        "--config",
        str(daemon.config_path),
        "--socket",
        str(daemon.socket_path),
        "--state-dir",
        str(tmp_path / "other-state"),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot listen on control socket {daemon.socket_path}" in result.stderr
    assert not (tmp_path / "other-state").exists(), "the refused daemon touched a store"
    assert schedctl_json(daemon, "status")  # the first daemon is undisturbed


def test_a_corrupt_database_stops_start_up_and_is_left_untouched(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    database = state / "schedd.db"
    garbage = b"this is not an SQLite database\n" * 200
    database.write_bytes(garbage)
    config = tmp_path / "c.toml"
    config.write_text(base_config(tmp_path))
    control_socket = f"/tmp/nxs-{os.getpid()}.sock"
    result = run_daemon_once(
        "--config",
        str(config),
        "--state-dir",
        str(state),
        "--socket",
        control_socket,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "schedd.db" in result.stderr
    assert database.read_bytes() == garbage
    assert not os.path.exists(control_socket), "a refused start left its socket behind"
