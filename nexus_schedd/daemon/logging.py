"""structlog set-up for the daemon (SPEC section 9).

JSON lines when stderr is not a terminal (journald, files, pipes), a coloured
console on a terminal. Every event carries ``timestamp`` (ISO 8601, UTC),
``level`` and ``event``; the rest are the event's own keys (``job_id``,
``job_type``, ``attempt``, ``lateness_ms``, ``duration_ms``, ``outcome``, ...).
Records of the standard ``logging`` module (httpx, aiosqlite) are rendered the
same way, so one stream has one format.

In JSON, structlog's own events go through one processor, :class:`JsonLines`,
which writes the same lines as structlog's chain (contextvars, level, ISO
timestamp, stack and exception rendering, ``JSONRenderer``) for about a third
fewer instructions: at the default ``info`` level every run writes two events
(SPEC 9), which through the chain cost almost half as much as the rest of
running a no-op job (docs/performance.md, round 6, stop 30). Each JSON line
then goes to the stream's file descriptor in one ``os.write``
(:class:`LineWriter`, stop 32).
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

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
    processors: list[Processor]
    if use_json:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        tail: list[Processor] = [structlog.processors.dict_tracebacks]
        processors = [JsonLines()]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(output))
        tail = []
        processors = [*shared, structlog.processors.StackInfoRenderer(), renderer]

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # The same lines as PrintLogger (the line and its newline, flushed), in one write.
        logger_factory=_line_writers(output) if use_json else structlog.WriteLoggerFactory(output),
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


def _json_fallback(value: Any) -> Any:
    """What ``JSONRenderer`` writes for a value JSON has no type for."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


def _make_encode_json() -> Callable[[Any], str]:
    """``json.dumps(..., default=...)`` without building an encoder per call.

    ``JSONEncoder.encode`` makes a new C encoder on every call (about 40 % of the
    cost of a run event's line); this one is made once, with the options
    ``json.dumps`` uses. Without a circular-reference check (the markers are
    per call in ``json``): a value that contains itself raises ``RecursionError``
    instead of ``ValueError``."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has _json
        return json.JSONEncoder(default=_json_fallback).encode
    chunks = make(
        None,
        _json_fallback,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )
    join = "".join

    def encode(event_dict: Any) -> str:
        text: str = join(chunks(event_dict, 0))
        return text

    return encode


_encode_json = _make_encode_json()


class JsonLines:
    """The JSON chain in one processor; the same lines as

        merge_contextvars, add_log_level, TimeStamper(fmt="iso", utc=True),
        StackInfoRenderer(), dict_tracebacks, JSONRenderer(sort_keys=False)

    (the keys in the same order, the same text), with fewer calls per event and
    the timestamp's date and time formatted once per second.
    """

    def __init__(self) -> None:
        # The stack starts at the frame that logged, above this module's too.
        self._stack_info = structlog.processors.StackInfoRenderer(additional_ignores=[__name__])
        self._second: tuple[int, str] = (-1, "")
        """The last second formatted, and its date and time (one attribute: threads
        that log read it whole)."""

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        event_dict = structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
        event_dict = structlog.processors.add_log_level(logger, method_name, event_dict)
        event_dict["timestamp"] = self._timestamp(time.time_ns())
        if "stack_info" in event_dict or "exc_info" in event_dict:
            event_dict = self._stack_info(logger, method_name, event_dict)
            event_dict = structlog.processors.dict_tracebacks(logger, method_name, event_dict)
        return _encode_json(event_dict)

    def _timestamp(self, now_ns: int) -> str:
        """``datetime.now(UTC).isoformat()`` with ``Z`` for ``+00:00``, from nanoseconds
        since the epoch (truncated to microseconds, as ``datetime.now`` does)."""
        second, nanos = divmod(now_ns, 1_000_000_000)
        cached, prefix = self._second
        if cached != second:
            moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
            prefix = moment.isoformat().removesuffix("+00:00")
            self._second = (second, prefix)
        micros = nanos // 1000
        return f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"


class LineWriter:
    """structlog's output for JSON lines: each line and its newline in one
    ``os.write`` to the stream's file descriptor.

    ``WriteLogger`` writes through the stream's ``TextIOWrapper`` and flushes it,
    which comes to the same single ``write(2)`` per line for about twice the
    work (3.5 against 1.4 us per line here; two lines per run at ``info``). A
    JSON line is ASCII (``ensure_ascii``), so it encodes to the same bytes.
    A short write (a signal, a full pipe) is finished before the next line.
    """

    __slots__ = ("_fd", "_lock")

    def __init__(self, fd: int, lock: threading.Lock) -> None:
        self._fd = fd
        self._lock = lock

    def msg(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, memoryview(data)[written:])

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _line_writers(stream: TextIO) -> Callable[..., Any]:
    """A structlog logger factory writing JSON lines to ``stream``: a
    :class:`LineWriter` on its file descriptor when it has one (stderr to
    journald, a file or a pipe), else structlog's ``WriteLogger`` (a StringIO)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return structlog.WriteLoggerFactory(stream)
    # Anything the stream still buffers goes first.
    stream.flush()
    writer = LineWriter(fd, threading.Lock())
    return lambda *args: writer


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


__all__ = ["JsonLines", "LineWriter", "LogFormatChoice", "configure_logging"]
