"""Ordering keys and opaque pagination cursors shared by the store backends.

Instants are keyed as integer microseconds since the Unix epoch (UTC), so every
backend orders and compares them the same way. A cursor is the URL-safe base64 of the JSON list of the last key a page
returned; clients pass it back verbatim. Anything that does not decode to the
expected key shape is refused with :class:`~nexus_schedd.errors.InvalidSpec`.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta

from nexus_schedd.errors import InvalidSpec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(instant: datetime) -> int:
    """Microseconds since the Unix epoch: exact, unlike ``timestamp()``."""
    return (instant - EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The UTC instant ``micros`` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=micros)


def check_limit(limit: int) -> None:
    """Refuse a page size that is not a whole number >= 1."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidSpec("limit", f"must be a whole number >= 1, got {limit!r}")


def encode_job_cursor(job_id: str) -> str:
    """The cursor that continues a job listing after ``job_id``."""
    return _encode(["j", job_id])


def decode_job_cursor(cursor: str) -> str:
    """The job id a job-listing cursor continues after."""
    key = _decode(cursor)
    if len(key) != 2 or key[0] != "j" or not isinstance(key[1], str):
        raise InvalidSpec("cursor", "not a job listing cursor")
    return key[1]


def encode_run_cursor(started_us: int, run_id: str) -> str:
    """The cursor that continues a run listing after the run (started_us, run_id)."""
    return _encode(["r", started_us, run_id])


def decode_run_cursor(cursor: str) -> tuple[int, str]:
    """The (started_at in microseconds, run id) key a run-listing cursor continues after."""
    key = _decode(cursor)
    if (
        len(key) != 3
        or key[0] != "r"
        or isinstance(key[1], bool)
        or not isinstance(key[1], int)
        or not isinstance(key[2], str)
    ):
        raise InvalidSpec("cursor", "not a run listing cursor")
    return key[1], key[2]


def _encode(key: list[object]) -> str:
    text = json.dumps(key, separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str) -> list[object]:
    if not isinstance(cursor, str) or not cursor or len(cursor) > 1024:
        raise InvalidSpec("cursor", "malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidSpec("cursor", "malformed cursor") from None
    if not isinstance(key, list):
        raise InvalidSpec("cursor", "malformed cursor")
    return key
