"""The daemon's TOML configuration (SPEC section 8).

:func:`load_config` reads one file, checks every key and value, and returns a
frozen :class:`Config`. Anything it does not know or cannot accept is refused
with a :class:`~nexus_schedd.errors.ConfigError` naming the file, the key as a
dotted path (``defaults.max_retries``, ``schedules[2].cron``) and the reason, so
``nexus-schedd --check-config`` and a refused reload say exactly what to fix.

Precedence, highest first: command-line overrides (``--socket``,
``--state-dir``), ``$NEXUS_SCHEDD_SOCKET``, the file, the built-in defaults.
Relative paths in the file are read relative to the file's directory.
"""

from __future__ import annotations

import grp
import math
import os
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from nexus_schedd.control.paths import SOCKET_ENV, default_socket_path
from nexus_schedd.control.settings import ControlSettings
from nexus_schedd.engine.rates import Rate
from nexus_schedd.engine.reactions import NOTIFY_EVENTS, NotifyRule
from nexus_schedd.engine.settings import EngineSettings
from nexus_schedd.errors import ConfigError, InvalidSpec, StoreError
from nexus_schedd.model import JobDefaults, JobSpec, MisfirePolicy, OverlapPolicy, Recurrence
from nexus_schedd.model.calendars import ExclusionCalendar, PublicHolidays, check_exclude
from nexus_schedd.model.recurrence import UNIT_KINDS, RecurrenceKind
from nexus_schedd.model.schedule import parse_cron, schedule_anchor, validate_schedule
from nexus_schedd.model.times import (
    local_wall_time,
    localize,
    parse_every,
    parse_instant,
    resolve_zone,
)
from nexus_schedd.store import sqlite_path_from_url
from nexus_schedd.store.base import Durability

SYSTEM_STATE_DIR = Path("/var/lib/nexus-schedd")
DB_FILE = "schedd.db"
NO_FILE = "<defaults>"

EventLoop = Literal["uvloop", "asyncio"]
LogFormat = Literal["auto", "json", "console"]

_EVENT_LOOPS: tuple[EventLoop, ...] = ("uvloop", "asyncio")
_LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_DURABILITIES: tuple[Durability, ...] = ("full", "normal")
_TEN_YEARS_S = 10 * 365 * 86400.0
_OVERRIDE_KEYS = frozenset({"socket", "state_dir"})
_CRON_PROBE_START = datetime(2000, 1, 1, tzinfo=UTC)

_SCHEDULE_KEYS = frozenset(
    {
        "name",
        "job_type",
        "cron",
        "every",
        "at",
        "timezone",
        "target_id",
        "payload",
        "priority",
        "max_retries",
        "timeout_s",
        "misfire",
        "misfire_grace_s",
        "overlap",
        "jitter_s",
        "ends_at",
        "max_occurrences",
        "on_success",
        "on_failure",
        "exclude",
    }
)
_CALENDAR_KEYS = frozenset({"dates", "ranges", "holidays", "subdivision"})
# [[schedules]] keys that are JobSpec fields under the same name.
_JOB_FIELDS = (
    "on_success",
    "on_failure",
    "job_type",
    "target_id",
    "priority",
    "max_retries",
    "timeout_s",
    "misfire",
    "misfire_grace_s",
    "overlap",
    "jitter_s",
)
# Where a JobSpec/Recurrence field comes from in a [[schedules]] entry.
_SPEC_FIELD_TO_KEY = {
    "run_at": "at",
    "recurrence.timezone": "timezone",
    "recurrence.ends_at": "ends_at",
    "recurrence.max_occurrences": "max_occurrences",
    "recurrence.interval": "every",
    "recurrence.cron": "cron",
    "recurrence.kind": "every",
    "recurrence.exclude": "exclude",
}

_NOTIFY_KEYS = frozenset(
    {"on", "job_types", "job_type", "payload", "target_id", "priority", "max_retries", "timeout_s"}
)
# [[notify]] keys that are JobSpec fields of the notification job under the same name.
_NOTIFY_JOB_FIELDS = ("job_type", "target_id", "priority", "max_retries", "timeout_s")

