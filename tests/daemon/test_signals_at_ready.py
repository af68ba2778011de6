"""Signals sent the moment the daemon reports READY are handled, never met by their
default action (SIGHUP's and SIGTERM's end the process).

The daemon runs in this process with a notifier that, inside its READY call,
looks at the signals' dispositions and sends the signals itself: the earliest
instant a supervisor (systemd, a test) could act on READY, with no scheduling
luck involved. Before the fix the receiver was opened only after READY, and
SIGHUP sent then (once, on a loaded machine) killed the daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from nexus_schedd.daemon.app import HANDLED_SIGNALS, Daemon
from nexus_schedd.daemon.config import load_config
from nexus_schedd.daemon.systemd import Notifier

pytestmark = pytest.mark.anyio

ROUNDS = 3
LIMIT_S = 60.0
"""Upper bound for a start, a reload and a drain (not an assertion of speed)."""

CONFIG = """
[daemon]
log_format = "json"
shutdown_grace_s = 1
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path must stay under ~100 bytes: not under pytest's tmp_path.
    directory = Path(tempfile.mkdtemp(prefix="nxsig", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def restored_signals() -> Iterator[None]:
    # The daemon arms a forced exit on SIGTERM/SIGINT when it starts draining:
    # the test process must get its own dispositions back.
    saved = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("restored_signals")
async def test_a_sighup_and_a_sigterm_sent_upon_ready_reload_and_stop_the_daemon(
    short_dir: Path,
) -> None:
    config_path = short_dir / "nexus-schedd.toml"
    config_path.write_text(CONFIG)
    for round_ in range(ROUNDS):
        daemon, readies = await _run_signalled_at_ready(config_path, short_dir / f"r{round_}")
        assert readies and all(all(handled.values()) for handled in readies), readies
        assert len(readies) == 2, "the SIGHUP sent upon READY was not handled as a reload"
        assert daemon._stopping, "the SIGTERM sent upon the reload's READY did not stop it"


async def _run_signalled_at_ready(
    config_path: Path, where: Path
) -> tuple[Daemon, list[dict[int, bool]]]:
    """Run a daemon that gets SIGHUP upon its start-up READY and SIGTERM upon its
    reload's READY; returns it (stopped) and, per READY, which signals were handled."""
    overrides = {"socket": str(where.with_suffix(".sock")), "state_dir": str(where)}
    config = load_config(config_path, overrides=overrides, env={})
    daemon = Daemon(config, config_path=config_path, overrides=overrides)
    readies: list[dict[int, bool]] = []
    unhandled = anyio.CancelScope()

    def on_ready() -> None:
        handled = {
            signum: signal.getsignal(signum) not in (signal.SIG_DFL, None)
            for signum in HANDLED_SIGNALS
        }
        readies.append(handled)
        if not all(handled.values()):
            unhandled.cancel()  # sending one now would end this test process
            return
        os.kill(os.getpid(), signal.SIGHUP if len(readies) == 1 else signal.SIGTERM)

    class ActAtReady(Notifier):
        """Acts inside every READY notification (start-up and reloads)."""

        def ready(self, status: str | None = None) -> bool:
            on_ready()
            return False

    daemon.notifier = ActAtReady()
    with unhandled, anyio.fail_after(LIMIT_S):
        await daemon.run()
    return daemon, readies
