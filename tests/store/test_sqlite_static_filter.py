"""JobFilter.static in the SQLite store: reconcile finds config-declared jobs
without reading every live job."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_schedd.model.queries import JobFilter
from nexus_schedd.store import SQLiteStore
from tests.store.factories import make_job


@pytest.mark.anyio
async def test_static_filter_returns_only_the_matching_jobs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "schedd.db")
    await store.open()
    try:
        jobs = [make_job(n, static=n % 3 == 0) for n in range(12)]
        await store.insert_jobs(jobs)
        static = await store.list_jobs(JobFilter(static=True), 100)
        plain = await store.list_jobs(JobFilter(static=False), 100)
        everything = await store.list_jobs(JobFilter(), 100)
    finally:
        await store.close()
    assert [j.id for j in static.items] == sorted(j.id for j in jobs if j.static)
    assert [j.id for j in plain.items] == sorted(j.id for j in jobs if not j.static)
    assert len(everything.items) == 12