_T = TypeVar("_T")
_E = TypeVar("_E", MisfirePolicy, OverlapPolicy)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """``[daemon]``: where the daemon keeps its state and socket, and how it runs."""

    state_dir: Path
    socket: Path
    timezone: str = "UTC"
    max_concurrency: int = 64
    shutdown_grace_s: float = 30.0
    event_loop: EventLoop = "uvloop"
    log_format: LogFormat = "auto"
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: the database URL and how hard writes are made durable."""

    url: str
    durability: Durability = "full"
    commit_interval_ms: int = 5
    start_ahead_ms: int = 30
    """How long before its run_at a due job's start is checkpointed (the handler
    still runs at run_at): room for the start's fsync, so it is not lateness."""
    lease_s: float = 30.0
    """Multi-node (PostgreSQL): how long a claim holds a job without renewal."""
    safety_recheck_s: float = 60.0
    """Multi-node: how often a node re-reads the store against lost notifications."""
    node: str = ""
    """Multi-node: this node's name; empty = ``HOSTNAME-PID`` (unique per process)."""

    @property
    def shared(self) -> bool:
        """True when the URL names a store several nodes share (PostgreSQL)."""
        return self.url.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """``[history]``: how much run history is kept."""

    keep_days: int = 30
    keep_per_job: int = 100


@dataclass(frozen=True, slots=True)
class Config:
    """A complete, validated configuration."""

    path: Path | None
    daemon: DaemonConfig
    store: StoreConfig
    control: ControlSettings = field(default_factory=ControlSettings)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    defaults: JobDefaults = field(default_factory=JobDefaults)
    limits: dict[str, int] = field(default_factory=dict)
    """Per-job-type concurrency limits (``[limits]``)."""
    rates: dict[str, Rate] = field(default_factory=dict)
    """Per-job-type start rates (``[limits.rates]``)."""
    handlers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The raw ``[handlers.NAME]`` tables, passed to the handler factories."""
    schedules: list[JobSpec] = field(default_factory=list)
    """The static ``[[schedules]]``, reconciled by name on start and reload."""
    notify: list[NotifyRule] = field(default_factory=list)
    """The ``[[notify]]`` rules: jobs to add when jobs fail, retry, crash, are
    overdue or skip occurrences (SPEC 15)."""
    calendars: dict[str, ExclusionCalendar] = field(default_factory=dict)
    """The exclusion calendars (``[calendars.NAME]``, SPEC 15), installed into
    :data:`~nexus_schedd.model.calendars.CALENDARS` on start and reload."""
    warnings: list[str] = field(default_factory=list)
    """Problems that do not stop the daemon (e.g. a control group that does not exist)."""

    def engine_settings(self, node: str | None = None) -> EngineSettings:
        """The engine's slice of this config; ``node`` defaults to ``[store] node``,
        else the host name (plus the pid on a shared store, so two daemons on one
        machine hold separate leases)."""
        if node is None:
            node = self.store.node or socket.gethostname()
            if self.store.shared and not self.store.node:
                node = f"{node}-{os.getpid()}"
        return EngineSettings(
            node=node,
            lease_s=self.store.lease_s,
            safety_recheck_s=self.store.safety_recheck_s,
            max_concurrency=self.daemon.max_concurrency,
            type_limits=dict(self.limits),
            type_rates=dict(self.rates),
            defaults=self.defaults,
            notify=tuple(self.notify),
            commit_interval_ms=float(self.store.commit_interval_ms),
            start_ahead_ms=float(self.store.start_ahead_ms),
            shutdown_grace_s=self.daemon.shutdown_grace_s,
            history_keep_days=float(self.history.keep_days),
            history_keep_per_job=self.history.keep_per_job,
        )


def default_state_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """``/var/lib/nexus-schedd`` for root, else ``$XDG_STATE_HOME/nexus-schedd``."""
    env = os.environ if env is None else env
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_STATE_DIR
    base = env.get("XDG_STATE_HOME") or ""
    if not base or not Path(base).is_absolute():
        # The XDG spec says relative values are invalid and must be ignored.
        home = env.get("HOME") or str(Path.home())
        base = str(Path(home) / ".local" / "state")
    return Path(base) / "nexus-schedd"


def check_schedule_types(
    schedules: Sequence[JobSpec],
    supports: Callable[[str], bool],
    file: str,
    check_payload: Callable[[str, Mapping[str, Any]], None] | None = None,
) -> None:
    """Refuse a ``[[schedules]]`` entry whose job type no loaded handler runs, or
    whose payload its handler's add-time check refuses (``check_payload``: the
    registry's ``check_job``).

    Checked once the handlers are loaded (start-up, ``--check-config``, reload),
    before anything is applied, so a refused reload changes nothing.
    """
    for index, spec in enumerate(schedules):
        if not supports(spec.job_type):
            raise ConfigError(
                file,
                f"schedules[{index}].job_type",
                f"no loaded handler supports job type {spec.job_type!r} (schedule {spec.name!r})",
            )
        if check_payload is not None:
            try:
                check_payload(spec.job_type, spec.payload)
            except InvalidSpec as exc:
                raise ConfigError(
                    file,
                    f"schedules[{index}].{exc.field}",
                    f"{exc.reason} (schedule {spec.name!r})",
                ) from None
        for key, follow_up in spec.follow_ups():
            prefix = f"schedules[{index}].{key}"
            if not supports(follow_up.job_type):
                raise ConfigError(
                    file,
                    f"{prefix}.job_type",
                    f"no loaded handler supports job type {follow_up.job_type!r}"
                    f" (schedule {spec.name!r})",
                )
            if check_payload is not None:
                try:
                    check_payload(follow_up.job_type, follow_up.payload)
                except InvalidSpec as exc:
                    raise ConfigError(
                        file, f"{prefix}.{exc.field}", f"{exc.reason} (schedule {spec.name!r})"
                    ) from None


def check_notify_types(
    rules: Sequence[NotifyRule],
    supports: Callable[[str], bool],
    file: str,
    check_payload: Callable[[str, Mapping[str, Any]], None],
) -> None:
    """Refuse a ``[[notify]]`` rule whose job type no loaded handler runs, or whose
    payload its handler refuses; checked with :func:`check_schedule_types`."""
    for index, rule in enumerate(rules):
        spec = rule.spec
        if not supports(spec.job_type):
            raise ConfigError(
                file,
                f"notify[{index}].job_type",
                f"no loaded handler supports job type {spec.job_type!r}",
            )
        try:
            check_payload(spec.job_type, spec.payload)
        except InvalidSpec as exc:
            raise ConfigError(file, f"notify[{index}].{exc.field}", exc.reason) from None


def load_config(
    path: Path | str | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate the config file at ``path`` (None: built-in defaults only).

    ``overrides`` holds command-line values (``socket``, ``state_dir``) that win
    over everything; ``env`` (default ``os.environ``) supplies the XDG variables
    and ``$NEXUS_SCHEDD_SOCKET``. Raises :class:`ConfigError` on any problem.
    """
    env = os.environ if env is None else env
    overrides = overrides or {}
    if path is None:
        file_path: Path | None = None
        data: dict[str, Any] = {}
    else:
        file_path = Path(path).absolute()
        data = _read_toml(file_path)
    return _Parser(file_path, env).parse(data, overrides)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "", "no such file") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None


