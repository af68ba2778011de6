"""The TOML configuration: defaults, precedence, validation and static schedules."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from nexus_schedd.control.paths import default_socket_path
from nexus_schedd.daemon.config import (
    check_notify_types,
    check_schedule_types,
    default_state_dir,
    load_config,
)
from nexus_schedd.engine.rates import Rate
from nexus_schedd.errors import ConfigError
from nexus_schedd.model import Job, JobDefaults, MisfirePolicy, OverlapPolicy, RecurrenceKind
from nexus_schedd.store import SQLiteStore, open_store
from tests.occurrences import walk

USER_ENV = {"HOME": "/home/ann", "XDG_RUNTIME_DIR": "/run/user/1000"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "schedd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(path: Path, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=USER_ENV, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_no_file_gives_every_default() -> None:
    config = load_config(None, env=USER_ENV)
    assert config.path is None
    assert config.daemon.timezone == "UTC"
    assert config.daemon.max_concurrency == 64
    assert config.daemon.shutdown_grace_s == 30.0
    assert config.daemon.event_loop == "uvloop"
    assert config.daemon.log_format == "auto"
    assert config.daemon.log_level == "info"
    assert config.store.durability == "full"
    assert config.store.commit_interval_ms == 5
    assert config.store.start_ahead_ms == 30
    assert config.engine_settings(node="n").start_ahead_ms == 30
    assert config.defaults == JobDefaults()
    assert config.control.socket_mode == 0o660
    assert config.control.admin_group == "nexus-schedd"
    assert config.control.read_group == ""
    assert config.control.max_message_bytes == 1048576
    assert config.control.max_connections == 128
    assert config.control.idle_timeout_s == 300.0
    assert config.history.keep_days == 30
    assert config.history.keep_per_job == 100
    assert config.limits == {}
    assert config.handlers == {}
    assert config.schedules == []


def test_state_dir_and_socket_defaults_depend_on_root() -> None:
    assert default_state_dir({}, euid=0) == Path("/var/lib/nexus-schedd")
    assert default_socket_path({}, uid=0) == Path("/run/nexus-schedd/control.sock")
    assert default_state_dir({"XDG_STATE_HOME": "/x/state"}, euid=1000) == Path(
        "/x/state/nexus-schedd"
    )
    assert default_state_dir({"HOME": "/home/ann"}, euid=1000) == Path(
        "/home/ann/.local/state/nexus-schedd"
    )
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1000"}, uid=1000) == Path(
        "/run/user/1000/nexus-schedd/control.sock"
    )


def test_under_systemd_the_unit_directories_are_the_defaults() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/nexus-schedd", "RUNTIME_DIRECTORY": "/run/nexus-schedd"}
    config = load_config(None, env={**USER_ENV, **env})
    assert config.daemon.state_dir == Path("/var/lib/nexus-schedd")
    assert config.daemon.socket == Path("/run/nexus-schedd/control.sock")


def test_client_socket_follows_the_environment_override() -> None:
    env = {"NEXUS_SCHEDD_SOCKET": "/tmp/x.sock"}
    assert default_socket_path(env, uid=0) == Path("/tmp/x.sock")


def test_store_url_is_derived_from_the_state_dir(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nstate_dir = "/srv/schedd"\n')
    config = load_config(path, env=USER_ENV)
    assert config.store.url == "sqlite:///srv/schedd/schedd.db"


@pytest.mark.parametrize("url", ["sqlite://../db/x.db", "sqlite:../db/x.db"])
def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, url: str) -> None:
    (tmp_path / "config").mkdir(exist_ok=True)
    text = '[daemon]\nstate_dir = "../var"\nsocket = "../var/control.sock"\n'
    text += f'[store]\nurl = "{url}"\n'
    path = write(tmp_path / "config", text)
    config = load_config(path, env=USER_ENV)
    assert config.daemon.state_dir == tmp_path / "var"
    assert config.daemon.socket == tmp_path / "var" / "control.sock"
    assert config.store.url == f"sqlite://{tmp_path / 'db' / 'x.db'}"
    store = open_store(config.store.url)  # the store reads the URL the config wrote
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "db" / "x.db"


def test_command_line_beats_environment_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nsocket = "/from/file.sock"\nstate_dir = "/from/file"\n')
    env = {**USER_ENV, "NEXUS_SCHEDD_SOCKET": "/from/env.sock"}
    assert load_config(path, env=env).daemon.socket == Path("/from/env.sock")
    config = load_config(
        path, env=env, overrides={"socket": Path("/from/cli.sock"), "state_dir": "/from/cli"}
    )
    assert config.daemon.socket == Path("/from/cli.sock")
    assert config.daemon.state_dir == Path("/from/cli")
    assert config.store.url == "sqlite:///from/cli/schedd.db"


def test_example_file_sets_every_default_and_schedules_nothing() -> None:
    config = load_config(REPO_ROOT / "config" / "nexus-schedd.toml", env=USER_ENV)
    defaults = load_config(None, env={}, overrides={"state_dir": "/var/lib/nexus-schedd"})
    assert config.daemon.state_dir == Path("/var/lib/nexus-schedd")
    assert config.daemon.socket == Path("/run/nexus-schedd/control.sock")
    assert config.store == defaults.store
    assert config.defaults == defaults.defaults
    assert config.control == defaults.control
    assert config.history == defaults.history
    assert (config.limits, config.handlers, config.schedules) == ({}, {}, [])


def test_example_file_commented_out_examples_are_valid(tmp_path: Path) -> None:
    text = (REPO_ROOT / "config" / "nexus-schedd.toml").read_text()
    # Example settings are commented as "#key = value"; prose as "# text".
    enabled = re.sub(r"(?m)^#(?=[^ #\n])", "", text)
    config = load_config(write(tmp_path, enabled), env=USER_ENV)
    assert config.limits == {"export_report": 4}
    assert config.handlers["exec"] == {"allow": ["/usr/local/bin/*"], "kill_grace_s": 5}
    assert config.handlers["http"] == {"allow_hosts": ["hooks.example.com"], "timeout_s": 30}
    assert config.handlers["my_plugin"]["enabled"] is False
    assert [spec.name for spec in config.schedules] == ["nightly-cleanup", "heartbeat"]


def test_dev_config_keeps_state_under_the_repository_and_runs_a_demo_within_seconds() -> None:
    config = load_config(REPO_ROOT / "config" / "dev.toml", env=USER_ENV)
    assert config.daemon.state_dir == REPO_ROOT / "var"
    assert config.daemon.socket.parent == REPO_ROOT / "var"
    assert config.daemon.log_format == "console"
    [demo] = [spec for spec in config.schedules if spec.job_type == "log"]
    assert demo.recurrence is not None and demo.recurrence.cron == "* * * * * */5"


def test_every_section_value_is_read(tmp_path: Path) -> None:
    text = """
