"""The daemon process: store, handlers, engine and control server under one task group.

:class:`Daemon` follows the uvicorn shape: ``startup`` opens everything and
reports READY only once the control socket accepts; ``main_loop`` waits for
signals; ``shutdown`` drains within ``shutdown_grace_s``. A second SIGTERM or
SIGINT exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from nexus_schedd import __version__
from nexus_schedd.clock import SystemClock, watch_clock_steps
from nexus_schedd.control.server import ControlServer, bind_control_socket
from nexus_schedd.daemon.config import (
    Config,
    check_notify_types,
    check_schedule_types,
    load_config,
)
from nexus_schedd.daemon.logging import flush_held_lines
from nexus_schedd.daemon.systemd import Notifier, listen_fds, watchdog_interval
from nexus_schedd.engine import Engine, engine_for
from nexus_schedd.errors import ConfigError, SchedulerError, StoreError, StoreOpenFailed
from nexus_schedd.handlers.exec import kill_running_commands
from nexus_schedd.handlers.loading import load_handlers
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model.calendars import CALENDARS
from nexus_schedd.store import Store, open_store
from nexus_schedd.tracing import Tracing, TracingSettings, start_tracing

EXIT_FORCED = 1
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Signals the daemon handles (see :meth:`Daemon.main_loop`)."""

log = structlog.get_logger("nexus_schedd.daemon")


