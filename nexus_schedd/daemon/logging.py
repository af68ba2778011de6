"""structlog set-up for the daemon (SPEC section 9).

JSON lines when stderr is not a terminal (journald, files, pipes), a coloured
console on a terminal. Every event carries ``timestamp`` (ISO 8601, UTC),
``level`` and ``event``; the rest are the event's own keys (``job_id``,
``job_type``, ``attempt``, ``lateness_ms``, ``duration_ms``, ``outcome``, ...).
Records of the standard ``logging`` module (httpx, aiosqlite) are rendered the
same way, so one stream has one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import Processor

LogFormatChoice = Literal["auto", "json", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _NexusStdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the root handler this module installs, so reconfiguring replaces it."""


def configure_logging(
    level: str = "info",
    fmt: LogFormatChoice = "auto",
    *,
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr) at ``level``.

    ``fmt="auto"`` picks the console renderer on a TTY and JSON lines otherwise.
    Calling it again replaces the previous set-up (idempotent).
    """
    if level.lower() not in _LEVELS:
        raise ValueError(f"unknown log level {level!r} (use one of {', '.join(_LEVELS)})")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r} (use auto, json or console)")
    numeric_level = _LEVELS[level.lower()]
    output = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not _is_tty(output))

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        tail: list[Processor] = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(output))
        tail = []

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *tail,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        # Not cached: a later configure_logging() call must take effect everywhere.
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(numeric_level, output, shared, renderer, tail)


def _configure_stdlib(
    level: int,
    output: TextIO,
    shared: list[Processor],
    renderer: Processor,
    tail: list[Processor],
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            renderer,
        ],
    )
    handler = _NexusStdlibHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, _NexusStdlibHandler):
            root.removeHandler(existing)
    root.addHandler(handler)
    # Libraries are chatty at INFO (httpx logs every request): keep them to warnings
    # unless the daemon itself is asked for debug output.
    root.setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


__all__ = ["LogFormatChoice", "configure_logging"]
