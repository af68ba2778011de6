"""Storage faults under the real daemon: a full disk (a 2 MiB tmpfs this test mounts),
a read-only database, a database from a newer schema version."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_schedd.daemon.config import DB_FILE
from nexus_schedd.store.sqlite.schema import SCHEMA_VERSION
from tests.daemon.daemon_process import DaemonProcess, console_script

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CONFIG = """
[daemon]
log_format = "json"
shutdown_grace_s = 5

[control]
admin_group = ""
"""


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for this test (root and CAP_SYS_ADMIN needed)."""
    where = Path(tempfile.mkdtemp(prefix="nxs-fs-", dir="/tmp"))
    try:
        mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)
        where.rmdir()


def schedctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("nexus-schedctl"), "--socket", str(daemon.socket_path), "--json", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def add_log_job(daemon: DaemonProcess, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    payload = json.dumps({"message": name, "pad": "p" * 2000})
    return schedctl(daemon, "add", "log", "--name", name, "--payload", payload, *extra)


def job_names(daemon: DaemonProcess) -> set[str]:
    result = schedctl(daemon, "list", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    data: Any = json.loads(result.stdout)
    jobs = data["jobs"] if isinstance(data, dict) else data
    return {job["name"] for job in jobs if job.get("name")}


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def test_disk_full_refuses_mutations_clearly_keeps_serving_and_resumes_when_space_returns(
    small_fs: Path,
) -> None:
    daemon = DaemonProcess(small_fs, CONFIG)
    try:
        daemon.start()
        before = add_log_job(daemon, "before-full", "--in", "1h")
        assert before.returncode == 0, before.stderr
        filler = fill(small_fs)
        refused = [add_log_job(daemon, f"while-full-{n}", "--in", "1h") for n in range(40)]
        failures = [result for result in refused if result.returncode != 0]
        assert failures, "a full disk never refused an add"
        assert {result.returncode for result in failures} == {1}, [
            (result.returncode, result.stderr) for result in failures if result.returncode != 1
        ]
        assert all("disk is full" in result.stderr for result in failures), failures[0].stderr
        accepted = {f"while-full-{n}" for n, result in enumerate(refused) if result.returncode == 0}

        # Still up and serving reads; everything acknowledged is there.
        assert schedctl(daemon, "status").returncode == 0
        assert {"before-full", *accepted} <= job_names(daemon)
        assert not {f"while-full-{n}" for n in range(40)} - accepted & job_names(daemon)

        filler.unlink()
        after = add_log_job(daemon, "after-space-returned", "--in", "1h")
        assert after.returncode == 0, after.stderr
        ran = add_log_job(daemon, "runs-now")
        assert ran.returncode == 0, ran.stderr
        daemon.wait_event("run_finished", outcome="success", timeout=20)
    finally:
        daemon.close()

    # Nothing acknowledged was lost across a restart, and the file is intact.
    restarted = DaemonProcess(small_fs, CONFIG)
    try:
        restarted.start()
        assert {"before-full", "after-space-returned", *accepted} <= job_names(restarted)
    finally:
        restarted.close()
    database = small_fs / "state" / DB_FILE
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()


def run_daemon_once(workdir: Path, state: Path) -> subprocess.CompletedProcess[str]:
    config = workdir / "c.toml"
    config.write_text(CONFIG)
    sockdir = tempfile.mkdtemp(prefix="nxs-", dir="/tmp")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        return subprocess.run(
            [
                console_script("nexus-schedd"),
                "--config",
                str(config),
                "--state-dir",
                str(state),
                "--socket",
                f"{sockdir}/c.sock",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def make_database(tmp_path: Path) -> Path:
    """A real database with one job, written by a daemon that then stopped cleanly."""
    daemon = DaemonProcess(tmp_path, CONFIG)
    try:
        daemon.start()
        assert add_log_job(daemon, "kept", "--in", "1h").returncode == 0
    finally:
        daemon.close()
    return tmp_path / "state" / DB_FILE


def test_database_from_a_newer_schema_version_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    database = make_database(tmp_path)
    connection = sqlite3.connect(database)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    before = database.read_bytes()
    result = run_daemon_once(tmp_path, database.parent)
    assert result.returncode == 1
    assert f"schema version {SCHEMA_VERSION + 1} is newer" in result.stderr
    assert "upgrade nexus-schedd" in result.stderr
    assert database.read_bytes() == before


def test_read_only_database_refuses_mutations_clearly_serves_reads_and_is_left_untouched(
    tmp_path: Path,
) -> None:
    database = make_database(tmp_path)
    state = database.parent
    before = {path.name: path.read_bytes() for path in state.iterdir() if path.is_file()}
    # chmod does not stop root: the database is seen through a read-only bind mount.
    view = Path(tempfile.mkdtemp(prefix="nxs-ro-", dir="/tmp"))
    (tmp_path / "ro").mkdir()
    daemon = DaemonProcess(tmp_path / "ro", CONFIG)
    daemon.state_dir = view
    try:
        try:
            mount("--bind", str(state), str(view))
            mount("-o", "remount,bind,ro", str(view))
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip(f"cannot make a read-only bind mount here: {exc}")
        daemon.start()
        assert "kept" in job_names(daemon)
        refused = add_log_job(daemon, "refused", "--in", "1h")
        assert refused.returncode == 1
        assert "read-only" in refused.stderr, refused.stderr
        assert schedctl(daemon, "status").returncode == 0, "the daemon stays up"
        assert job_names(daemon) == {"kept"}, "the refused add changed nothing"
    finally:
        daemon.close()
        subprocess.run(["umount", "-l", str(view)], check=False, timeout=30)
        view.rmdir()
    after = {path.name: path.read_bytes() for path in state.iterdir() if path.is_file()}
    assert after == before
