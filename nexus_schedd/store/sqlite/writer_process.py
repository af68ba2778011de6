"""The SQLite writer process: the one connection that writes, in a process of its own.

:class:`~nexus_schedd.store.sqlite.SQLiteStore` sends every write transaction
here (group commits, per-call retries, prune deletes) and waits for the reply.
In the daemon's own process the writer thread needed the GIL back after every
SQLite step, and while the event loop ran Python each hand-over cost about
0.1 ms: a 128-row checkpoint took 0.8 ms of row statements instead of 0.4
(docs/performance.md, round 5). Here SQLite runs beside the event loop on the
other core, and a transaction costs the loop one message each way.

Wire format, on a Unix socket pair: each message is a 4-byte little-endian
length and plain tuples, marshalled (requests of built-in values: rows) or
pickled (replies, which may carry an exception, and any request marshal cannot
write); both ends are this package and interpreter, and the socket is private
to the two processes. The messages are the typed values below
(:class:`Open`, :class:`Write`, :class:`Close`; each answered by one
:class:`Reply`), turned into tuples of built-in types by :func:`encode_request`
and :func:`encode_reply` and back by the ``decode_`` functions: this file runs
as ``__main__`` in the writer, so a pickled class would not resolve on the other
side. Requests are handled one after another in the order they were sent, so
the store may send the next write while this process still commits the
previous one (it never waits for the event loop between two commits), and
every write lands in the order it was sent:

- :class:`Open`: connect to the ``file:`` URI and run the pragmas; ``OK``.
- :class:`Write`: one transaction. ``segments`` is every call's rows merged
  into as few statements as possible (see :func:`write_rows`), or None to go
  straight to ``calls``. If it fails and ``calls`` is given, the transaction is
  rolled back and run again with each :class:`Call` in a SAVEPOINT of its own,
  so a failing call rolls back only itself. ``OK`` with value None when the
  merged transaction committed, ``OK`` with each call's rowcount or the
  ``sqlite3.Error`` that rolled it back, or ``ERROR`` with the exception for a
  transaction that failed as a whole (rolled back; with ``calls`` None, the
  only call's error).
- :class:`Close`: close the connection, reply ``OK`` and exit.

A transaction SQLite abandoned half-way (disk full, I/O error) is reported as
``ABORTED`` with the error; any other exception as ``FAILED`` with its text.
The process ignores the signals a terminal
or a service manager sends the whole process group (the daemon shuts down
first and checkpoints through it) and exits when the socket closes, so a
daemon killed with SIGKILL leaves no writer behind.

This file also runs as a script (``python -I writer_process.py FD``) and imports
only the standard library, so the process starts without loading the daemon.
"""

from __future__ import annotations

import marshal
import pickle
import signal
import socket
import sqlite3
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import chain
from typing import Any, cast

HEADER = struct.Struct("<I")
"""The length prefix of every message."""

CHUNKS = (256, 64, 16, 4, 1)
"""Rows per statement: a batch of n rows takes at most n // 256 + 12 statements,
and each table's statements have five shapes, which stay in the statement cache."""

Segment = tuple[str, "str | None", list[tuple[Any, ...]]]
"""``(sql, full_sql, rows)``: an ``INSERT ... VALUES (?, ...)`` for every row; when
it is a guarded upsert that skipped rows, ``full_sql`` is re-run for them all."""

_shapes: dict[str, dict[int, str]] = {}


# -- the messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One store call of a :class:`Write`, run in a SAVEPOINT of its own when the
    merged transaction failed: its segments, or one ``executemany`` (a delete)."""

    segments: list[Segment] = field(default_factory=list)
    many_sql: str | None = None
    many_rows: list[Any] = field(default_factory=list)
    """Parameters of ``many_sql``; its rowcount is the call's result."""


@dataclass(frozen=True, slots=True)
class Open:
    """Connect to the ``file:`` URI ``uri`` and run ``pragmas``."""

    uri: str
    pragmas: list[str]


