"""The daemon's JSON log lines: JsonLines writes what structlog's chain would,
with the daemon's serializer (orjson, the standard encoder for what it refuses)."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import structlog
from structlog.typing import Processor

from nexus_schedd.daemon import logging as daemon_logging
from nexus_schedd.daemon.logging import (
    HOLD_LIMIT_S,
    JsonLines,
    LineWriter,
    configure_logging,
    dumps_line,
    json_lines_logger,
)

CHAIN: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.dict_tracebacks,
    structlog.processors.JSONRenderer(serializer=lambda event, **_: dumps_line(event)),
]
"""The chain JsonLines stands for (configure_logging's JSON set-up before it)."""

_TIMESTAMP = re.compile(rb'"timestamp":"[^"]*"')


def through_chain(method: str, event: dict[str, Any]) -> bytes:
    result: Any = dict(event)
    for processor in CHAIN:
        result = processor(None, method, result)
    assert isinstance(result, bytes)
    return result


class Shown:
    def __structlog__(self) -> str:
        return "shown by __structlog__"


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


EVENTS: list[tuple[str, dict[str, Any]]] = [
    (
        "info",
        {
            "job_id": "01J",
            "job_type": "bench",
            "attempt": 1,
            "lateness_ms": 0.123,
            "event": "run_started",
        },
    ),
    (
        "warning",
        {"event": "job_overdue", "late_s": 1.5, "notifications": 0, "job_type": "ünïcode ✓"},
    ),
    ("warn", {"event": "deprecated alias", "n": None}),
    ("exception", {"event": "logged as an error"}),
    ("error", {"event": "nested", "data": {"a": [1, 2.5, {"b": True}]}, "big": 10**30}),
    ("critical", {"event": "odd values", "d": Decimal("1.5"), "s": Shown(), "o": Opaque()}),
    ("debug", {"event": "not a number", "x": math.nan, "y": -math.inf}),
    ("info", {"event": "level given", "level": "kept?", "timestamp": "given"}),
    ("info", {}),
]


@pytest.fixture
def bound_context() -> Iterator[None]:
    structlog.contextvars.bind_contextvars(request_id="r-7", job_id="from the context")
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()


def same_but_timestamp(ours: bytes, theirs: bytes) -> None:
    assert _TIMESTAMP.sub(b'"timestamp":"T"', ours) == _TIMESTAMP.sub(b'"timestamp":"T"', theirs)


@pytest.mark.parametrize(("method", "event"), EVENTS)
def test_a_line_is_what_structlogs_chain_writes(method: str, event: dict[str, Any]) -> None:
    same_but_timestamp(JsonLines()(None, method, dict(event)), through_chain(method, event))


@pytest.mark.usefixtures("bound_context")
def test_context_variables_are_merged_as_the_chain_merges_them() -> None:
    for method, event in EVENTS:
        ours = JsonLines()(None, method, dict(event))
        assert b'"request_id":"r-7"' in ours
        same_but_timestamp(ours, through_chain(method, event))


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


def log_a_failure(method: str, extra: dict[str, Any]) -> Any:
    """Raise, catch and log (the same frame and locals whatever the configuration)."""
    try:
        raise ValueError("the disk is full")
    except ValueError:
        return getattr(structlog.get_logger(), method)("checkpoint_failed", jobs=3, **extra)


@pytest.mark.usefixtures("restore_structlog")
def test_exceptions_and_stacks_are_rendered_as_the_chain_renders_them() -> None:
    """Through a logger, as the daemon logs: a stack starts at the frame that
    logged, not in the processor."""
    cases: list[tuple[str, dict[str, Any]]] = [
        ("error", {"exc_info": True}),
        ("exception", {}),
        ("error", {"stack_info": True}),
        ("error", {"exc_info": False}),
    ]
    for method, extra in cases:
        lines = []
        for processors in ([JsonLines()], CHAIN):
            structlog.configure(
                processors=processors, logger_factory=structlog.ReturnLoggerFactory()
            )
            lines.append(log_a_failure(method, extra))
        same_but_timestamp(*lines)
        if extra.get("exc_info") or method == "exception":
            assert b"the disk is full" in lines[0]
        if extra.get("stack_info"):
            assert b"in log_a_failure" in lines[0]
            assert b"nexus_schedd/daemon/logging.py" not in lines[0]


@pytest.mark.parametrize(
    "now_ns",
    [
        1_765_000_000_000_000_000,  # a whole second: no fraction, as isoformat writes it
        1_765_000_000_000_000_999,  # under a microsecond past it: still none
        1_765_000_000_000_001_000,
        1_765_000_000_999_999_999,
        1_765_000_001_123_456_789,
        0,
    ],
)
def test_timestamps_are_datetimes_isoformat_in_utc_with_z(now_ns: int) -> None:
    second, nanos = divmod(now_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(second, UTC).replace(microsecond=nanos // 1000)
    lines = JsonLines()
    # Twice: the second call takes the cached date and time of the second.
    assert lines._timestamp(now_ns) == moment.isoformat().replace("+00:00", "Z")
    assert lines._timestamp(now_ns) == moment.isoformat().replace("+00:00", "Z")


def test_a_value_shared_or_circular_does_not_break_later_lines() -> None:
    shared = [1, 2]
    event = {"event": "shared", "a": shared, "b": {"c": shared}}
    same_but_timestamp(JsonLines()(None, "info", dict(event)), through_chain("info", event))
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        JsonLines()(None, "info", {"event": "looped", "v": looped})
    same_but_timestamp(JsonLines()(None, "info", dict(event)), through_chain("info", event))


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_to_a_file_are_whole_in_order_and_from_every_thread(tmp_path: Path) -> None:
    """A stream with a file descriptor (stderr to journald, a file, a pipe) gets
    each line in one write: lines from structlog and the stdlib in the order
    logged, none torn when threads log at once, non-ASCII as UTF-8."""
    path = tmp_path / "daemon.log"
    with path.open("w") as stream:
        stream.write("before the set-up, unflushed\n")
        configure_logging("info", "json", stream=stream)
        log = structlog.get_logger("nexus_schedd.test")
        log.info("first", n=1, text="ünïcode ✓")
        logging.getLogger("library").warning("from the stdlib")
        log.info("third", n=3)

        def burst(number: int) -> None:
            for i in range(300):
                log.info("burst", thread=number, i=i, pad="x" * 200)

        threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    first, *lines = path.read_text(encoding="utf-8").splitlines()
    assert first == "before the set-up, unflushed"
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events[:3]] == ["first", "from the stdlib", "third"]
    assert events[0]["text"] == "ünïcode ✓" and "ünïcode ✓" in lines[0]
    bursts = [(e["thread"], e["i"]) for e in events[3:]]
    assert sorted(bursts) == [(n, i) for n in range(4) for i in range(300)]
    for n in range(4):
        assert [i for t, i in bursts if t == n] == list(range(300))


def test_a_short_write_is_finished_before_the_next_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write(2) may take part of a line (a signal, a full pipe): the rest follows."""
    real_write = os.write
    calls = 0

    def at_most_7_bytes(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        return real_write(fd, bytes(data[:7]))

    path = tmp_path / "daemon.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        writer = LineWriter(fd, threading.Lock())
        monkeypatch.setattr(os, "write", at_most_7_bytes)
        writer.info(b'{"event": "one"}')
        writer.info(b'{"event": "two"}')
        monkeypatch.undo()
    finally:
        os.close(fd)
    assert path.read_text() == '{"event": "one"}\n{"event": "two"}\n'
    assert calls == 6  # 17 bytes each, 7 at a time


@pytest.mark.usefixtures("restore_logging")
def test_a_stream_without_a_file_descriptor_still_gets_the_lines() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.get_logger().info("kept", n=1)
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["event"] == "kept"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (0.123, b"0.123"),
        (10**30, b"1000000000000000000000000000000"),  # beyond orjson: the standard encoder
        (math.nan, b"null"),
        (-math.inf, b"null"),
        ("ünïcode ✓", '"ünïcode ✓"'.encode()),
        ("a lone \udc80 surrogate", b'"a lone \\udc80 surrogate"'),  # refused by orjson, escaped
        (datetime(2026, 12, 7, 5, 0, tzinfo=UTC), b'"2026-12-07T05:00:00+00:00"'),
        ({1: "int key"}, b'{"1":"int key"}'),
        (Decimal("1.5"), b"\"Decimal('1.5')\""),
        (Shown(), b'"shown by __structlog__"'),
        (Opaque(), b'"<opaque>"'),
    ],
)
def test_every_value_is_written_and_what_orjson_refuses_goes_through_json(
    value: Any, written: bytes
) -> None:
    line = dumps_line({"event": "values", "v": value})
    assert line == b'{"event":"values","v":' + written + b"}"
    json.loads(line)  # valid JSON, NaN included


@pytest.mark.usefixtures("restore_logging")
def test_stdlib_records_are_written_in_the_same_compact_form() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.get_logger().info("from structlog", n=1)
    logging.getLogger("library").warning("from the stdlib")
    first, second = stream.getvalue().splitlines()
    assert first.startswith('{"n":1,"event":"from structlog"')
    assert second.startswith('{"event":"from the stdlib"') and ", " not in second


CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("info", ("run_started",), {"job_id": "01J", "job_type": "bench", "attempt": 1, "x": 0.5}),
    ("msg", ("an alias of info",), {"n": 1}),
    ("debug", ("debug",), {"n": None}),
    ("warning", ("job_overdue",), {"late_s": 1.5, "job_type": "ünïcode ✓"}),
    ("warn", ("an alias of warning",), {}),
    ("error", ("nested",), {"data": {"a": [1, 2.5, {"b": True}]}, "big": 10**30}),
    ("critical", ("critical",), {"d": Decimal("1.5"), "s": Shown(), "o": Opaque()}),
    ("fatal", ("an alias of critical",), {"x": math.nan}),
    ("info", ("%s of %d, interpolated",), {}),
    ("info", ("%s of %d, interpolated", "two", 2), {}),
    ("info", ("%(what)s by name", {"what": "interpolated"}), {}),
    ("info", ("keys that look like the chain's",), {"level": "kept?", "timestamp": "given"}),
    ("exception", ("logged as an error",), {}),
    ("error", ("with its exception",), {"exc_info": True}),
    ("error", ("with its stack",), {"stack_info": True}),
    ("log", (logging.WARNING, "through log()"), {"n": 2}),
    ("log", (logging.DEBUG, "through log(), below the level"), {}),
]


def emit(method: str, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    """Log from inside an ``except`` (one frame and line whatever the wrapper; no
    logger among the locals a traceback shows, its repr names its class)."""
    try:
        raise ValueError("the disk is full")
    except ValueError:
        return getattr(structlog.get_logger().bind(**kw.pop("bound")), method)(*args, **kw)


@pytest.mark.usefixtures("restore_structlog")
@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING])
@pytest.mark.parametrize("bound", [{}, {"node": "n1", "job_id": "bound first"}])
def test_the_json_loggers_level_methods_write_what_structlogs_write(
    level: int, bound: dict[str, Any]
) -> None:
    """``json_lines_logger``'s methods skip structlog's dispatch, not its meaning:
    the same lines (bound keys first, the call's after, ``event`` last, the chain's
    keys added), interpolation, exceptions and stacks from the calling frame, and
    nothing below the level."""
    for method, args, kw in CALLS:
        lines = []
        for wrapper in (structlog.make_filtering_bound_logger(level), json_lines_logger(level)):
            structlog.configure(
                processors=[JsonLines()],
                wrapper_class=wrapper,
                logger_factory=structlog.ReturnLoggerFactory(),
            )
            lines.append(emit(method, args, {**kw, "bound": bound}))
        ours, theirs = lines
        if theirs is None:
            assert ours is None, (method, args)
            continue
        same_but_timestamp(ours, theirs)
        if bound:
            # A key given again keeps its bound place and takes the call's value.
            assert ours.startswith(b'{"node":"n1","job_id":"')
    logger = json_lines_logger(level)
    assert structlog.get_logger().bind().is_enabled_for(logging.INFO) is (level <= logging.INFO)
    assert logger.__name__ == f"JsonLines{structlog.make_filtering_bound_logger(level).__name__}"
    assert json_lines_logger(level) is logger  # made once per level


@pytest.mark.usefixtures("restore_logging")
def test_the_daemons_json_events_skip_structlogs_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure_logging's JSON set-up hands a keyword event straight to JsonLines
    (a third of a run event's cost at info went to structlog's dispatch); a call
    it cannot take, and a chain configured differently later, go through it."""
    dispatched = 0
    process_event = structlog.BoundLoggerBase._process_event

    def counting(self: Any, *args: Any) -> Any:
        nonlocal dispatched
        dispatched += 1
        return process_event(self, *args)

    monkeypatch.setattr(structlog.BoundLoggerBase, "_process_event", counting)
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = structlog.get_logger("nexus_schedd.engine").bind()
    log.info("run_started", job_id="01J", attempt=1)
    log.warning("job_overdue", late_s=1.5)
    log.debug("below the level")
    assert dispatched == 0
    log.info("%d positional", 1)
    assert dispatched == 1
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == [
        "run_started",
        "job_overdue",
        "1 positional",
    ]
    structlog.configure(
        processors=[lambda _l, _m, event: {**event, "rechained": True}, JsonLines()]
    )
    structlog.get_logger().bind().info("after a new chain")
    assert dispatched == 2
    assert json.loads(stream.getvalue().splitlines()[-1])["rechained"] is True


# -- lines held for their event-loop turn ------------------------------------------


def lines_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def events_in(path: Path) -> list[str]:
    return [line["event"] for line in lines_in(path)]


def block_until_written(path: Path, event: str) -> float:
    """Block the calling thread (a test's event loop) until ``event`` is in the
    file; the seconds it took."""
    started = time.monotonic()
    deadline = started + 30  # generous on a busy machine; written long before
    while event not in events_in(path):
        assert time.monotonic() < deadline, f"{event} was not written"
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The daemon's JSON set-up at info, into a file (a descriptor: LineWriter)."""
    path = tmp_path / "daemon.log"
    with path.open("w") as stream:
        configure_logging("info", "json", stream=stream)
        yield path
        daemon_logging.flush_held_lines()


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_info_lines_on_a_loop_are_written_together_when_the_turn_ends(
    log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    real_write = os.write

    def recorded(fd: int, data: Any) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", recorded)
    log = structlog.get_logger("nexus_schedd.engine").bind()
    before = datetime.now(UTC)
    for n in range(3):
        log.info("run_started", job_id=f"j{n}", attempt=1, lateness_ms=0.5)
        log.debug("below the level")
    after = datetime.now(UTC)
    assert events_in(log_file) == []  # held for this turn
    await anyio.lowlevel.checkpoint()  # the loop's next turn writes them
    assert events_in(log_file) == ["run_started"] * 3
    assert len(writes) == 1  # one write(2) for the turn's lines
    lines = lines_in(log_file)
    assert [line["job_id"] for line in lines] == ["j0", "j1", "j2"]
    for line in lines:  # taken when logged, not when written
        stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert before - timedelta(microseconds=1) <= stamp <= after


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_a_line_written_at_once_comes_after_the_held_ones(log_file: Path) -> None:
    """A warning, a standard logging record, another thread's line, a line whose
    values could change: each is written at once, after what was held before it."""
    log = structlog.get_logger("nexus_schedd.engine").bind()
    log.info("held 1")
    log.warning("a warning")
    assert events_in(log_file) == ["held 1", "a warning"]
    log.info("held 2")
    logging.getLogger("library").warning("a stdlib record")
    assert events_in(log_file)[2:] == ["held 2", "a stdlib record"]
    log.info("held 3")
    thread = threading.Thread(target=lambda: log.info("from another thread"))
    thread.start()
    thread.join()
    assert events_in(log_file)[4:] == ["held 3", "from another thread"]
    items = ["a"]
    log.info("held 4")
    log.info("with a list", items=items)
    items.append("changed later")
    assert events_in(log_file)[6:] == ["held 4", "with a list"]
    assert lines_in(log_file)[-1]["items"] == ["a"]


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_a_blocked_loops_held_lines_are_written_by_the_watcher(log_file: Path) -> None:
    """A handler that blocks the loop must not hide its run_started: the watcher
    thread writes what its loop holds within 2 * HOLD_LIMIT_S, while it blocks."""
    log = structlog.get_logger("nexus_schedd.engine").bind()
    log.info("run_started", job_id="blocks the loop")
    assert block_until_written(log_file, "run_started") >= HOLD_LIMIT_S * 0.9
    # Once nothing more is held, the watcher waits without a timeout.
    await anyio.lowlevel.checkpoint()
    deadline = time.monotonic() + 30
    while not daemon_logging._WATCH._parked:
        assert time.monotonic() < deadline, "the watcher kept waking with nothing held"
        await anyio.sleep(0.05)


def test_lines_held_when_the_process_exits_are_written(tmp_path: Path) -> None:
    """A loop stopped before the turn that would write its lines: atexit writes them."""
    path = tmp_path / "daemon.log"
    script = textwrap.dedent(
        f"""
        import asyncio, structlog
        from nexus_schedd.daemon.logging import configure_logging
        stream = open({str(path)!r}, "w")
        configure_logging("info", "json", stream=stream)
        log = structlog.get_logger().bind()
        loop = asyncio.new_event_loop()
        def last_turn():
            log.info("engine_stopped", reason="held at exit")
            loop.stop()
        loop.call_soon(last_turn)
        loop.run_forever()
        print(repr(open({str(path)!r}).read()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "''"  # still held when the loop stopped
    assert events_in(path) == ["engine_stopped"]


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_lines_held_for_a_stream_closed_since_are_not_written_elsewhere(
    tmp_path: Path,
) -> None:
    """A held line whose stream was closed before the turn ended is dropped: the
    descriptor's number may belong to another file by then."""
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    stream = first.open("w")
    configure_logging("info", "json", stream=stream)
    structlog.get_logger().bind().info("held for the first stream")
    number = stream.fileno()
    stream.close()
    with second.open("w") as other:
        assert other.fileno() == number  # the number is reused at once
        await anyio.lowlevel.checkpoint()  # the turn ends: the held line is dropped
        daemon_logging.flush_held_lines()
    assert events_in(first) == []
    assert events_in(second) == []
