"""Access control by peer credentials, with real users: the CLI run as nobody
(uid/gid 65534, no supplementary groups) through ``setpriv``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from nexus_schedd.control.access import (
    Access,
    PeerCredentials,
    access_for,
    allowed,
    groups_of,
)
from nexus_schedd.control.settings import ControlSettings
from nexus_schedd.errors import EXIT_PERMISSION, PermissionDenied
from tests.control.harness import running_daemon

NOBODY = 65534
SCHEDCTL = str(Path(sys.executable).with_name("nexus-schedctl"))
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


def as_nobody(*args: str) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]


def test_root_and_the_daemons_own_uid_may_do_everything() -> None:
    assert access_for(PeerCredentials(1, 0, 0), "", "") is Access.ADMIN
    assert access_for(PeerCredentials(1, os.getuid(), 12345), "", "") is Access.ADMIN


def test_group_membership_decides_for_other_users() -> None:
    nobody = PeerCredentials(1, NOBODY, NOBODY)
    assert access_for(nobody, "no-such-group", "") is Access.NONE
    assert access_for(nobody, "no-such-group", "nogroup") is Access.READ
    assert access_for(nobody, "nogroup", "") is Access.ADMIN
    assert access_for(nobody, str(NOBODY), "") is Access.ADMIN  # numeric gids work too


@needs_root
def test_supplementary_groups_of_the_peer_user_count() -> None:
    group = f"nxr{os.getpid()}"
    subprocess.run(["groupadd", "-U", "nobody", group], check=True)
    try:
        nobody = PeerCredentials(1, NOBODY, NOBODY)
        assert access_for(nobody, "", group) is Access.READ
        assert access_for(nobody, group, "") is Access.ADMIN
    finally:
        subprocess.run(["groupdel", group], check=True)
    assert NOBODY in groups_of(nobody)


def test_read_access_covers_exactly_the_read_methods() -> None:
    for method in (
        "GetStatus",
        "GetJob",
        "ListJobs",
        "ListRuns",
        "Preview",
        "Watch",
        "ListHandlers",
        "ExportCalendar",
    ):
        assert allowed(Access.READ, "io.nexus.Scheduler", method)
    for method in (
        "AddJob",
        "AddJobs",
        "CancelJob",
        "PauseJob",
        "ResumeJob",
        "TriggerJob",
        "RescheduleJob",
        "Reload",
    ):
        assert not allowed(Access.READ, "io.nexus.Scheduler", method)
        assert allowed(Access.ADMIN, "io.nexus.Scheduler", method)
    assert allowed(Access.READ, "org.varlink.service", "GetInfo")
    assert not allowed(Access.NONE, "io.nexus.Scheduler", "GetStatus")


def test_permission_denied_maps_to_exit_77() -> None:
    assert PermissionDenied("x").exit_code == EXIT_PERMISSION == 77


@needs_root
@pytest.mark.anyio
async def test_cli_as_another_user_is_refused_writes_and_without_a_group_reads(
    tmp_path: Path,
) -> None:
    settings = ControlSettings(socket_mode=0o666, admin_group="", read_group="")
    async with running_daemon(tmp_path / "db", settings, socket_dir_mode=0o755) as daemon:
        socket_path = str(daemon.socket_path)
        add = await anyio.run_process(
            as_nobody(SCHEDCTL, "--socket", socket_path, "add", "log"), check=False
        )
        assert add.returncode == 77, add.stderr
        assert b"not allowed" in add.stderr
        status = await anyio.run_process(
            as_nobody(SCHEDCTL, "--socket", socket_path, "status"), check=False
        )
        assert status.returncode == 77
        listing = await anyio.run_process(
            [SCHEDCTL, "--socket", socket_path, "list", "--json"], check=False
        )
        assert json.loads(listing.stdout)["jobs"] == []  # nothing was added


@needs_root
@pytest.mark.anyio
async def test_cli_as_a_read_group_member_may_read_but_not_write(tmp_path: Path) -> None:
    settings = ControlSettings(socket_mode=0o666, admin_group="", read_group="nogroup")
    async with running_daemon(tmp_path / "db", settings, socket_dir_mode=0o755) as daemon:
        socket_path = str(daemon.socket_path)
        await anyio.run_process(
            [SCHEDCTL, "--socket", socket_path, "add", "log", "--name", "r", "--in", "1h"]
        )
        listing = await anyio.run_process(
            as_nobody(SCHEDCTL, "--socket", socket_path, "list", "--json"), check=False
        )
        assert listing.returncode == 0, listing.stderr
        assert [job["name"] for job in json.loads(listing.stdout)["jobs"]] == ["r"]
        show = await anyio.run_process(
            as_nobody(SCHEDCTL, "--socket", socket_path, "show", "r"), check=False
        )
        assert show.returncode == 0
        cancel = await anyio.run_process(
            as_nobody(SCHEDCTL, "--socket", socket_path, "cancel", "r"), check=False
        )
        assert cancel.returncode == 77
        still = await anyio.run_process([SCHEDCTL, "--socket", socket_path, "show", "r", "--json"])
        assert json.loads(still.stdout)["job"]["status"] == "pending"