@dataclass(frozen=True, slots=True)
class Write:
    """One transaction (see the module docstring)."""

    segments: list[Segment] | None
    calls: list[Call] | None


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection and exit after replying."""


Request = Open | Write | Close


class Status(IntEnum):
    """How a request went."""

    OK = 0
    ERROR = 1
    """The transaction failed as a whole and was rolled back (value: the sqlite3.Error)."""
    ABORTED = 2
    """SQLite abandoned the transaction half-way (value: the sqlite3.Error)."""
    FAILED = 3
    """Something other than SQLite failed (value: its text)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one request."""

    status: Status
    value: Any = None


_OPEN, _WRITE, _CLOSE = 1, 2, 3


def encode_request(request: Request) -> bytes:
    """``request`` as one frame."""
    if isinstance(request, Write):
        calls = (
            None
            if request.calls is None
            else [(call.segments, call.many_sql, call.many_rows) for call in request.calls]
        )
        return _request_frame((_WRITE, request.segments, calls))
    if isinstance(request, Open):
        return _request_frame((_OPEN, request.uri, request.pragmas))
    return _request_frame((_CLOSE,))


def decode_request(message: tuple[Any, ...]) -> Request:
    """The request a frame carried (ValueError for an unknown one)."""
    kind = message[0]
    if kind == _WRITE:
        calls = None if message[2] is None else [Call(*call) for call in message[2]]
        return Write(message[1], calls)
    if kind == _OPEN:
        return Open(message[1], message[2])
    if kind == _CLOSE:
        return Close()
    raise ValueError(f"unknown request {kind!r}")


def encode_reply(reply: Reply) -> bytes:
    """``reply`` as one frame."""
    return _frame((int(reply.status), reply.value))


def decode_reply(message: tuple[int, Any]) -> Reply:
    """The reply a frame carried."""
    return Reply(Status(message[0]), message[1])


def chunked(statement: str) -> dict[int, str]:
    """``INSERT ... VALUES (?, ...) [ON CONFLICT ...]`` for each size in ``CHUNKS``."""
    shapes = _shapes.get(statement)
    if shapes is None:
        head, rest = statement.split(" VALUES ", 1)
        row, _, tail = rest.partition(")")
        row += ")"
        shapes = {size: f"{head} VALUES {', '.join([row] * size)}{tail}" for size in CHUNKS}
        _shapes[statement] = shapes
    return shapes


def insert_rows(connection: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    """``sql`` for every row in multi-row statements; the number of rows changed.

    A handful of statements instead of one ``executemany`` step per row: each
    step costs a trip through the sqlite3 module, and a 256-row statement is
    prepared once and kept in the statement cache.
    """
    shapes = chunked(sql)
    changed = start = 0
    for size in CHUNKS:
        statement = shapes[size]
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            changed += connection.execute(statement, list(chain.from_iterable(chunk))).rowcount
            start += size
    return changed


def write_rows(connection: sqlite3.Connection, segment: Segment) -> None:
    """One segment's rows; a guarded upsert that skipped rows is re-run in full."""
    sql, full, rows = segment
    if insert_rows(connection, sql, rows) < len(rows) and full is not None:
        insert_rows(connection, full, rows)


def commit_segments(connection: sqlite3.Connection, segments: list[Segment]) -> None:
    """One transaction of ``segments``; rolled back if any statement fails."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        for segment in segments:
            write_rows(connection, segment)
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise


class Aborted(Exception):
    """SQLite abandoned the whole transaction of a call list."""

    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


def commit_calls(connection: sqlite3.Connection, calls: list[Call]) -> list[Any]:
    """One transaction, each call in its own SAVEPOINT: a call that fails rolls
    back only itself. Each call's rowcount (of its ``many`` steps) or its error."""
    results: list[Any] = []
    connection.execute("BEGIN IMMEDIATE")
    try:
        for call in calls:
            connection.execute("SAVEPOINT call")
            try:
                changed = 0
                for segment in call.segments:
                    write_rows(connection, segment)
                if call.many_sql is not None:
                    changed += connection.executemany(call.many_sql, call.many_rows).rowcount
            except sqlite3.Error as exc:
                if not connection.in_transaction:
                    raise Aborted(exc) from None
                connection.execute("ROLLBACK TO call")
                connection.execute("RELEASE call")
                results.append(exc)
            else:
                connection.execute("RELEASE call")
                results.append(changed)
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise
    return results


