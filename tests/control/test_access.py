"""Access control by peer credentials, with real users: the CLI run as nobody
(uid/gid 65534, no supplementary groups) through ``setpriv``.

nobody cannot enter a checkout under a private home (mode 0700), where a new
user working as root clones it, so what it runs is built where it can reach it:
Debian's own python3 and copies of the packages the CLI imports, in a
world-readable temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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
SYSTEM_PYTHON = Path("/usr/bin/python3")
"""An interpreter outside root's home (the project's may live under it)."""
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not SYSTEM_PYTHON.exists(),
    reason="needs root, setpriv and /usr/bin/python3",
)


@pytest.fixture(scope="module")
def nobody_schedctl() -> Iterator[list[str]]:
    """The command line of a nexus-schedctl that nobody can run, wherever this
    checkout and its venv live."""
    home = Path(tempfile.mkdtemp(prefix="nexus-schedctl-"))
    try:
        roots = _cli_import_roots()
        # Their metadata too (some read their own version from it).
        sites = {root.parent for root in roots if root.parent.name == "site-packages"}
        metadata = [info for site in sites for info in site.glob("*.dist-info")]
        for source in [*roots, *metadata]:
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, home / source.name)
        for path in [home, *home.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        entry = (
            f"import sys; sys.path.insert(0, {str(home)!r}); "
            "from nexus_schedd.cli.main import main; sys.exit(main())"
        )
        yield [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            str(SYSTEM_PYTHON),
            "-I",
            "-c",
            entry,
        ]
    finally:
        shutil.rmtree(home)


def _cli_import_roots() -> list[Path]:
    """The top-level packages and modules, outside the standard library, that the
    CLI imports (asked of a fresh interpreter, so this process's imports don't count)."""
    probe = (
        "import json, sys\n"
        "import nexus_schedd.cli.main, nexus_schedd.control.client\n"
        "roots = set()\n"
        "for name, module in list(sys.modules.items()):\n"
        "    origin = getattr(module, '__file__', None) or ''\n"
        "    if name != 'nexus_schedd' and 'site-packages' not in origin:\n"
        "        continue\n"
        "    top = sys.modules[name.partition('.')[0]]\n"
        "    paths = getattr(top, '__path__', None)\n"
        "    roots.add(list(paths)[0] if paths else top.__file__)\n"
        "print(json.dumps(sorted(roots)))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    return [Path(root) for root in json.loads(found)]


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
        "RequeueJob",
        "RequeueJobs",
        "BackfillJob",
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
    tmp_path: Path, nobody_schedctl: list[str]
) -> None:
    settings = ControlSettings(socket_mode=0o666, admin_group="", read_group="")
    async with running_daemon(tmp_path / "db", settings, socket_dir_mode=0o755) as daemon:
        socket_path = str(daemon.socket_path)
        add = await anyio.run_process(
            [*nobody_schedctl, "--socket", socket_path, "add", "log"], check=False
        )
        assert add.returncode == 77, add.stderr
        assert b"not allowed" in add.stderr
        status = await anyio.run_process(
            [*nobody_schedctl, "--socket", socket_path, "status"], check=False
        )
        assert status.returncode == 77
        listing = await anyio.run_process(
            [SCHEDCTL, "--socket", socket_path, "list", "--json"], check=False
        )
        assert json.loads(listing.stdout)["jobs"] == []  # nothing was added


@needs_root
@pytest.mark.anyio
async def test_cli_as_a_read_group_member_may_read_but_not_write(
    tmp_path: Path, nobody_schedctl: list[str]
) -> None:
    settings = ControlSettings(socket_mode=0o666, admin_group="", read_group="nogroup")
    async with running_daemon(tmp_path / "db", settings, socket_dir_mode=0o755) as daemon:
        socket_path = str(daemon.socket_path)
        await anyio.run_process(
            [SCHEDCTL, "--socket", socket_path, "add", "log", "--name", "r", "--in", "1h"]
        )
        listing = await anyio.run_process(
            [*nobody_schedctl, "--socket", socket_path, "list", "--json"], check=False
        )
        assert listing.returncode == 0, listing.stderr
        assert [job["name"] for job in json.loads(listing.stdout)["jobs"]] == ["r"]
        show = await anyio.run_process(
            [*nobody_schedctl, "--socket", socket_path, "show", "r"], check=False
        )
        assert show.returncode == 0
        cancel = await anyio.run_process(
            [*nobody_schedctl, "--socket", socket_path, "cancel", "r"], check=False
        )
        assert cancel.returncode == 77
        still = await anyio.run_process([SCHEDCTL, "--socket", socket_path, "show", "r", "--json"])
        assert json.loads(still.stdout)["job"]["status"] == "pending"
