"""``nexus-schedd``: the daemon's command line."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from nexus_schedd import __version__
from nexus_schedd.clock import SystemClock
from nexus_schedd.daemon.app import Daemon, event_loop_options
from nexus_schedd.daemon.config import (
    Config,
    check_notify_types,
    check_schedule_types,
    load_config,
)
from nexus_schedd.daemon.logging import configure_logging
from nexus_schedd.errors import (
    EXIT_USAGE,
    ConfigError,
    InvalidSpec,
    SchedulerError,
    StoreError,
    StoreOpenFailed,
)
from nexus_schedd.handlers.loading import load_handlers
from nexus_schedd.model import Job
from nexus_schedd.store.sqlite import SWITCH_INTERVAL_S
from nexus_schedd.tracing import TracingSettings

EXIT_START_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    """The ``nexus-schedd`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="nexus-schedd",
        description=(
            "Run the nexus-schedd job-scheduling daemon in the foreground. "
            "Logs go to stderr (JSON lines when not on a terminal). "
            "SIGHUP reloads the config; SIGTERM drains and exits."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="control socket (overrides the config and $NEXUS_SCHEDD_SOCKET)",
    )
    parser.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="state directory (overrides the config)"
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, print the result and exit (0 valid, 2 invalid)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nexus-schedd``."""
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.socket is not None:
        overrides["socket"] = args.socket.absolute()
    if args.state_dir is not None:
        overrides["state_dir"] = args.state_dir.absolute()
    config_path = args.config.absolute() if args.config is not None else None
    try:
        config = load_config(config_path, overrides=overrides)
    except ConfigError as exc:
        print(f"nexus-schedd: invalid config: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    for warning in config.warnings:
        print(f"nexus-schedd: warning: {warning}", file=sys.stderr)
    if args.check_config:
        try:
            notes = anyio.run(check_with_handlers, config, str(config_path or "<defaults>"))
        except ConfigError as exc:
            print(f"nexus-schedd: invalid config: {exc.message}", file=sys.stderr)
            return EXIT_USAGE
        for note in notes:
            print(f"nexus-schedd: warning: {note}", file=sys.stderr)
        print(f"nexus-schedd: config OK ({config_path or 'built-in defaults'})")
        return 0

    configure_logging(config.daemon.log_level, config.daemon.log_format)
    daemon = Daemon(config, config_path=config_path, overrides=overrides)
    backend, options = event_loop_options(config)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        anyio.run(daemon.run, backend=backend, backend_options=options)
    except (SchedulerError, BaseExceptionGroup) as exc:
        # Failures inside the task group arrive wrapped in an exception group.
        error = _scheduler_error(exc)
        if error is None:
            raise
        if isinstance(error, ConfigError):
            # Found once the handlers were loaded (a value a handler refuses, a
            # schedule no handler runs): an invalid config, like any other.
            print(f"nexus-schedd: invalid config: {error.message}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(error, StoreOpenFailed):
            prefix = "cannot open the store: "
        elif isinstance(error, StoreError):
            # The store had been open. Once running, the engine retries transient
            # failures and ends only on a permanent one.
            prefix = "the store became unusable: " if error.permanent else "the store failed: "
        else:
            prefix = ""
        print(f"nexus-schedd: {prefix}{error.message}", file=sys.stderr)
        return EXIT_START_FAILED
    except KeyboardInterrupt:
        return 130
    exit_despite_leaked_threads(0)
    return 0


class _Quiet:
    """A logger that drops everything (``--check-config`` reports on stdout/stderr)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


async def check_with_handlers(config: Config, file: str) -> list[str]:
    """What start-up checks once the handlers are loaded, without store or socket:
    values each handler refuses and schedules whose job type no handler runs raise
    ConfigError; plugins that fail to load and schedules that can no longer fire
    (they would be skipped) come back as warnings."""
    TracingSettings.from_env(os.environ)  # the OTEL_* variables, as start-up reads them
    registry = load_handlers(config.handlers, log=_Quiet(), config_file=file)
    try:
        check_schedule_types(config.schedules, registry.supports, file, registry.check_job)
        check_notify_types(config.notify, registry.supports, file, registry.check_job)
    finally:
        await registry.aclose()
    notes = [f"handler {name!r} failed to load: {error}" for name, error in registry.broken.items()]
    now = SystemClock().now()
    defaults = config.engine_settings().defaults
    for index, spec in enumerate(config.schedules):
        try:
            Job.create(spec, now, defaults)
        except InvalidSpec as exc:
            notes.append(
                f"{file}: schedules[{index}]: {exc.message}; schedule {spec.name!r} "
                "can no longer fire and will be skipped"
            )
    return notes


def _scheduler_error(exc: BaseException) -> SchedulerError | None:
    """The SchedulerError behind ``exc`` (itself, or the first inside a group)."""
    if isinstance(exc, SchedulerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _scheduler_error(inner)
            if found is not None:
                return found
    return None


LEFTOVER_THREAD_GRACE_S = 0.5
"""How long threads still running when the event loop has ended get to finish."""


def exit_despite_leaked_threads(code: int) -> None:
    """Exit with ``code`` now if a handler left non-daemon threads running.

    Everything of ours is closed by now; the interpreter would otherwise join those
    threads at exit and a drained daemon would hang until systemd kills it.
    """
    others = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]
    # anyio's idle worker threads were told to stop as the event loop ended and are
    # on their way out; a handler's thread is still running after this moment.
    deadline = time.monotonic() + LEFTOVER_THREAD_GRACE_S
    for thread in others:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    leftovers = [thread.name for thread in others if thread.is_alive()]
    if not leftovers:
        return
    structlog.get_logger("nexus_schedd.daemon").warning(
        "threads_left_running", threads=leftovers, note="left behind by handlers; exiting anyway"
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
