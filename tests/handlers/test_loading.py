"""Plugin loading: entry points and module:attr factories, their tables, and
broken plugins that are reported without taking the daemon down."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import structlog

from nexus_schedd.errors import ConfigError
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.handlers.exec import ExecHandler
from nexus_schedd.handlers.http import HttpHandler
from nexus_schedd.handlers.loading import load_handlers
from nexus_schedd.handlers.log import LogHandler
from nexus_schedd.model import Job, JobDefaults, JobResult, JobSpec

LOG = structlog.get_logger()

PLUGIN = """
from nexus_schedd.model import JobResult


class Echo:
    def __init__(self, config):
        self.config = dict(config)

    def supports(self, job_type):
        return job_type == "echo"

    async def handle(self, job, ctx):
        return JobResult.success(self.config)


def make(config):
    return Echo(config)


def explode(config):
    raise RuntimeError("database unreachable")


def not_a_handler(config):
    return 42


class SyncHandle:
    def supports(self, job_type):
        return True

    def handle(self, job, ctx):
        return None


def sync_handle(config):
    return SyncHandle()
"""


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"nexus_test_plugin_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def points(module: str, **names: str) -> list[EntryPoint]:
    return [
        EntryPoint(name, f"{module}:{attr}", "nexus_schedd.handlers")
        for name, attr in names.items()
    ]


def test_installed_built_ins_are_loaded_with_their_tables() -> None:
    tables: Mapping[str, Mapping[str, Any]] = {"exec": {"allow": ["/bin/*"]}}
    registry = load_handlers(tables, log=LOG)
    assert {"exec", "http", "log"} <= set(registry.names())
    assert registry.broken == {}
    exec_handler = registry.resolve("exec")
    assert isinstance(exec_handler, ExecHandler) and exec_handler.allow == ("/bin/*",)
    assert isinstance(registry.resolve("http"), HttpHandler)
    assert isinstance(registry.resolve("log"), LogHandler)


def test_entry_point_factory_gets_its_table_without_loader_keys(plugin_module: str) -> None:
    registry = load_handlers(
        {"echo": {"greeting": "hi", "enabled": True}},
        log=LOG,
        plugins=points(plugin_module, echo="make"),
    )
    handler = registry.resolve("echo")
    assert handler is not None and handler.config == {"greeting": "hi"}  # type: ignore[attr-defined]


def test_a_plugin_without_a_table_gets_an_empty_one(plugin_module: str) -> None:
    registry = load_handlers({}, log=LOG, plugins=points(plugin_module, echo="make"))
    assert registry.resolve("echo").config == {}  # type: ignore[union-attr]


def test_factory_path_in_the_table_needs_no_entry_point(plugin_module: str) -> None:
    tables = {"mine": {"factory": f"{plugin_module}:make", "colour": "red"}}
    registry = load_handlers(tables, log=LOG, plugins=[])
    assert registry.names() == ["mine"]
    assert registry.resolve("echo").config == {"colour": "red"}  # type: ignore[union-attr]


def test_factory_path_overrides_the_entry_point_of_the_same_name(plugin_module: str) -> None:
    tables = {"echo": {"factory": f"{plugin_module}:make"}}
    registry = load_handlers(tables, log=LOG, plugins=points(plugin_module, echo="explode"))
    assert registry.broken == {}
    assert registry.supports("echo")


def test_disabled_handlers_are_skipped(plugin_module: str) -> None:
    registry = load_handlers(
        {"echo": {"enabled": False}}, log=LOG, plugins=points(plugin_module, echo="make")
    )
    assert registry.names() == [] and registry.broken == {}


def test_broken_plugins_are_reported_and_the_rest_still_load(plugin_module: str) -> None:
    plugins = [
        *points(
            plugin_module,
            echo="make",
            raises="explode",
            garbage="not_a_handler",
            sync="sync_handle",
            typo="no_such_attr",
        ),
        EntryPoint("gone", "no_such_module_xyz:make", "nexus_schedd.handlers"),
    ]
    with structlog.testing.capture_logs() as logs:
        registry = load_handlers({}, log=structlog.get_logger(), plugins=plugins)
    assert registry.names() == ["echo"]
    assert registry.broken["raises"] == "RuntimeError: database unreachable"
    assert "returned int, not a handler" in registry.broken["garbage"]
    assert "must be an async function" in registry.broken["sync"]
    assert registry.broken["typo"].startswith("AttributeError")
    assert registry.broken["gone"].startswith("ModuleNotFoundError")
    failures = {e["handler"]: e for e in logs if e["event"] == "handler_load_failed"}
    assert set(failures) == {"raises", "garbage", "sync", "typo", "gone"}
    assert failures["raises"]["log_level"] == "error"


def test_a_table_with_neither_entry_point_nor_factory_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_handlers({"ghost": {"x": 1}}, log=LOG, plugins=[], config_file="/etc/x.toml")
    assert caught.value.key == "handlers.ghost"
    assert caught.value.file == "/etc/x.toml"


@pytest.mark.anyio
async def test_loaded_handler_runs_jobs(plugin_module: str) -> None:
    registry = load_handlers(
        {"echo": {"k": "v"}}, log=LOG, plugins=points(plugin_module, echo="make")
    )
    now = datetime(2025, 1, 1, tzinfo=UTC)
    job = Job.create(JobSpec(job_type="echo"), now, JobDefaults())
    ctx = HandlerContext(1, job.idempotency_key, None, now, LOG)
    handler = registry.resolve("echo")
    assert handler is not None
    assert await handler.handle(job, ctx) == JobResult.success({"k": "v"})


@pytest.mark.parametrize(
    "factory", ["no_such_module_xyz:make", "nexus_schedd.handlers.log:no_such_factory"]
)
def test_a_configured_factory_that_does_not_exist_is_a_config_error(factory: str) -> None:
    """An installed plugin that fails is left out; a factory the config itself names
    but that cannot be found is a bad value, refused with the file and the key."""
    with pytest.raises(ConfigError) as caught:
        load_handlers(
            {"mine": {"factory": factory}}, log=LOG, plugins=[], config_file="/etc/x.toml"
        )
    assert (caught.value.file, caught.value.key) == ("/etc/x.toml", "handlers.mine.factory")
    assert factory in caught.value.reason


def test_a_value_the_factory_refuses_is_a_config_error_naming_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        load_handlers(
            {"exec": {"allow": "/bin/*"}},
            log=LOG,
            plugins=[EntryPoint("exec", "nexus_schedd.handlers.exec:make_handler", "g")],
            config_file="/etc/x.toml",
        )
    assert (caught.value.file, caught.value.key) == ("/etc/x.toml", "handlers.exec.allow")