def write(connection: sqlite3.Connection, request: Write) -> Reply:
    """One :class:`Write` (see the module's docstring): its reply."""
    if request.segments is not None:
        try:
            commit_segments(connection, request.segments)
        except sqlite3.Error as exc:
            if request.calls is None:
                return Reply(Status.ERROR, exc)
        else:
            return Reply(Status.OK)
    assert request.calls is not None
    return Reply(Status.OK, commit_calls(connection, request.calls))


def rollback(connection: sqlite3.Connection) -> None:
    """Roll back if SQLite has not already (disk full, I/O error)."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error as exc:
            print(f"nexus-schedd sqlite writer: rollback failed: {exc}", file=sys.stderr)


def read_message(stream: Any) -> Any:
    """The next message from a blocking binary file, or None at end of file."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    # A pickle starts with its PROTO opcode (0x80); a marshal never does (no
    # type code 0): see _request_frame.
    return pickle.loads(body) if body[:1] == _PICKLE_PROTO else marshal.loads(body)


_PICKLE_PROTO = b"\x80"


def _request_frame(message: tuple[Any, ...]) -> bytes:
    """A request as one frame: a marshal when every value is a plain built-in
    (rows are: about half the cost of a pickle on the event loop, which pickles
    its memo and large ints slowly), else a pickle. Both ends run the same
    interpreter (``sys.executable``), so the marshal format matches."""
    try:
        body = marshal.dumps(message, 4)
    except ValueError:  # a value marshal cannot write: pickle it
        return _frame(message)
    return HEADER.pack(len(body)) + body


def _frame(message: tuple[Any, ...]) -> bytes:
    """``message`` as one frame (length prefix and pickle)."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def serve(sock: socket.socket) -> None:
    """Answer requests until :class:`Close` or the store's end of the socket closes."""
    stream = sock.makefile("rb")
    connection: sqlite3.Connection | None = None
    while True:
        message = read_message(stream)
        if message is None:
            break
        try:
            request = decode_request(message)
            if isinstance(request, Write):
                assert connection is not None
                reply = write(connection, request)
            elif isinstance(request, Open):
                # isolation_level=None: transactions are begun and ended explicitly.
                connection = sqlite3.connect(request.uri, uri=True, isolation_level=None)
                for pragma in request.pragmas:
                    connection.execute(pragma)
                reply = Reply(Status.OK)
            else:
                if connection is not None:
                    connection.close()
                    connection = None
                sock.sendall(encode_reply(Reply(Status.OK)))
                break
        except Aborted as aborted:
            reply = Reply(Status.ABORTED, aborted.error)
        except sqlite3.Error as exc:
            reply = Reply(Status.ERROR, exc)
        except Exception as exc:  # a value SQLite cannot bind, say: this request fails
            reply = Reply(Status.FAILED, f"{type(exc).__name__}: {exc}")
        try:
            sock.sendall(encode_reply(reply))
        except OSError:
            break  # the store is gone
    if connection is not None:
        connection.close()


def bind_none_fast() -> None:
    """Make binding ``None`` cheap in this process.

    The sqlite3 module binds ``int``, ``float``, ``str`` and ``bytes`` directly,
    but looks up an adapter for every other value: for ``None`` the lookup
    misses and then tries ``__adapt__`` and ``__conform__`` before binding
    NULL, which was 10 % of the writer's instructions (a job row has five to
    ten ``None`` columns). An adapter registered for ``NoneType`` is found at
    the first lookup; ``{}.get`` is a C function that returns ``None``. Adapters
    for other types than the four base types leave their fast path alone.
    """
    sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))


def main(argv: list[str]) -> int:
    bind_none_fast()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    try:
        serve(sock)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
