"""What both SQL backends' schemas share: the shape of a migration, and the final
statuses their partial indexes exclude."""

from __future__ import annotations

from dataclasses import dataclass

FINAL_STATUSES_SQL = "('completed', 'failed_permanent', 'canceled')"
"""The final statuses as an SQL list; partial indexes and their queries must match it."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward step of a schema."""

    version: int
    description: str
    statements: tuple[str, ...]
