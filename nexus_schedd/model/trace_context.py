"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the ``traceparent`` and
``tracestate`` a job keeps from the request that added it, so that its runs are
spans of that trace (SPEC 15).

Plain string checks: nothing here needs OpenTelemetry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from nexus_schedd.errors import InvalidSpec

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
KEYS = (TRACEPARENT, TRACESTATE)
"""The keys of a trace context, as the W3C headers are named."""
MAX_TRACESTATE_CHARS = 512
"""The length every W3C participant must propagate; longer ones are refused."""

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_HEADER_TEXT = re.compile(r"[\x20-\x7e]*")
_FORMAT = "must be VERSION-TRACE_ID-PARENT_ID-FLAGS in lowercase hex, e.g. 00-<32 hex>-<16 hex>-01"


def traceparent_problem(value: str) -> str | None:
    """Why ``value`` is not a valid ``traceparent``, or None when it is.

    Version 00 has exactly four fields; a later version may add fields after them
    (read as 00, as the W3C recommendation says); version ff, an all-zero trace id
    and an all-zero parent id are invalid.
    """
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return _FORMAT
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff":
        return "version ff is invalid"
    if version == "00" and rest is not None:
        return "version 00 has exactly four fields"
    if rest is not None and not _HEADER_TEXT.fullmatch(rest):
        return "must be printable ASCII"
    if trace_id == "0" * 32:
        return "the trace id must not be all zeros"
    if parent_id == "0" * 16:
        return "the parent id must not be all zeros"
    return None


def tracestate_problem(value: str) -> str | None:
    """Why ``value`` cannot be kept as a ``tracestate``, or None when it can."""
    if len(value) > MAX_TRACESTATE_CHARS:
        return f"must be at most {MAX_TRACESTATE_CHARS} characters"
    if not _HEADER_TEXT.fullmatch(value):
        return "must be printable ASCII"
    return None


_PROBLEMS: dict[str, Callable[[str], str | None]] = {
    TRACEPARENT: traceparent_problem,
    TRACESTATE: tracestate_problem,
}


def check_trace_context(value: Any) -> None:
    """Raise InvalidSpec (field ``trace_context`` or ``trace_context.KEY``) unless
    ``value`` is None or an object of ``traceparent`` (required unless the object is
    empty) and an optional ``tracestate``, both valid."""
    if value is None:
        return
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidSpec("trace_context", "must be an object of strings")
    for key, text in value.items():
        check = _PROBLEMS.get(key)
        if check is None:
            raise InvalidSpec(f"trace_context.{key}", "unknown key (use traceparent, tracestate)")
        problem = check(text)
        if problem is not None:
            raise InvalidSpec(f"trace_context.{key}", problem)
    if value and TRACEPARENT not in value:
        raise InvalidSpec("trace_context.traceparent", "is required with tracestate")


def from_headers(traceparent: str | None, tracestate: str | None) -> dict[str, str] | None:
    """The trace context of a request's ``traceparent`` and ``tracestate`` headers.

    As the W3C recommendation asks of a receiver, a malformed ``traceparent`` is
    ignored (None: the job starts traces of its own), and so is a ``tracestate``
    without a valid ``traceparent``, or one that cannot be kept.
    """
    if traceparent is None:
        return None
    traceparent = traceparent.strip()
    if traceparent_problem(traceparent) is not None:
        return None
    context = {TRACEPARENT: traceparent}
    if tracestate is not None:
        tracestate = tracestate.strip()
        if tracestate and tracestate_problem(tracestate) is None:
            context[TRACESTATE] = tracestate
    return context
