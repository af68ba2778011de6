"""The history pruner looks at the jobs whose runs ended since its last prune, and
at every job only now and then (engine/recovery.py, HistoryPruner)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Collection
from datetime import datetime

import pytest
import structlog

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import EngineSettings, recovery
from nexus_schedd.engine.recovery import PRUNE_EVERY_RUNS, PRUNE_INTERVAL, HistoryPruner
from nexus_schedd.errors import StoreError
from nexus_schedd.model import JobSpec, JobStatus
from nexus_schedd.model.queries import RunFilter
from nexus_schedd.store.memory import MemoryStore
from tests.engine.harness import (
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    quiesce,
    wait_until,
)
from tests.store.factories import make_run

pytestmark = pytest.mark.anyio

KEEP = 2


class RecordingStore(MemoryStore):
    """A memory store that records which jobs each prune named (None: every job)."""

    def __init__(self) -> None:
        super().__init__()
        self.named: list[set[str] | None] = []
        self.fail_next = False

    async def prune_runs(
        self, older_than: datetime, keep_per_job: int, jobs: Collection[str] | None = None
    ) -> int:
        self.named.append(None if jobs is None else set(jobs))
        if self.fail_next:
            self.fail_next = False
            raise StoreError("the disk is full")
        return await super().prune_runs(older_than, keep_per_job, jobs)


@pytest.fixture
async def recording() -> AsyncIterator[RecordingStore]:
    opened = RecordingStore()
    await opened.open()
    yield opened
    await opened.close()


def pruner_of(store: RecordingStore, clock: VirtualClock) -> HistoryPruner:
    settings = EngineSettings(history_keep_per_job=KEEP)
    return HistoryPruner(store, clock, settings, structlog.get_logger())


_number = itertools.count(1)


async def add_runs(store: MemoryStore, job_id: str, count: int) -> None:
    """``count`` finished runs of ``job_id``, each later than every run added before
    (``make_run``'s times are ahead of the virtual clock: no age limit applies)."""
    await store.write(runs=[make_run(next(_number), job_id) for _ in range(count)])


async def runs_of(store: MemoryStore, job_id: str) -> int:
    page = await store.list_runs(RunFilter(job_id=job_id), 100)
    return len(page.items)


async def test_after_the_first_prune_only_jobs_whose_runs_ended_are_looked_at(
    recording: RecordingStore,
) -> None:
    clock = VirtualClock(T0)
    pruner = pruner_of(recording, clock)
    await add_runs(recording, "J1", 5)
    await add_runs(recording, "J2", 5)

    await pruner.prune()  # the first after start: every job
    assert recording.named == [None]
    assert (await runs_of(recording, "J1"), await runs_of(recording, "J2")) == (KEEP, KEEP)

    await add_runs(recording, "J1", 3)
    await add_runs(recording, "J2", 3)  # recorded another way: not noted
    pruner.note_finished(clock.now(), "J1")
    pruner.note_run("J3")  # a skipped occurrence of another job
    await pruner.prune()
    assert recording.named[-1] == {"J1", "J3"}
    assert (await runs_of(recording, "J1"), await runs_of(recording, "J2")) == (KEEP, KEEP + 3)

    await pruner.prune()  # nothing ended since
    assert recording.named[-1] == set()

    # Every PRUNE_INTERVAL a prune looks at every job: J2 is trimmed too.
    clock.advance(PRUNE_INTERVAL.total_seconds())
    await pruner.prune()
    assert recording.named[-1] is None
    assert await runs_of(recording, "J2") == KEEP


async def test_a_failed_prune_makes_the_next_one_look_at_every_job(
    recording: RecordingStore,
) -> None:
    clock = VirtualClock(T0)
    pruner = pruner_of(recording, clock)
    await pruner.prune()
    await add_runs(recording, "J1", 5)
    pruner.note_finished(clock.now(), "J1")
    recording.fail_next = True
    await pruner.prune()  # logged, not raised
    assert recording.named[-1] == {"J1"}
    await pruner.prune()
    assert recording.named[-1] is None
    assert await runs_of(recording, "J1") == KEEP


async def test_too_many_noted_jobs_make_the_next_prune_look_at_every_job(
    recording: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "NOTED_JOBS_MAX", 3)
    clock = VirtualClock(T0)
    pruner = pruner_of(recording, clock)
    await pruner.prune()
    for job_id in ("J1", "J2", "J3"):
        pruner.note_run(job_id)
    await pruner.prune()
    assert recording.named[-1] == {"J1", "J2", "J3"}
    for job_id in ("J1", "J2", "J3", "J4"):
        pruner.note_run(job_id)
    await pruner.prune()
    assert recording.named[-1] is None


async def test_a_prune_is_due_every_prune_every_runs_finished_runs(
    recording: RecordingStore,
) -> None:
    clock = VirtualClock(T0)
    pruner = pruner_of(recording, clock)
    for number in range(PRUNE_EVERY_RUNS - 1):
        pruner.note_finished(clock.now(), f"J{number}")
    assert not pruner.due
    pruner.note_finished(clock.now(), "J-last")
    assert pruner.due


class NamedPrunes(TrackedStore):
    """Records which jobs each of the engine's prunes named (None: every job)."""

    def __init__(self, tracked: TrackedStore) -> None:
        super().__init__(tracked.inner)
        self.named: list[set[str] | None] = []

    async def prune_runs(
        self, older_than: datetime, keep_per_job: int, jobs: Collection[str] | None = None
    ) -> int:
        self.named.append(None if jobs is None else set(jobs))
        return await super().prune_runs(older_than, keep_per_job, jobs)


async def test_the_engine_names_the_jobs_whose_runs_finished(
    store: TrackedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "PRUNE_EVERY_RUNS", 3)
    named = NamedPrunes(store)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(named, clock, handler, jump=False) as engine:
        await quiesce(named)  # nothing is due: the prune after start
        jobs = [await engine.add_job(JobSpec(job_type="work", run_at=at(60 + n))) for n in range(3)]
        clock.advance_to(at(62))
        for job in jobs:
            await wait_until(engine, job.id, lambda j: j.status is JobStatus.COMPLETED, named)
        await quiesce(named)  # the third finish made a prune due
    assert named.named == [None, {job.id for job in jobs}]