class Daemon:
    """One nexus-schedd process."""

    def __init__(self, config: Config, *, config_path: Path | None, overrides: Mapping[str, Any]):
        self.config = config
        self.config_path = config_path
        self.overrides = dict(overrides)
        self.notifier = Notifier.from_environment()
        self._reload_lock = anyio.Lock()
        self._engine: Engine | None = None
        self._store: Store | None = None
        self._registries: list[HandlerRegistry] = []
        """Every registry not closed yet: the one in force, and those a reload
        replaced while attempts still use them (:meth:`_retire`). The rest are
        closed at shutdown."""
        self._tg: anyio.abc.TaskGroup | None = None
        self._tracing: Tracing | None = None
        self._stopping = False
        self._socket_inherited = False

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT, then drain and return (exit code 0):
        :meth:`startup`, :meth:`main_loop`, :meth:`shutdown`, under one task group.

        The signal receiver is open before :meth:`startup`: a SIGHUP or SIGTERM
        sent the moment READY is reported is queued for :meth:`main_loop`, never
        met by the default action (which ends the process). One sent during
        start-up is handled once start-up is done.
        """
        try:
            with anyio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
                async with anyio.create_task_group() as tg:
                    await self.startup(tg)
                    await self.main_loop(signals)
                    await self.shutdown()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()
        log.info("daemon_stopped")

    async def startup(self, tg: anyio.abc.TaskGroup) -> None:
        """Open the socket, store and handlers, start the engine, reconcile the static
        schedules, then serve the socket and report READY."""
        config = self.config
        self._tg = tg
        tracing = TracingSettings.from_env(os.environ)  # a bad OTEL_* value stops us here
        # The socket first: a second daemon on a live socket is refused before it
        # touches the store.
        listener = self._control_socket()
        settings = config.engine_settings()
        store = open_store(config.store.url, durability=config.store.durability, node=settings.node)
        try:
            await store.open()
        except BaseException as exc:
            listener.close()
            if not self._socket_inherited:
                with contextlib.suppress(OSError):
                    os.unlink(config.daemon.socket)
            if isinstance(exc, StoreError) and not isinstance(exc, StoreOpenFailed):
                # Only this failure is "cannot open the store" (main() says so);
                # a store error later on is reported as what it is.
                raise StoreOpenFailed(exc.message, permanent=exc.permanent) from exc
            raise
        self._store = store
        registry = load_handlers(config.handlers, log=log, config_file=self._config_name)
        self._registries.append(registry)
        check_schedule_types(
            config.schedules, registry.supports, self._config_name, registry.check_job
        )
        check_notify_types(config.notify, registry.supports, self._config_name, registry.check_job)
        # Before the engine computes any occurrence (the jobs it loads, the
        # static schedules): the recurrences may exclude these calendars.
        CALENDARS.install(config.calendars)
        self._tracing = start_tracing(tracing, os.environ, log)
        tracer = None if self._tracing is None else self._tracing.run_tracer
        # A shared (PostgreSQL) store gets the multi-node engine.
        engine = engine_for(store, registry, SystemClock(), settings, log=log, tracer=tracer)
        self._engine = engine
        server = ControlServer(engine, config.control, reload=self.reload, log=log)
        await tg.start(engine.run)
        if not await tg.start(watch_clock_steps, engine.clock_stepped):
            log.warning(
                "clock_steps_unwatched",
                reason="no timerfd here: a wall-clock step is noticed at the next wake-up",
            )
        report = await engine.reconcile_static(config.schedules)
        if any(report.values()):
            log.info("static_schedules_reconciled", **report)
        await tg.start(server.serve, listener)
        self.notifier.ready(self._status_line())
        log.info(
            "daemon_ready",
            version=__version__,
            socket=str(config.daemon.socket),
            store=config.store.url,
            handlers=registry.names(),
            pid=os.getpid(),
            node=settings.node,
        )
        tg.start_soon(self._watchdog)

    async def main_loop(self, signals: AsyncIterator[int]) -> None:
        """Wait for ``signals`` (a receiver of HANDLED_SIGNALS, opened by :meth:`run`
        before READY): SIGHUP reloads; the first SIGTERM/SIGINT returns; a second exits."""
        async for signum in signals:
            if signum == signal.SIGHUP:
                # A refused reload is logged by reload(); the old config stays in force.
                with contextlib.suppress(SchedulerError):
                    await self.reload()
                continue
            log.info("signal_received", signal=signal.Signals(signum).name)
            break
        # A second SIGTERM/SIGINT during the drain exits at once.
        self._arm_forced_exit()

    async def shutdown(self) -> None:
        """Stop starting jobs and let running ones finish within ``shutdown_grace_s``."""
        self._stopping = True
        self.notifier.stopping()
        grace_s = self.config.daemon.shutdown_grace_s
        log.info("daemon_draining", grace_s=grace_s)
        assert self._engine is not None
        await self._engine.stop(grace_s)

    async def _close(self) -> None:
        """Close every handler registry loaded so far, then the store; flush the spans."""
        for loaded in self._registries:
            await loaded.aclose()
        if self._store is not None:
            await self._store.close()
        if self._tracing is not None:
            await self._tracing.aclose()  # the last runs' spans

    async def _retire(self, engine: Engine, old: HandlerRegistry) -> None:
        """Close the handlers a reload replaced (broker and HTTP connections) once
        the attempts started with them have ended; at shutdown :meth:`_close`
        closes whatever is still open."""
        await engine.wait_unused(old)
        with anyio.CancelScope(shield=True):
            if old in self._registries:
                self._registries.remove(old)
                await old.aclose(keep=self._registries)
                log.info("handlers_closed", handlers=old.names(), reason="replaced by a reload")

    def _control_socket(self) -> socket.socket:
        inherited = listen_fds()
        self._socket_inherited = bool(inherited)
        if inherited:
            log.info("control_socket_inherited", fds=len(inherited))
            return inherited[0]
        control = self.config.control
        path = self.config.daemon.socket
        try:
            return bind_control_socket(path, control.socket_mode, control.admin_group)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SchedulerError(f"cannot listen on control socket {path}: {reason}") from None

    def _arm_forced_exit(self) -> None:
        def force(signum: int, _frame: object) -> None:
            flush_held_lines(wait=False)  # this turn's info lines, unless being written
            os.write(2, b"nexus-schedd: second signal, exiting at once\n")
            kill_running_commands()  # exec children must not outlive the daemon
            os._exit(EXIT_FORCED)

        signal.signal(signal.SIGTERM, force)
        signal.signal(signal.SIGINT, force)

    async def reload(self) -> dict[str, Any]:
        """Re-read the config: handlers, limits and static schedules. A bad config is
        refused (ConfigError) and the old one kept."""
        engine = self._engine
        if engine is None:
            raise ConfigError(self._config_name, "", "daemon is not started")
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                # Everything is loaded and checked before anything is applied: a
                # refused reload leaves handlers, limits and schedules as they were.
                registry: HandlerRegistry | None = None
                try:
                    new = load_config(self.config_path, overrides=self.overrides)
                    registry = load_handlers(new.handlers, log=log, config_file=self._config_name)
                    check_schedule_types(
                        new.schedules, registry.supports, self._config_name, registry.check_job
                    )
                    check_notify_types(
                        new.notify, registry.supports, self._config_name, registry.check_job
                    )
                except SchedulerError as exc:
                    log.error("reload_refused", error=exc.message)
                    if registry is not None:
                        await registry.aclose()
                    raise
                replaced = self._registries[-1]
                self._registries.append(registry)
                engine.set_registry(registry)
                assert self._tg is not None
                self._tg.start_soon(self._retire, engine, replaced)
                engine.set_type_limits(new.limits, new.rates)
                engine.set_notify_rules(new.notify)
                self._install_calendars(new)
                try:
                    report = await engine.reconcile_static(new.schedules)
                except SchedulerError as exc:
                    # A store failure half-way: what was reconciled stays, the rest
                    # is retried by the next reload.
                    log.error("reload_failed", error=exc.message)
                    raise
                self.config = new
                log.info("config_reloaded", handlers=registry.names(), **report)
                return {key: list(value) for key, value in report.items()}
            finally:
                self.notifier.ready(self._status_line())

    def _install_calendars(self, new: Config) -> None:
        """Put a reloaded config's exclusion calendars in force (before its static
        schedules are reconciled). A job that excludes a calendar the reload
        removed keeps running without that exclusion: there is no scan of the
        jobs for its name, so this says so once, for the operator."""
        removed = sorted(set(self.config.calendars) - set(new.calendars))
        if removed:
            log.warning(
                "calendars_removed",
                calendars=removed,
                effect="jobs that exclude them run as if they did not",
            )
        CALENDARS.install(new.calendars)

    @property
    def _config_name(self) -> str:
        return str(self.config_path) if self.config_path is not None else "<defaults>"

    async def _watchdog(self) -> None:
        """Ping the systemd watchdog at half of WATCHDOG_USEC while the engine is healthy,
        and log event-loop lag when a ping comes late (a blocked loop)."""
        interval = watchdog_interval()
        if interval is None:
            return
        engine = self._engine
        assert engine is not None
        while True:
            started = anyio.current_time()
            await anyio.sleep(interval)
            lag = anyio.current_time() - started - interval
            if lag > 0.1:
                log.warning("event_loop_lag", lag_ms=round(lag * 1000, 1))
            if engine.healthy and not self._stopping:
                self.notifier.watchdog()
                self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        engine = self._engine
        if engine is None:
            return "starting"
        status = engine.status()
        next_due = "none" if status.next_due is None else status.next_due.isoformat()
        return f"{status.running} running, {status.due_backlog} due, next due {next_due}"


def event_loop_options(config: Config) -> tuple[str, dict[str, Any]]:
    """anyio backend and options for the configured event loop."""
    if config.daemon.event_loop == "uvloop":
        return "asyncio", {"use_uvloop": True}
    return "asyncio", {}