class _Parser:
    """One pass over a parsed TOML document; knows the file for error messages."""

    def __init__(self, path: Path | None, env: Mapping[str, str]) -> None:
        self.path = path
        self.file = str(path) if path is not None else NO_FILE
        self.base_dir = path.parent if path is not None else Path.cwd()
        self.env = env
        self.warnings: list[str] = []

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, key, reason)

    def parse(self, data: dict[str, Any], overrides: Mapping[str, Any]) -> Config:
        unknown_overrides = set(overrides) - _OVERRIDE_KEYS
        if unknown_overrides:
            raise ConfigError(
                "<command line>", "", f"unknown override(s): {', '.join(sorted(unknown_overrides))}"
            )
        known = {"daemon", "store", "defaults", "control", "history", "limits", "handlers"}
        known.update(("schedules", "notify", "calendars"))
        self.refuse_unknown(data, known, "")
        daemon = self.parse_daemon(self.table(data, "daemon"), overrides)
        calendars = self.parse_calendars(self.table(data, "calendars"))
        defaults = self.parse_defaults(self.table(data, "defaults"), daemon.timezone)
        limits, rates = self.parse_limits(self.table(data, "limits"))
        return Config(
            path=self.path,
            daemon=daemon,
            store=self.parse_store(self.table(data, "store"), daemon.state_dir),
            control=self.parse_control(self.table(data, "control"), daemon.timezone, defaults),
            history=self.parse_history(self.table(data, "history")),
            defaults=defaults,
            limits=limits,
            rates=rates,
            handlers=self.parse_handlers(self.table(data, "handlers")),
            schedules=self.parse_schedules(data.get("schedules", []), daemon.timezone, calendars),
            notify=self.parse_notify(data.get("notify", []), daemon.timezone),
            calendars=calendars,
            warnings=list(self.warnings),
        )

    # -- sections ----------------------------------------------------------------

    def parse_daemon(self, table: dict[str, Any], overrides: Mapping[str, Any]) -> DaemonConfig:
        keys = {
            "state_dir",
            "socket",
            "timezone",
            "max_concurrency",
            "shutdown_grace_s",
            "event_loop",
            "log_format",
            "log_level",
        }
        self.refuse_unknown(table, keys, "daemon")
        # Under the shipped unit, systemd names the directories it created for us
        # (StateDirectory=, RuntimeDirectory=); they are the system defaults then.
        systemd_state = _first_dir(self.env.get("STATE_DIRECTORY"))
        systemd_runtime = _first_dir(self.env.get("RUNTIME_DIRECTORY"))
        state_dir = (
            self.path_value(table, "state_dir", "daemon")
            or systemd_state
            or default_state_dir(self.env)
        )
        socket_path = (
            self.path_value(table, "socket", "daemon")
            or (systemd_runtime / "control.sock" if systemd_runtime else None)
            or default_socket_path({k: v for k, v in self.env.items() if k != SOCKET_ENV})
        )
        env_socket = self.env.get(SOCKET_ENV)
        if env_socket:
            socket_path = Path(env_socket).absolute()
        if overrides.get("state_dir") is not None:
            state_dir = Path(overrides["state_dir"]).absolute()
        if overrides.get("socket") is not None:
            socket_path = Path(overrides["socket"]).absolute()
        timezone = self.string(table, "timezone", "daemon", "UTC")
        try:
            resolve_zone(timezone)
        except InvalidSpec as exc:
            raise self.error("daemon.timezone", exc.reason) from None
        return DaemonConfig(
            state_dir=state_dir,
            socket=socket_path,
            timezone=timezone,
            max_concurrency=self.integer(table, "max_concurrency", "daemon", 64, 1, 100_000),
            shutdown_grace_s=self.seconds(table, "shutdown_grace_s", "daemon", 30.0, zero=True),
            event_loop=self.choice(table, "event_loop", "daemon", _EVENT_LOOPS, "uvloop"),
            log_format=self.choice(table, "log_format", "daemon", _LOG_FORMATS, "auto"),
            log_level=self.choice(table, "log_level", "daemon", _LOG_LEVELS, "info"),
        )

    def parse_store(self, table: dict[str, Any], state_dir: Path) -> StoreConfig:
        self.refuse_unknown(
            table,
            {
                "url",
                "durability",
                "commit_interval_ms",
                "start_ahead_ms",
                "lease_s",
                "safety_recheck_s",
                "node",
            },
            "store",
        )
        url = self.string(table, "url", "store", "")
        if not url:
            url = f"sqlite://{state_dir / DB_FILE}"
        elif url.startswith("sqlite:"):
            try:
                db_path = sqlite_path_from_url(url)
            except StoreError as exc:
                raise self.error("store.url", exc.message) from None
            url = f"sqlite://{self.resolve(str(db_path))}"
        elif not url.startswith(("postgresql://", "postgres://")):
            raise self.error(
                "store.url",
                f"unsupported URL {url!r} (use sqlite:///ABSOLUTE, sqlite://RELATIVE "
                "or postgresql://...)",
            )
        return StoreConfig(
            url=url,
            durability=self.choice(table, "durability", "store", _DURABILITIES, "full"),
            commit_interval_ms=self.integer(table, "commit_interval_ms", "store", 5, 0, 10_000),
            start_ahead_ms=self.integer(table, "start_ahead_ms", "store", 30, 0, 1000),
            lease_s=self.bounded(table, "lease_s", 30.0, 1.0, 3600.0),
            safety_recheck_s=self.bounded(table, "safety_recheck_s", 60.0, 1.0, 86_400.0),
            node=self.string(table, "node", "store", ""),
        )

    def bounded(
        self, table: Mapping[str, Any], key: str, default: float, low: float, high: float
    ) -> float:
        value = self.seconds(table, key, "store", default, zero=False)
        if not low <= value <= high:
            raise self.error(f"store.{key}", f"must be within {low:g} .. {high:g} s, got {value:g}")
        return value

    def parse_defaults(self, table: dict[str, Any], timezone: str) -> JobDefaults:
        keys = {
            "max_retries",
            "timeout_s",
            "backoff_base_s",
            "backoff_factor",
            "backoff_max_s",
            "backoff_jitter",
            "misfire",
            "misfire_grace_s",
            "overlap",
            "overdue_after_s",
        }
        self.refuse_unknown(table, keys, "defaults")
        base = self.seconds(table, "backoff_base_s", "defaults", 60.0, zero=True)
        maximum = self.seconds(table, "backoff_max_s", "defaults", 3600.0, zero=True)
        if maximum < base:
            raise self.error(
                "defaults.backoff_max_s", f"must be >= backoff_base_s ({base:g}), got {maximum:g}"
            )
        factor = self.number(table, "backoff_factor", "defaults", 2.0)
        if not 1.0 <= factor <= 100.0:
            raise self.error(
                "defaults.backoff_factor", f"must be between 1 and 100, got {factor:g}"
            )
        jitter = self.number(table, "backoff_jitter", "defaults", 0.1)
        if not 0.0 <= jitter <= 1.0:
            raise self.error("defaults.backoff_jitter", f"must be between 0 and 1, got {jitter:g}")
        return JobDefaults(
            timezone=timezone,
            max_retries=self.integer(table, "max_retries", "defaults", 3, 0, 1000),
            timeout_s=self.seconds(table, "timeout_s", "defaults", 300.0, zero=False),
            backoff_base_s=base,
            backoff_factor=factor,
            backoff_max_s=maximum,
            backoff_jitter=jitter,
            misfire=self.enum(table, "misfire", "defaults", MisfirePolicy, MisfirePolicy.RUN_ONCE),
            misfire_grace_s=self.seconds(table, "misfire_grace_s", "defaults", 60.0, zero=True),
            overlap=self.enum(table, "overlap", "defaults", OverlapPolicy, OverlapPolicy.FORBID),
            overdue_after_s=self.seconds(table, "overdue_after_s", "defaults", 300.0, zero=True),
        )

    def parse_control(
        self, table: dict[str, Any], timezone: str, defaults: JobDefaults
    ) -> ControlSettings:
        keys = {
            "socket_mode",
            "admin_group",
            "read_group",
            "max_message_bytes",
            "max_connections",
            "idle_timeout_s",
        }
        self.refuse_unknown(table, keys, "control")
        admin_group = self.string(table, "admin_group", "control", "nexus-schedd")
        read_group = self.string(table, "read_group", "control", "")
        for key, group in (("admin_group", admin_group), ("read_group", read_group)):
            if group and not _group_exists(group):
                self.warnings.append(
                    f"{self.file}: control.{key}: group {group!r} does not exist on this machine"
                )
        return ControlSettings(
            default_timezone=timezone,
            overdue_after_s=defaults.overdue_after_s,
            socket_mode=self.socket_mode(table),
            admin_group=admin_group,
            read_group=read_group,
            max_message_bytes=self.integer(
                table, "max_message_bytes", "control", 1024 * 1024, 1024, 256 * 1024 * 1024
            ),
            max_connections=self.integer(table, "max_connections", "control", 128, 1, 65_536),
            idle_timeout_s=self.seconds(table, "idle_timeout_s", "control", 300.0, zero=False),
        )

    def parse_history(self, table: dict[str, Any]) -> HistoryConfig:
        self.refuse_unknown(table, {"keep_days", "keep_per_job"}, "history")
        return HistoryConfig(
            keep_days=self.integer(table, "keep_days", "history", 30, 1, 36_500),
            keep_per_job=self.integer(table, "keep_per_job", "history", 100, 1, 1_000_000),
        )

    def parse_limits(self, table: dict[str, Any]) -> tuple[dict[str, int], dict[str, Rate]]:
        """``[limits]``: concurrency per job type, and ``[limits.rates]``."""
        counts = {key: value for key, value in table.items() if key != "rates"}
        limits = {
            job_type: self.integer(counts, job_type, "limits", 1, 1, 100_000) for job_type in counts
        }
        rates: dict[str, Rate] = {}
        rates_table = table.get("rates", {})
        if not isinstance(rates_table, dict):
            raise self.error("limits.rates", "must be a table ([limits.rates])")
        for job_type, text in rates_table.items():
            key = f"limits.rates.{job_type}"
            try:
                rates[job_type] = Rate.parse(text, key)
            except InvalidSpec as exc:
                raise ConfigError(self.file, key, exc.reason) from None
        return limits, rates

    def parse_handlers(self, table: dict[str, Any]) -> dict[str, dict[str, Any]]:
        handlers: dict[str, dict[str, Any]] = {}
        for name, value in table.items():
            key = f"handlers.{name}"
            if not isinstance(value, dict):
                raise self.error(key, "must be a table ([handlers.NAME])")
            factory = value.get("factory")
            if factory is not None and (
                not isinstance(factory, str) or not _is_factory_path(factory)
            ):
                raise self.error(f"{key}.factory", "must be a 'module:attr' string")
            enabled = value.get("enabled", True)
            if not isinstance(enabled, bool):
                raise self.error(f"{key}.enabled", "must be true or false")
            handlers[name] = dict(value)
        return handlers

    def parse_notify(self, value: Any, timezone: str) -> list[NotifyRule]:
        """``[[notify]]``: on which events, for which job types, which job to add."""
        if not isinstance(value, list):
            raise self.error("notify", "must be an array of tables ([[notify]])")
        rules: list[NotifyRule] = []
        for index, entry in enumerate(value):
            prefix = f"notify[{index}]"
            if not isinstance(entry, dict):
                raise self.error(prefix, "must be a table")
            unknown = sorted(set(entry) - _NOTIFY_KEYS)
            if unknown:
                raise self.error(
                    f"{prefix}.{unknown[0]}",
                    f"unknown key (notify keys: {', '.join(sorted(_NOTIFY_KEYS))})",
                )
            on = entry.get("on")
            if not isinstance(on, list) or not on or not all(isinstance(e, str) for e in on):
                raise self.error(
                    f"{prefix}.on",
                    f"must be a non-empty list of events ({', '.join(NOTIFY_EVENTS)})",
                )
            for event in on:
                if event not in NOTIFY_EVENTS:
                    raise self.error(
                        f"{prefix}.on",
                        f"unknown event {event!r} (use {', '.join(NOTIFY_EVENTS)})",
                    )
            globs = entry.get("job_types", ["*"])
            if (
                not isinstance(globs, list)
                or not globs
                or not all(isinstance(g, str) and g for g in globs)
            ):
                raise self.error(
                    f"{prefix}.job_types", "must be a non-empty list of job type globs"
                )
            payload = entry.get("payload", {})
            if not isinstance(payload, dict):
                raise self.error(f"{prefix}.payload", "must be a table")
            if "event" in payload:
                raise self.error(
                    f"{prefix}.payload.event", "is set by the daemon (the event's JSON)"
                )
            fields = {key: entry[key] for key in _NOTIFY_JOB_FIELDS if key in entry}
            try:
                spec = JobSpec.from_json({**fields, "payload": payload}, timezone)
            except InvalidSpec as exc:
                raise self.error(f"{prefix}.{exc.field}", exc.reason) from None
            rules.append(NotifyRule(frozenset(on), tuple(globs), spec))
        return rules

    def parse_calendars(self, table: dict[str, Any]) -> dict[str, ExclusionCalendar]:
        """``[calendars.NAME]``: ``dates``, ``ranges`` and/or ``holidays`` (+ ``subdivision``)."""
        calendars: dict[str, ExclusionCalendar] = {}
        for name, value in table.items():
            key = f"calendars.{name}"
            if not isinstance(value, dict):
                raise self.error(key, "must be a table ([calendars.NAME])")
            try:
                check_exclude([name])
            except InvalidSpec as exc:
                raise self.error(key, exc.reason) from None
            self.refuse_unknown(value, set(_CALENDAR_KEYS), key)
            dates = [
                self.date_value(day, f"{key}.dates[{index}]")
                for index, day in enumerate(self.array(value, "dates", key))
            ]
            ranges: list[tuple[date, date]] = []
            for index, pair in enumerate(self.array(value, "ranges", key)):
                where = f"{key}.ranges[{index}]"
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self.error(
                        where, f"must be a pair [first, last] of ISO dates, got {_describe(pair)}"
                    )
                first = self.date_value(pair[0], f"{where}[0]")
                last = self.date_value(pair[1], f"{where}[1]")
                if last < first:
                    raise self.error(where, f"ends ({last}) before it starts ({first})")
                ranges.append((first, last))
            holidays = self.parse_holidays(value, key)
            calendars[name] = ExclusionCalendar.build(name, dates, ranges, holidays)
        return calendars

    def parse_holidays(self, table: dict[str, Any], key: str) -> PublicHolidays | None:
        country = table.get("holidays")
        subdivision = table.get("subdivision")
        if country is None:
            if subdivision is not None:
                raise self.error(f"{key}.subdivision", "only applies with 'holidays'")
            return None
        if not isinstance(country, str) or not country:
            raise self.error(
                f"{key}.holidays", f"must be a country code like 'DE', got {_describe(country)}"
            )
        if subdivision is not None and (not isinstance(subdivision, str) or not subdivision):
            raise self.error(
                f"{key}.subdivision",
                f"must be a subdivision code like 'BY', got {_describe(subdivision)}",
            )
        try:
            return PublicHolidays(country, subdivision)
        except InvalidSpec as exc:
            raise self.error(f"{key}.{exc.field}", exc.reason) from None

    def array(self, table: Mapping[str, Any], key: str, section: str) -> list[Any]:
        value = table.get(key, [])
        if not isinstance(value, list):
            raise self.error(f"{section}.{key}", f"must be an array, got {_describe(value)}")
        return value

    def date_value(self, value: Any, key: str) -> date:
        """A TOML local date (``2026-12-24``) or an ISO date string."""
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise self.error(key, f"must be an ISO date (YYYY-MM-DD), got {_describe(value)}")

    def parse_schedules(
        self, value: Any, timezone: str, calendars: Mapping[str, ExclusionCalendar]
    ) -> list[JobSpec]:
        if not isinstance(value, list):
            raise self.error("schedules", "must be an array of tables ([[schedules]])")
        specs: list[JobSpec] = []
        seen: dict[str, int] = {}
        for index, entry in enumerate(value):
            prefix = f"schedules[{index}]"
            if not isinstance(entry, dict):
                raise self.error(prefix, "must be a table")
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                raise self.error(f"{prefix}.name", "is required (a non-empty string)")
            if name in seen:
                raise self.error(
                    f"{prefix}.name", f"{name!r} is already used by schedules[{seen[name]}]"
                )
            seen[name] = index
            try:
                specs.append(self.parse_schedule(entry, prefix, timezone, calendars))
            except InvalidSpec as exc:
                key = _SPEC_FIELD_TO_KEY.get(exc.field, exc.field)
                raise self.error(f"{prefix}.{key}", f"{exc.reason} (schedule {name!r})") from None
        return specs

    def parse_schedule(
        self,
        entry: dict[str, Any],
        prefix: str,
        timezone: str,
        calendars: Mapping[str, ExclusionCalendar],
    ) -> JobSpec:
        unknown = set(entry) - _SCHEDULE_KEYS
        if unknown:
            first = sorted(unknown)[0]
            raise InvalidSpec(
                first, f"unknown key (schedule keys: {', '.join(sorted(_SCHEDULE_KEYS))})"
            )
        zone_name = entry.get("timezone", timezone)
        if not isinstance(zone_name, str):
            raise InvalidSpec("timezone", "must be a string")
        zone = resolve_zone(zone_name)
        cron, every = entry.get("cron"), entry.get("every")
        if cron is not None and every is not None:
            raise InvalidSpec("every", "give either 'cron' or 'every', not both")
        at = _instant(entry.get("at"), zone, "at")
        ends_at = _instant(entry.get("ends_at"), zone, "ends_at")
        exclude = check_exclude(entry.get("exclude"))
        for calendar in exclude:
            if calendar not in calendars:
                defined = ", ".join(sorted(calendars)) or "none are defined"
                raise InvalidSpec(
                    "exclude", f"unknown calendar {calendar!r} ([calendars]: {defined})"
                )
        max_occurrences = entry.get("max_occurrences")
        recurrence: Recurrence | None
        if cron is not None:
            if not isinstance(cron, str):
                raise InvalidSpec("cron", "must be a string")
            parse_cron(cron)
            recurrence = Recurrence(
                kind=RecurrenceKind.CRON,
                cron=cron,
                timezone=zone_name,
                ends_at=ends_at,
                max_occurrences=max_occurrences,
                exclude=exclude,
            )
            # Refuse an expression that can never fire ("0 0 30 2 *") now rather
            # than at add time. ends_at is left to the engine: it depends on "now".
            # Exclusions too are left to the engine (checked against the calendars
            # installed with this config; a schedule they never let fire is skipped).
            validate_schedule(
                replace(recurrence, ends_at=None, exclude=()), at or _CRON_PROBE_START
            )
        elif every is not None:
            if not isinstance(every, str):
                raise InvalidSpec("every", "must be a string like '5 minute'")
            interval, unit = parse_every(every)
            recurrence = Recurrence(
                kind=UNIT_KINDS[unit],
                interval=interval,
                timezone=zone_name,
                ends_at=ends_at,
                max_occurrences=max_occurrences,
                exclude=exclude,
            )
        else:
            if at is None:
                raise InvalidSpec("at", "a schedule needs 'cron', 'every', or 'at' for a one-shot")
            for key in ("ends_at", "max_occurrences", "exclude"):
                if entry.get(key) is not None:
                    raise InvalidSpec(key, "only applies to a recurring schedule (cron or every)")
            recurrence = None
        payload = entry.get("payload", {})
        if not isinstance(payload, dict):
            raise InvalidSpec("payload", "must be a table")
        # The job fields are those of the protocol's JSON form: one validation for both.
        fields = {key: entry[key] for key in _JOB_FIELDS if key in entry}
        spec = JobSpec.from_json({**fields, "payload": payload, "name": entry["name"]}, zone_name)
        anchor_at = None
        if at is not None and recurrence is not None:
            # A local `at` inside a DST gap runs once after the gap; the schedule
            # keeps the wall-clock time written (SPEC 3), as AddJob does.
            anchor = schedule_anchor(recurrence, at, _wall_time(entry.get("at")))
            anchor_at = None if anchor == at else anchor
        return replace(spec, run_at=at, recurrence=recurrence, anchor_at=anchor_at)

    # -- values ------------------------------------------------------------------

    def refuse_unknown(self, table: Mapping[str, Any], known: set[str], section: str) -> None:
        for key in table:
            if key not in known:
                dotted = f"{section}.{key}" if section else key
                raise self.error(dotted, f"unknown key (known: {', '.join(sorted(known))})")

    def table(self, data: Mapping[str, Any], name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(name, f"must be a table ([{name}])")
        return value

    def raw(
        self,
        table: Mapping[str, Any],
        key: str,
        check: Callable[[Any], bool],
        what: str,
        section: str,
        default: _T,
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        if not check(value):
            raise self.error(f"{section}.{key}", f"must be {what}, got {_describe(value)}")
        return value

    def string(self, table: Mapping[str, Any], key: str, section: str, default: str) -> str:
        return cast(
            str, self.raw(table, key, lambda v: isinstance(v, str), "a string", section, default)
        )

    def integer(
        self, table: Mapping[str, Any], key: str, section: str, default: int, low: int, high: int
    ) -> int:
        value = cast(int, self.raw(table, key, _is_int, "a whole number", section, default))
        if not low <= value <= high:
            raise self.error(f"{section}.{key}", f"must be between {low} and {high}, got {value}")
        return value

    def number(self, table: Mapping[str, Any], key: str, section: str, default: float) -> float:
        value = self.raw(table, key, _is_number, "a finite number", section, default)
        return float(value)

    def seconds(
        self, table: Mapping[str, Any], key: str, section: str, default: float, *, zero: bool
    ) -> float:
        value = self.number(table, key, section, default)
        if value < 0 or (value == 0 and not zero):
            raise self.error(
                f"{section}.{key}",
                f"must be {'>= 0' if zero else '> 0'} seconds, got {value:g}",
            )
        if value > _TEN_YEARS_S:
            raise self.error(f"{section}.{key}", f"is more than ten years ({value:g} s)")
        return value

    def choice(
        self,
        table: Mapping[str, Any],
        key: str,
        section: str,
        choices: tuple[_T, ...],
        default: _T,
    ) -> _T:
        value = self.string(table, key, section, cast(str, default))
        if value not in choices:
            options = " | ".join(str(choice) for choice in choices)
            raise self.error(f"{section}.{key}", f"must be one of {options}, got {value!r}")
        return cast(_T, value)

    def enum(
        self,
        table: Mapping[str, Any],
        key: str,
        section: str,
        kind: type[_E],
        default: _E,
    ) -> _E:
        value = self.choice(table, key, section, tuple(m.value for m in kind), default.value)
        return kind(value)

    def path_value(self, table: Mapping[str, Any], key: str, section: str) -> Path | None:
        text = self.string(table, key, section, "")
        return self.resolve(text) if text else None

    def resolve(self, text: str) -> Path:
        path = Path(text).expanduser()
        # Relative paths follow the file, not the daemon's working directory.
        return Path(os.path.normpath(path if path.is_absolute() else self.base_dir / path))

    def socket_mode(self, table: Mapping[str, Any]) -> int:
        value = table.get("socket_mode", "0660")
        if isinstance(value, str):
            try:
                mode = int(value, 8)
            except ValueError:
                raise self.error(
                    "control.socket_mode", f"must be an octal string like '0660', got {value!r}"
                ) from None
        elif _is_int(value):
            mode = value
        else:
            raise self.error(
                "control.socket_mode",
                f"must be an octal string like '0660', got {_describe(value)}",
            )
        if not 0 <= mode <= 0o777:
            raise self.error("control.socket_mode", f"must be between 0000 and 0777, got {mode:o}")
        if not mode & 0o600 == 0o600:
            raise self.error(
                "control.socket_mode", f"must give the owner read and write (0600), got {mode:04o}"
            )
        return mode


def _first_dir(value: str | None) -> Path | None:
    """The first absolute entry of a colon-separated systemd directory list."""
    first = (value or "").split(":")[0]
    return Path(first) if first.startswith("/") else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_factory_path(text: str) -> bool:
    module, sep, attr = text.partition(":")
    return bool(sep and module.strip() and attr.strip())


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}
    kinds.update({list: "an array", dict: "a table", datetime: "a date-time"})
    kinds.update({date: "a date", time: "a time"})
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _wall_time(value: Any) -> datetime | None:
    """The naive local date-time a TOML value names when it has no offset."""
    if isinstance(value, datetime):
        return value if value.tzinfo is None else None
    return local_wall_time(value) if isinstance(value, str) else None


def _instant(value: Any, zone: Any, key: str) -> datetime | None:
    """A TOML date-time (offset or local) or an RFC 3339 string; local times are read in ``zone``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else localize(value, zone)
    if isinstance(value, str):
        return parse_instant(value, zone, key)
    raise InvalidSpec(key, f"must be a date-time (RFC 3339), got {_describe(value)}")


__all__ = [
    "SOCKET_ENV",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "HistoryConfig",
    "StoreConfig",
    "default_state_dir",
    "load_config",
]