[daemon]
timezone = "Europe/Berlin"
max_concurrency = 8
shutdown_grace_s = 5
event_loop = "asyncio"
log_format = "json"
log_level = "debug"
[store]
url = "postgresql://db.example/schedd"
durability = "normal"
commit_interval_ms = 20
start_ahead_ms = 100
[defaults]
max_retries = 0
timeout_s = 10.5
backoff_base_s = 1
backoff_factor = 3
backoff_max_s = 9
backoff_jitter = 0
misfire = "skip"
misfire_grace_s = 0
overlap = "allow"
overdue_after_s = 60
[control]
socket_mode = "0600"
admin_group = "root"
read_group = "root"
max_message_bytes = 4096
max_connections = 2
idle_timeout_s = 1.5
[history]
keep_days = 7
keep_per_job = 10
[limits]
export_report = 4
[limits.rates]
send_reminder = "100/minute"
[handlers.mine]
factory = "pkg.mod:make"
greeting = "hi"
"""
    config = load_config(write(tmp_path, text), env=USER_ENV)
    assert config.daemon.timezone == "Europe/Berlin"
    assert config.daemon.event_loop == "asyncio"
    assert config.store.url == "postgresql://db.example/schedd"
    assert config.store.durability == "normal"
    assert config.defaults == JobDefaults(
        timezone="Europe/Berlin",
        max_retries=0,
        timeout_s=10.5,
        backoff_base_s=1.0,
        backoff_factor=3.0,
        backoff_max_s=9.0,
        backoff_jitter=0.0,
        misfire=MisfirePolicy.SKIP,
        misfire_grace_s=0.0,
        overlap=OverlapPolicy.ALLOW,
        overdue_after_s=60.0,
    )
    assert config.control.socket_mode == 0o600
    assert config.control.max_connections == 2
    assert config.history.keep_days == 7
    assert config.limits == {"export_report": 4}
    assert config.rates == {"send_reminder": Rate(100, 60.0)}
    assert config.handlers == {"mine": {"factory": "pkg.mod:make", "greeting": "hi"}}
    assert config.warnings == []
    settings = config.engine_settings(node="n1")
    assert settings.node == "n1"
    assert settings.max_concurrency == 8
    assert settings.type_limits == {"export_report": 4}
    assert settings.type_rates == {"send_reminder": Rate(100, 60.0)}
    assert settings.defaults is config.defaults
    assert settings.commit_interval_ms == 20
    assert settings.start_ahead_ms == 100
    assert settings.shutdown_grace_s == 5
    assert settings.history_keep_days == 7
    assert settings.history_keep_per_job == 10


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[daemon]\nmax_concurrency = 0\n", "daemon.max_concurrency", "between 1 and"),
        ("[daemon]\nmax_concurrency = 1.5\n", "daemon.max_concurrency", "whole number"),
        ("[daemon]\nmax_concurrency = true\n", "daemon.max_concurrency", "whole number"),
        ('[daemon]\ntimezone = "Mars/Base"\n', "daemon.timezone", "unknown time zone"),
        ('[daemon]\nevent_loop = "trio"\n', "daemon.event_loop", "uvloop | asyncio"),
        ('[daemon]\nlog_format = "xml"\n', "daemon.log_format", "auto | json | console"),
        ('[daemon]\nlog_level = "loud"\n', "daemon.log_level", "must be one of"),
        ("[daemon]\nstate_dir = 3\n", "daemon.state_dir", "a string"),
        ("[daemon]\nshutdown_grace_s = -1\n", "daemon.shutdown_grace_s", ">= 0"),
        ("[daemon]\nshutdown_grace_s = nan\n", "daemon.shutdown_grace_s", "finite number"),
        ('[store]\nurl = "mysql://x"\n', "store.url", "unsupported URL"),
        ('[store]\nurl = "sqlite://"\n', "store.url", "names no database file"),
        ('[store]\nurl = "sqlite:var/"\n', "store.url", "names no database file"),
        ('[store]\ndurability = "extra"\n', "store.durability", "full | normal"),
        ("[store]\ncommit_interval_ms = -5\n", "store.commit_interval_ms", "between 0"),
        ("[store]\nstart_ahead_ms = 1001\n", "store.start_ahead_ms", "between 0 and 1000"),
        ("[defaults]\nmax_retries = -1\n", "defaults.max_retries", "between 0 and 1000"),
        ("[defaults]\ntimeout_s = 0\n", "defaults.timeout_s", "> 0"),
        ('[defaults]\ntimeout_s = "5m"\n', "defaults.timeout_s", "finite number"),
        ("[defaults]\nbackoff_factor = 0.5\n", "defaults.backoff_factor", "between 1 and"),
        ("[defaults]\nbackoff_jitter = 2\n", "defaults.backoff_jitter", "between 0 and 1"),
        ("[defaults]\nbackoff_max_s = 10\n", "defaults.backoff_max_s", ">= backoff_base_s"),
        ('[defaults]\nmisfire = "maybe"\n', "defaults.misfire", "run_once | run_all | skip"),
        ('[defaults]\noverlap = "queue"\n', "defaults.overlap", "forbid | allow | replace"),
        ('[control]\nsocket_mode = "0999"\n', "control.socket_mode", "octal"),
        ('[control]\nsocket_mode = "0060"\n', "control.socket_mode", "owner read and write"),
        ("[control]\nmax_message_bytes = 10\n", "control.max_message_bytes", "between 1024"),
        ("[control]\nmax_connections = 0\n", "control.max_connections", "between 1"),
        ("[control]\nidle_timeout_s = 0\n", "control.idle_timeout_s", "> 0"),
        ("[history]\nkeep_days = 0\n", "history.keep_days", "between 1"),
        ("[limits]\nexport_report = 0\n", "limits.export_report", "between 1"),
        ('[limits]\nexport_report = "4"\n', "limits.export_report", "whole number"),
        ('[limits.rates]\nmail = "100"\n', "limits.rates.mail", "like '100/minute'"),
        ('[limits.rates]\nmail = "10/day"\n', "limits.rates.mail", "second|minute|hour"),
        ("[limits.rates]\nmail = 100\n", "limits.rates.mail", "like '100/minute'"),
        ("[limits]\nrates = 5\n", "limits.rates", "must be a table"),
        ('[[notify]]\non = ["exploded"]\njob_type = "log"\n', "notify[0].on", "unknown event"),
        ('[[notify]]\non = []\njob_type = "log"\n', "notify[0].on", "non-empty list"),
        ('[[notify]]\non = "retry"\njob_type = "log"\n', "notify[0].on", "non-empty list"),
        ('[[notify]]\non = ["retry"]\n', "notify[0].job_type", "non-empty string"),
        (
            '[[notify]]\non = ["retry"]\njob_type = "log"\njob_types = "x"\n',
            "notify[0].job_types",
            "list of job type globs",
        ),
        (
            '[[notify]]\non = ["retry"]\njob_type = "log"\ncolour = 1\n',
            "notify[0].colour",
            "unknown key",
        ),
        (
            '[[notify]]\non = ["retry"]\njob_type = "log"\npayload = { event = 1 }\n',
            "notify[0].payload.event",
            "set by the daemon",
        ),
        ("notify = 5\n", "notify", "array of tables"),
        ('[handlers]\nexec = "yes"\n', "handlers.exec", "must be a table"),
        ('[handlers.x]\nfactory = "nocolon"\n', "handlers.x.factory", "module:attr"),
        ('[handlers.x]\nenabled = "no"\n', "handlers.x.enabled", "true or false"),
        ("daemon = 5\n", "daemon", "must be a table"),
    ],
)
def test_bad_values_name_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    error = refused(path)
    assert error.file == str(path)
    assert error.key == key
    assert reason in error.reason
    assert str(path) in error.message and key in error.message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 1\n", "colour"),
        ("[daemon]\nthreads = 4\n", "daemon.threads"),
        ("[store]\npool = 4\n", "store.pool"),
        ("[defaults]\nretries = 4\n", "defaults.retries"),
        ("[control]\nport = 4\n", "control.port"),
        ("[history]\nkeep = 4\n", "history.keep"),
    ],
)
def test_unknown_keys_are_refused(tmp_path: Path, text: str, key: str) -> None:
    error = refused(write(tmp_path, text))
    assert error.key == key
    assert "unknown key" in error.reason


def test_a_missing_file_named_explicitly_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path / "absent.toml")
    assert error.file == str(tmp_path / "absent.toml")
    assert "no such file" in error.reason


def test_invalid_toml_is_refused_with_the_parser_message(tmp_path: Path) -> None:
    error = refused(write(tmp_path, "[daemon\n"))
    assert error.key == ""
    assert "invalid TOML" in error.reason


def test_a_control_group_that_does_not_exist_is_a_warning(tmp_path: Path) -> None:
    text = '[control]\nadmin_group = "no-such-group-xyz"\nread_group = "root"\n'
    config = load_config(write(tmp_path, text), env=USER_ENV)
    assert len(config.warnings) == 1
    assert "control.admin_group" in config.warnings[0]
    assert "no-such-group-xyz" in config.warnings[0]


SCHEDULES = """
[daemon]
timezone = "Europe/Berlin"

