"""structlog set-up for the daemon (SPEC section 9).

JSON lines when stderr is not a terminal (journald, files, pipes), a coloured
console on a terminal. Every event carries ``timestamp`` (ISO 8601, UTC),
``level`` and ``event``; the rest are the event's own keys (``job_id``,
``job_type``, ``attempt``, ``lateness_ms``, ``duration_ms``, ``outcome``, ...).
Records of the standard ``logging`` module (httpx, aiosqlite) are rendered the
same way, so one stream has one format.

In JSON, structlog's own events go through one processor, :class:`JsonLines`,
which writes the same lines as structlog's chain (contextvars, level, ISO
timestamp, stack and exception rendering, ``JSONRenderer``) for fewer
instructions: at the default ``info`` level every run writes two events (SPEC
9), which through the chain cost almost half as much as the rest of running a
no-op job (docs/performance.md, round 6, stop 30). Lines are compact JSON in
UTF-8, encoded by orjson (:func:`dumps_line`), and each goes to the stream's
file descriptor in one ``os.write`` (:class:`LineWriter`). The bound loggers'
level methods hand an event straight to :class:`JsonLines`
(:func:`json_lines_logger`), without structlog's three-call dispatch, and the
``info`` and ``debug`` lines of an event-loop turn are encoded and written
together as the turn ends (:meth:`LineWriter.hold`).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import io
import json
import logging
import os
import sys
import threading
import time
import weakref
from asyncio import _get_running_loop
from collections.abc import Callable
from typing import Any, Literal, TextIO

import orjson
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
    """Marks the root handler this module installs, so reconfiguring replaces it.
    A record is written after the structlog lines held before it."""

    def emit(self, record: logging.LogRecord) -> None:
        flush_held_lines()
        super().emit(record)


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
    flush_held_lines()  # what the set-up before held goes where it was going
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
        renderer = structlog.processors.JSONRenderer(serializer=_dumps_text)
        tail: list[Processor] = [structlog.processors.dict_tracebacks]
        processors = [JsonLines()]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(output))
        tail = []
        processors = [*shared, structlog.processors.StackInfoRenderer(), renderer]

    structlog.configure(
        processors=processors,
        wrapper_class=(
            json_lines_logger(numeric_level)
            if use_json
            else structlog.make_filtering_bound_logger(numeric_level)
        ),
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


def dumps_line(event_dict: Any) -> bytes:
    """One event as a compact JSON object, UTF-8.

    orjson (structlog's documented choice for fast JSON lines) encodes a run
    event in about a tenth of the standard encoder's instructions. What orjson
    refuses (an integer beyond 64 bits, nesting deeper than 254 levels, a value
    that contains itself, a string with a lone surrogate) goes through the
    standard encoder in the same compact form (ASCII, non-ASCII escaped), so no
    line is lost for its values; a value that contains itself still raises
    there, as structlog's ``JSONRenderer`` does. NaN and infinities are written
    as ``null`` (JSON has no spelling for them); values JSON has no type for go
    through ``__structlog__`` or ``repr`` (:func:`_json_fallback`), except the
    ones orjson writes itself (datetimes as RFC 3339, enums as their value,
    dataclasses as objects)."""
    try:
        return _orjson_dumps(event_dict, default=_json_fallback, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(event_dict, default=_json_fallback, separators=(",", ":")).encode()


def _dumps_text(event_dict: Any, **_: Any) -> str:
    """:func:`dumps_line` as text, for ``JSONRenderer(serializer=...)`` (the
    standard ``logging`` records); its ``default`` and ``sort_keys`` are the
    ones :func:`dumps_line` has already."""
    return dumps_line(event_dict).decode()


_orjson_dumps = orjson.dumps
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS
"""Keys that are not strings (an int, an enum) are written as strings, as the
standard encoder writes them, instead of refusing the event."""


class JsonLines:
    """The JSON chain in one processor; the same lines as

        merge_contextvars, add_log_level, TimeStamper(fmt="iso", utc=True),
        StackInfoRenderer(), dict_tracebacks, JSONRenderer(sort_keys=False)

    with ``JSONRenderer`` serializing through :func:`dumps_line` (the keys in the
    same order, the same bytes), with fewer calls per event and the timestamp's
    date and time formatted once per second. Returns the line as UTF-8 bytes,
    without its newline.
    """

    def __init__(self) -> None:
        # The stack starts at the frame that logged, above this module's too.
        self._stack_info = structlog.processors.StackInfoRenderer(additional_ignores=[__name__])
        self._second: tuple[int, str] = (-1, "")
        """The last second formatted, and its date and time (one attribute: threads
        that log read it whole)."""

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
        return dumps_line(self.collect(logger, method_name, event_dict))

    def collect(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Everything of the line that belongs to the moment of the call (context
        variables, level, timestamp, stack and exception), before its encoding."""
        event_dict = structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
        event_dict = structlog.processors.add_log_level(logger, method_name, event_dict)
        event_dict["timestamp"] = self._timestamp(time.time_ns())
        if "stack_info" in event_dict or "exc_info" in event_dict:
            event_dict = self._stack_info(logger, method_name, event_dict)
            event_dict = structlog.processors.dict_tracebacks(logger, method_name, event_dict)
        return event_dict

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
    ``os.write`` to the stream's file descriptor, and the ``info`` and ``debug``
    lines of an event-loop turn held and written together.

    ``WriteLogger`` writes through the stream's ``TextIOWrapper`` and flushes it,
    which comes to the same single ``write(2)`` per line for about twice the
    work (3.5 against 1.4 us per line here; two lines per run at ``info``).
    A short write (a signal, a full pipe) is finished before the next line.

    Held lines (:meth:`hold`): an event logged at ``info`` or ``debug`` on a
    thread with a running asyncio loop, whose values are all plain scalars, is
    kept as its collected event dict (context, level and timestamp taken at the
    call) and encoded and written with the turn's others by a callback the loop
    runs next (:meth:`flush`). The engine's two lines per run are encoded back to
    back instead of in the middle of the engine's work, where a line cost about
    three times its tight-loop CPU: about a tenth less loop CPU per job at
    ``info`` (docs/performance.md, round 6, stop 35). A line is never held past
    the next line written any other way (a warning, another thread's line, a
    standard ``logging`` record): those write what is held first, so the stream
    keeps the order of the calls. A loop that
    does not come back (a handler blocking it) has its held lines written by a
    watcher thread within ``2 * HOLD_LIMIT_S``, and what is held at exit is
    written by ``atexit``.
    """

    __slots__ = ("__weakref__", "_batch", "_fd", "_held", "_holder", "_lock", "_stream")

    def __init__(self, fd: int, lock: threading.Lock, stream: TextIO | None = None) -> None:
        self._fd = fd
        self._lock = lock
        self._stream = stream
        """The stream ``fd`` belongs to: once it is closed, nothing more is written
        (the descriptor's number may belong to another file by then)."""
        self._held: list[EventDict] = []
        self._holder = 0
        """The thread whose loop will write the held lines."""
        self._batch = 0
        """Counts the batches of held lines (see :meth:`flush_batch`)."""
        _WRITERS.add(self)

    def msg(self, message: bytes) -> None:
        data = message + b"\n"
        with self._lock:
            if self._held:
                data = self._take_held() + data
            self._write(data)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def hold(self, event_dict: EventDict) -> bool:
        """Keep ``event_dict`` (collected, see :meth:`JsonLines.collect`) to be
        written with the other lines of this loop turn. False when it cannot be:
        a value that could still change (not a plain scalar), no running loop on
        this thread, or lines held by another thread's loop; then the caller
        writes it at once (after what is held)."""
        for value in event_dict.values():
            if type(value) not in _SCALARS:
                return False
        thread = threading.get_ident()
        with self._lock:
            held = self._held
            if held:
                if thread != self._holder:
                    return False
                held.append(event_dict)
                return True
            loop = _get_running_loop()
            if loop is None:
                return False
            held.append(event_dict)
            self._holder = thread
            self._batch += 1
            batch = self._batch
        loop.call_soon(self.flush)
        _WATCH.note(self, batch)
        return True

    def flush(self, *, wait: bool = True) -> None:
        """Write what is held. ``wait=False`` gives up if another call is writing
        (a signal handler, which may have interrupted it on this thread)."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if self._held:
                self._write(self._take_held())
        finally:
            self._lock.release()

    def flush_batch(self, batch: int) -> None:
        """Write what is held if it is still batch ``batch`` (its loop has not come
        back to write it since the watcher was told of it)."""
        with self._lock:
            if self._held and self._batch == batch:
                self._write(self._take_held())

    def _take_held(self) -> bytes:
        held, self._held = self._held, []
        return b"".join([dumps_line(event_dict) + b"\n" for event_dict in held])

    def _write(self, data: bytes) -> None:
        stream = self._stream
        if stream is not None and stream.closed:
            return
        written = os.write(self._fd, data)
        while written < len(data):
            written += os.write(self._fd, memoryview(data)[written:])


_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Value types a held line may carry: nothing the caller could change before the
line is encoded."""

HOLD_LIMIT_S = 0.25
"""How long the watcher waits before writing lines a loop has not come back to
write (see :class:`LineWriter`)."""

_WRITERS: weakref.WeakSet[LineWriter] = weakref.WeakSet()
"""Every LineWriter made, for :func:`flush_held_lines`."""


def flush_held_lines(*, wait: bool = True) -> None:
    """Write every line held for its loop's turn (at exit, before a standard
    ``logging`` record, before ``os._exit``). ``wait=False`` from a signal
    handler: a writer busy on this very thread is skipped, not deadlocked on."""
    for writer in list(_WRITERS):
        writer.flush(wait=wait)


class _HeldLinesWatch:
    """One thread that writes lines a loop has held for ``HOLD_LIMIT_S`` and not
    come back to write: a handler that blocks the loop must not hide its
    ``run_started``. Told of each new batch (:meth:`note`); after a period
    with none it waits without a timeout (no wake-ups while idle)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._noted: dict[LineWriter, int] = {}
        self._thread: threading.Thread | None = None
        self._parked = True

    def note(self, writer: LineWriter, batch: int) -> None:
        with self._cond:
            self._noted[writer] = batch
            if self._parked:
                self._parked = False
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="nexus-schedd held log lines", daemon=True
                    )
                    self._thread.start()
                else:
                    self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._noted:
                    self._parked = True
                    self._cond.wait()
                noted, self._noted = self._noted, {}
            time.sleep(HOLD_LIMIT_S)
            for writer, batch in noted.items():
                with contextlib.suppress(OSError):  # the stream's reader is gone: lines are lost
                    writer.flush_batch(batch)
            del noted

    def after_fork_in_child(self) -> None:
        """A forked child has no watcher thread, and its lock may have been taken
        by a thread that does not exist there."""
        self._cond = threading.Condition(threading.Lock())
        self._noted = {}
        self._thread = None
        self._parked = True


def _flush_at_exit() -> None:
    with contextlib.suppress(OSError):
        flush_held_lines()


_WATCH = _HeldLinesWatch()
atexit.register(_flush_at_exit)
os.register_at_fork(after_in_child=_WATCH.after_fork_in_child)


class TextLineWriter:
    """structlog's output for JSON lines to a stream without a file descriptor
    (a ``StringIO``): each line decoded, written with its newline and flushed,
    under a lock as structlog's ``WriteLogger`` does."""

    __slots__ = ("_lock", "_stream")

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def msg(self, message: bytes) -> None:
        text = message.decode() + "\n"
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def json_lines_logger(min_level: int) -> type[Any]:
    """structlog's filtering bound logger for ``min_level``, whose level methods
    hand an event straight to :class:`JsonLines` when that is the whole chain.

    structlog's own methods pass an event through three calls, each repacking its
    keywords (the level method, ``_proxy_to_logger``, ``_process_event``: the
    context copied and updated, the chain looped over, its result's type tested)
    before the one processor: about a quarter of a run event's cost at ``info``
    (docs/performance.md, round 6, stop 35). These methods build the same event
    dict (the bound context, then the call's keys, then ``event``) in one step
    and write what :class:`JsonLines` returns with the same output method, so the
    lines are the same bytes. Anything else (positional arguments to
    interpolate, a chain configured differently since) goes through structlog's
    method, unchanged. Custom wrapper classes are structlog's documented hook;
    ``_context``, ``_processors`` and ``_logger`` are its documented attributes
    for them.
    """
    cached = _JSON_LOGGERS.get(min_level)
    if cached is not None:
        return cached
    base = structlog.make_filtering_bound_logger(min_level)
    methods: dict[str, Any] = {}
    for level, name in (
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warning"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "critical"),
    ):
        if level >= min_level:
            methods[name] = _direct_method(name, getattr(base, name))
    for alias, name in (("warn", "warning"), ("fatal", "critical"), ("msg", "info")):
        if name in methods:
            methods[alias] = methods[name]
    wrapper = type(f"JsonLines{base.__name__}", (base,), methods)
    _JSON_LOGGERS[min_level] = wrapper
    return wrapper


_JSON_LOGGERS: dict[int, type[Any]] = {}


def _direct_method(name: str, structlogs: Callable[..., Any]) -> Callable[..., Any]:
    """The level method ``name`` of :func:`json_lines_logger`'s classes;
    ``structlogs`` is structlog's own, for what it does not take."""

    holds = name in ("debug", "info")

    def method(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        processors = self._processors
        if args or len(processors) != 1 or type(processors[0]) is not JsonLines:
            return structlogs(self, event, *args, **kw)
        context = self._context
        event_dict = {**context, **kw} if context else kw  # kw is this call's own
        event_dict["event"] = event
        logger = self._logger
        if holds and type(logger) is LineWriter:
            collected = processors[0].collect(logger, name, event_dict)
            if logger.hold(collected):
                return None
            return logger.msg(dumps_line(collected))
        return getattr(logger, name)(processors[0](logger, name, event_dict))

    method.__name__ = name
    return method


def _line_writers(stream: TextIO) -> Callable[..., Any]:
    """A structlog logger factory writing JSON lines to ``stream``: a
    :class:`LineWriter` on its file descriptor when it has one (stderr to
    journald, a file or a pipe), else a :class:`TextLineWriter` (a StringIO)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        text = TextLineWriter(stream)
        return lambda *args: text
    # Anything the stream still buffers goes first.
    stream.flush()
    writer = LineWriter(fd, threading.Lock(), stream)
    return lambda *args: writer


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


__all__ = [
    "JsonLines",
    "LineWriter",
    "LogFormatChoice",
    "TextLineWriter",
    "configure_logging",
    "dumps_line",
    "flush_held_lines",
    "json_lines_logger",
]
