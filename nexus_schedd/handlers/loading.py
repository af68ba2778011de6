"""Loading handler plugins (SPEC section 6).

Every entry point of the group ``nexus_schedd.handlers`` is a handler factory;
a ``[handlers.NAME]`` table in the config is passed to the factory of the same
name, or names its own with ``factory = "module:attr"``. ``enabled = false``
leaves a handler out. A ``factory`` that cannot be imported, or a factory that
refuses its table (raises :class:`~nexus_schedd.errors.ConfigError`: a bad value
or an unknown key), makes the config invalid, like any other bad value. An
installed plugin that fails to import, raises anything else, or returns something
that is not a :class:`~nexus_schedd.handlers.base.Handler` is reported and left
out: its job types are unavailable, the daemon carries on.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from nexus_schedd.errors import ConfigError
from nexus_schedd.handlers.base import ENTRY_POINT_GROUP, Handler
from nexus_schedd.handlers.registry import HandlerRegistry

# Keys the loader consumes; the factory gets the rest of the table.
_LOADER_KEYS = frozenset({"factory", "enabled"})


def load_handlers(
    tables: Mapping[str, Mapping[str, Any]],
    *,
    log: Any,
    plugins: Iterable[EntryPoint] | None = None,
    config_file: str = "<config>",
) -> HandlerRegistry:
    """Build every handler and return the registry (broken ones in ``registry.broken``).

    ``plugins`` defaults to the installed entry points of ``nexus_schedd.handlers``.
    Raises :class:`ConfigError` for a table that names no factory and has no entry
    point, and for a table its factory refuses: those are mistakes in the config,
    not broken plugins.
    """
    available = {
        ep.name: ep
        for ep in (entry_points(group=ENTRY_POINT_GROUP) if plugins is None else plugins)
    }
    for name, table in tables.items():
        if name not in available and "factory" not in table:
            raise ConfigError(
                config_file,
                f"handlers.{name}",
                "no installed plugin has this name and the table sets no 'factory'",
            )
    handlers: dict[str, Handler] = {}
    broken: dict[str, str] = {}
    for name in sorted(set(available) | set(tables)):
        table = tables.get(name, {})
        if table.get("enabled", True) is False:
            log.info("handler_disabled", handler=name)
            continue
        factory_path = table.get("factory")
        source = str(factory_path) if factory_path is not None else available[name].value
        options = {key: value for key, value in table.items() if key not in _LOADER_KEYS}
        if factory_path is not None:
            try:
                factory = _import_factory(str(factory_path))
            except (ImportError, AttributeError, TypeError, ValueError) as exc:
                # A factory the config names but that does not exist is a bad value.
                raise ConfigError(
                    config_file, f"handlers.{name}.factory", f"cannot load {factory_path!r}: {exc}"
                ) from None
        try:
            if factory_path is None:
                factory = available[name].load()
            handler = _build(factory, options)
        except ConfigError as exc:
            # The factory knows the key, not the file it came from.
            raise ConfigError(config_file, exc.key, exc.reason) from None
        except Exception as exc:  # a plugin may fail in any way; it must not stop the daemon
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            broken[name] = reason
            log.error("handler_load_failed", handler=name, factory=source, error=reason)
            continue
        handlers[name] = handler
        log.debug("handler_loaded", handler=name, factory=source)
    return HandlerRegistry(handlers, broken=broken)


def _import_factory(path: str) -> Callable[..., Any]:
    module_name, _, attr_path = path.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for attr in attr_path.strip().split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{path} is not callable")
    return obj  # type: ignore[no-any-return]


def _build(factory: Any, options: dict[str, Any]) -> Handler:
    if not callable(factory):
        raise TypeError(f"the factory {factory!r} is not callable")
    handler = factory(options)
    if not isinstance(handler, Handler):
        raise TypeError(
            f"the factory returned {type(handler).__name__}, not a handler "
            "(an object with supports(job_type) and async handle(job, ctx))"
        )
    if not inspect.iscoroutinefunction(handler.handle):
        raise TypeError(f"{type(handler).__name__}.handle must be an async function")
    return handler


__all__ = ["load_handlers"]