[[schedules]]
name = "nightly-cleanup"
job_type = "exec"
cron = "30 2 * * *"
payload = { argv = ["/usr/local/bin/cleanup", "--days", "7"] }
max_retries = 1
timeout_s = 120
misfire = "skip"
overlap = "replace"
priority = 5

[[schedules]]
name = "heartbeat"
job_type = "http"
every = "5 minutes"
timezone = "UTC"
at = "2025-01-01T10:00:00"
ends_at = 2025-12-31T00:00:00Z
max_occurrences = 10
target_id = "svc-1"
jitter_s = 2
misfire_grace_s = 30

[[schedules]]
name = "launch"
job_type = "log"
at = 2025-06-01T09:00:00
"""


def test_schedules_become_job_specs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SCHEDULES), env=USER_ENV)
    nightly, heartbeat, launch = config.schedules
    assert nightly.name == "nightly-cleanup"
    assert nightly.payload == {"argv": ["/usr/local/bin/cleanup", "--days", "7"]}
    assert nightly.recurrence is not None
    assert nightly.recurrence.kind is RecurrenceKind.CRON
    assert nightly.recurrence.cron == "30 2 * * *"
    assert nightly.recurrence.timezone == "Europe/Berlin"  # the daemon's default zone
    assert (nightly.max_retries, nightly.timeout_s, nightly.priority) == (1, 120.0, 5)
    assert nightly.misfire is MisfirePolicy.SKIP and nightly.overlap is OverlapPolicy.REPLACE
    assert heartbeat.recurrence is not None
    assert heartbeat.recurrence.kind is RecurrenceKind.MINUTELY
    assert heartbeat.recurrence.interval == 5
    assert heartbeat.recurrence.ends_at == datetime(2025, 12, 31, tzinfo=UTC)
    assert heartbeat.recurrence.max_occurrences == 10
    assert heartbeat.run_at == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert (heartbeat.target_id, heartbeat.jitter_s, heartbeat.misfire_grace_s) == (
        "svc-1",
        2.0,
        30.0,
    )
    assert launch.recurrence is None
    # A TOML local date-time is read in the schedule's zone (the daemon default here).
    assert launch.run_at == datetime(2025, 6, 1, 9, tzinfo=ZoneInfo("Europe/Berlin"))


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ('job_type = "log"\ncron = "* * *"', "schedules[1].cron", "expected 5 fields"),
        ('job_type = "log"\ncron = "0 0 30 2 *"', "schedules[1].cron", "never fires"),
        ('job_type = "log"\nevery = "5 fortnight"', "schedules[1].every", "unknown unit"),
        ('job_type = "log"\nevery = "0 minute"', "schedules[1].every", ">= 1"),
        (
            'job_type = "log"\nevery = "1 hour"\ncron = "* * * * *"',
            "schedules[1].every",
            "not both",
        ),
        ('job_type = "log"', "schedules[1].at", "needs 'cron', 'every', or 'at'"),
        ('job_type = "log"\nat = "tomorrow"', "schedules[1].at", "RFC 3339"),
        (
            'job_type = "log"\ncron = "@daily"\ntimezone = "Nowhere/City"',
            "schedules[1].timezone",
            "unknown time zone",
        ),
        (
            'job_type = "log"\ncron = "@daily"\nmax_occurrences = 0',
            "schedules[1].max_occurrences",
            ">= 1",
        ),
        (
            'job_type = "log"\nat = "2030-01-01T00:00:00Z"\nmax_occurrences = 2',
            "schedules[1].max_occurrences",
            "recurring",
        ),
        ('cron = "@daily"', "schedules[1].job_type", "non-empty string"),
        (
            'job_type = "log"\ncron = "@daily"\nmax_retries = -2',
            "schedules[1].max_retries",
            "between 0",
        ),
        (
            'job_type = "log"\ncron = "@daily"\npriority = "high"',
            "schedules[1].priority",
            "whole number",
        ),
        ('job_type = "log"\ncron = "@daily"\ntimeout_s = 0', "schedules[1].timeout_s", "positive"),
        (
            'job_type = "log"\ncron = "@daily"\nmisfire = "later"',
            "schedules[1].misfire",
            "run_once",
        ),
        ('job_type = "log"\ncron = "@daily"\npayload = [1]', "schedules[1].payload", "table"),
        ('job_type = "log"\ncron = "@daily"\ncolour = "red"', "schedules[1].colour", "unknown key"),
    ],
)
def test_bad_schedules_name_the_entry_the_field_and_the_schedule(
    tmp_path: Path, entry: str, key: str, reason: str
) -> None:
    text = f'[[schedules]]\nname = "ok"\njob_type = "log"\ncron = "@hourly"\n\n[[schedules]]\nname = "bad"\n{entry}\n'
    error = refused(write(tmp_path, text))
    assert error.key == key
    assert reason in error.reason
    assert "'bad'" in error.reason


def test_schedule_names_are_required_and_unique(tmp_path: Path) -> None:
    error = refused(write(tmp_path, '[[schedules]]\njob_type = "log"\ncron = "@daily"\n'))
    assert error.key == "schedules[0].name"
    twice = '[[schedules]]\nname = "a"\njob_type = "log"\ncron = "@daily"\n' * 2
    error = refused(write(tmp_path, twice))
    assert error.key == "schedules[1].name"
    assert "schedules[0]" in error.reason


@pytest.mark.parametrize("at", ["2030-03-31T02:30:00", '"2030-03-31T02:30"'])
def test_a_static_schedule_starting_inside_a_gap_keeps_its_wall_time(
    tmp_path: Path, at: str
) -> None:
    """Berlin skips 02:00-03:00 on 2030-03-31 (tzdata): the first run moves to
    03:00 CEST, the later ones stay at 02:30 (SPEC 3), for a TOML local
    date-time and a string without offset alike."""
    text = (
        '[[schedules]]\nname = "night"\njob_type = "log"\nevery = "1 day"\n'
        f'timezone = "Europe/Berlin"\nat = {at}\n'
    )
    (spec,) = load_config(write(tmp_path, text), env=USER_ENV).schedules
    job = Job.create(spec, datetime(2030, 1, 1, tzinfo=UTC), JobDefaults())
    assert walk(job, 3) == [
        "2030-03-31T03:00:00+02:00",
        "2030-04-01T02:30:00+02:00",
        "2030-04-02T02:30:00+02:00",
    ]


def test_a_static_schedule_at_with_an_offset_anchors_on_itself(tmp_path: Path) -> None:
    text = (
        '[[schedules]]\nname = "night"\njob_type = "log"\nevery = "1 day"\n'
        'timezone = "Europe/Berlin"\nat = 2030-03-31T03:00:00+02:00\n'
    )
    (spec,) = load_config(write(tmp_path, text), env=USER_ENV).schedules
    assert spec.anchor_at is None


def test_notify_rules_are_read_and_reach_the_engine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[notify]]
on = ["failed_permanent", "crashed"]
job_types = ["export_*", "backup"]
job_type = "http"
max_retries = 5
payload = { url = "https://hooks.example.com/ops", method = "POST" }

[[notify]]
on = ["overdue"]
job_type = "log"
""",
    )
    config = load_config(path)
    first, second = config.notify
    assert first.on == frozenset({"failed_permanent", "crashed"})
    assert first.job_types == ("export_*", "backup")
    assert first.spec.job_type == "http" and first.spec.max_retries == 5
    assert first.spec.payload == {"url": "https://hooks.example.com/ops", "method": "POST"}
    assert first.matches("crashed", "export_daily") and not first.matches("retry", "backup")
    assert second.job_types == ("*",) and second.matches("overdue", "anything")
    assert config.engine_settings().notify == (first, second)


def test_a_notify_rule_whose_type_no_handler_runs_is_refused_once_handlers_load(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[[notify]]\non = ["retry"]\njob_type = "pager"\n')
    config = load_config(path)
    with pytest.raises(ConfigError) as caught:
        check_notify_types(config.notify, lambda t: t == "log", str(path), lambda t, p: None)
    assert caught.value.key == "notify[0].job_type"
    assert "'pager'" in caught.value.reason


def test_a_schedule_may_carry_follow_ups_checked_once_handlers_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[schedules]]
name = "nightly-export"
job_type = "log"
cron = "0 2 * * *"
on_success = { job_type = "log", payload = { message = "export done" } }
on_failure = { job_type = "pager", payload = { team = "data" } }
""",
    )
    config = load_config(path)
    [spec] = config.schedules
    assert spec.on_success is not None and spec.on_success.payload == {"message": "export done"}
    assert spec.on_failure is not None and spec.on_failure.job_type == "pager"
    with pytest.raises(ConfigError) as caught:
        check_schedule_types(config.schedules, lambda t: t == "log", str(path))
    assert caught.value.key == "schedules[0].on_failure.job_type"
    assert "'pager'" in caught.value.reason and "nightly-export" in caught.value.reason
