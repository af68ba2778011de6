"""The Varlink ``Preview`` method's end conditions and DST corners (issue 22),
through the async client library against a real daemon."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nexus_schedd.client import Client
from nexus_schedd.control.varlink import load_interface
from nexus_schedd.errors import InvalidSpec, ProtocolError
from nexus_schedd.model import Recurrence, RecurrenceKind
from tests.control.harness import Daemon

NIGHTLY_BERLIN = {"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}


def iso(times: list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


@pytest.mark.anyio
async def test_until_and_max_occurrences_end_the_list_across_spring_forward(
    daemon: Daemon,
) -> None:
    async with Client(daemon.socket_path, timeout=10) as client:
        until = await client.preview(
            NIGHTLY_BERLIN, start="2025-03-29T12:00", count=10, until="2025-04-01T00:00"
        )
        # Berlin skips 02:00-03:00 on 2025-03-30 (zdump): 02:30 runs at 03:00.
        assert [t.astimezone(UTC) for t in until] == [
            datetime(2025, 3, 30, 1, 0, tzinfo=UTC),
            datetime(2025, 3, 31, 0, 30, tzinfo=UTC),
        ]
        capped = await client.preview(
            NIGHTLY_BERLIN, start="2025-03-29T12:00", count=10, max_occurrences=1
        )
        assert [t.astimezone(UTC) for t in capped] == [datetime(2025, 3, 30, 1, 0, tzinfo=UTC)]
        # The recurrence's own end conditions count too; the parameters override them.
        own = Recurrence(
            RecurrenceKind.HOURLY, ends_at=datetime(2030, 1, 1, 2, tzinfo=UTC), max_occurrences=5
        )
        start = datetime(2030, 1, 1, tzinfo=UTC)
        assert len(await client.preview(own, start=start, count=10)) == 3
        assert len(await client.preview(own, start=start, count=10, max_occurrences=2)) == 2
        later = datetime(2030, 1, 1, 9, tzinfo=UTC)
        assert len(await client.preview(own, start=start, count=10, until=later)) == 5


@pytest.mark.anyio
async def test_until_before_the_first_occurrence_is_invalid_spec_naming_until(
    daemon: Daemon,
) -> None:
    async with Client(daemon.socket_path, timeout=10) as client:
        with pytest.raises(InvalidSpec) as caught:
            await client.preview(NIGHTLY_BERLIN, start="2025-03-29T12:00", until="2025-03-29T13:00")
        assert caught.value.field == "until"
        # Out of range, like count: the standard InvalidParameter error.
        with pytest.raises(ProtocolError, match="max_occurrences"):
            await client.preview(NIGHTLY_BERLIN, max_occurrences=0)


@pytest.mark.anyio
async def test_a_local_start_inside_the_gap_moves_only_the_first_occurrence(
    daemon: Daemon,
) -> None:
    daily = {"kind": "daily", "timezone": "Europe/Berlin"}
    async with Client(daemon.socket_path, timeout=10) as client:
        found = await client.preview(daily, start="2025-03-30T02:30", count=3)
    assert [t.astimezone(UTC) for t in found] == [
        datetime(2025, 3, 30, 1, 0, tzinfo=UTC),  # 03:00 CEST
        datetime(2025, 3, 31, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2025, 4, 1, 0, 30, tzinfo=UTC),
    ]


def test_the_idl_declares_the_new_optional_preview_parameters() -> None:
    interface = load_interface("io.nexus.Scheduler")
    interface.check_parameters(
        "Preview",
        {
            "recurrence": {"kind": "daily"},
            "until": "2030-01-01T00:00:00Z",
            "max_occurrences": 3,
        },
    )
