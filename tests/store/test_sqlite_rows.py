"""The SQLite row encoders: the hand-formatted last_result JSON equals what
json.dumps produced before, and decodes back to the same value."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nexus_schedd.model.job import LastResult
from nexus_schedd.store.keys import to_micros
from nexus_schedd.store.rows import _decode_last_result, _encode_last_result

T0 = datetime(2030, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def _reference(result: LastResult) -> str:
    return json.dumps(
        {
            "success": result.success,
            "output": result.output,
            "error": result.error,
            "started_at": to_micros(result.started_at),
            "finished_at": to_micros(result.finished_at),
            "duration_ms": result.duration_ms,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


@pytest.mark.parametrize(
    ("success", "output", "error", "duration_ms"),
    [
        (True, None, None, 0.0),
        (True, {"rows": [1, 2.5, "x"], "nested": {"ü": None}}, None, 12.345678),
        (False, None, 'ValueError: "quoted" \\ back\nslash and ünïcödé \u2028', 1e-7),
        (False, "plain text", "boom", 3600000.0),
        (True, [1, 2, 3], None, 5),
    ],
)
def test_last_result_encoding_matches_json_dumps_and_round_trips(
    success: bool, output: Any, error: str | None, duration_ms: float
) -> None:
    result = LastResult(success, output, error, T0, T0 + timedelta(milliseconds=12), duration_ms)
    encoded = _encode_last_result(result)
    assert json.loads(encoded) == json.loads(_reference(result))
    assert encoded == _reference(result)
    assert _decode_last_result(encoded) == result
