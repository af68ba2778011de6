"""kill -9 of the real daemon under mixed control-socket load, checked afterwards.

Shared by ``tests/reliability/test_crash.py`` (a few cycles in CI) and
``benchmarks/reliability_soak.py`` (many). Jobs are exec jobs running a tiny
script that appends ``job_id idempotency_key`` to a file and fsyncs, so what ran
is known even when the daemon died before recording it.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from nexus_schedd.client import Client
from nexus_schedd.daemon.config import DB_FILE
from nexus_schedd.errors import DaemonUnreachable, SchedulerError
from nexus_schedd.model import Job, JobSpec, JobStatus, MisfirePolicy, Recurrence, RecurrenceKind
from nexus_schedd.model.status import OverlapPolicy
from tests.daemon.daemon_process import DaemonProcess

RECORDER = """#!/bin/sh
# One O_APPEND write of one short line, then fsync: durable before the job reports done.
printf '%s %s\\n' "$NEXUS_SCHEDD_JOB_ID" "$NEXUS_SCHEDD_IDEMPOTENCY_KEY" |
    dd of={path} oflag=append conv=notrunc,fsync status=none
"""

RECURRING_OCCURRENCES = 3


def crash_config(workdir: Path) -> str:
    """JSON logs, fast retries, exec allowed for the recorder script."""
    return f"""
[daemon]
log_format = "json"
shutdown_grace_s = 5

[control]
admin_group = ""

[defaults]
max_retries = 20
backoff_base_s = 0.1
backoff_jitter = 0.0

[handlers.exec]
allow = ["{workdir}/*"]
"""


@dataclass
class CrashReport:
    """What a crash run did and found."""

    cycles: int = 0
    adds: int = 0
    cancels: int = 0
    pauses: int = 0
    resumes: int = 0
    refused: int = 0
    """Operations the daemon refused (e.g. cancelling a finished job): no mutation."""
    unacknowledged: int = 0
    """Operations cut off by the kill: no promise was made, none is checked."""
    uncertain_jobs: int = 0
    """Jobs whose last change was cut off (either outcome is correct; not checked)."""
    integrity_checks: int = 0
    """``PRAGMA integrity_check`` runs that passed or were recorded as problems."""
    crashed_runs: int = 0
    """Runs open at a kill (recorded ``crashed`` on restart)."""
    duplicates: int = 0
    """Extra executions of an occurrence (each needs a crashed run to excuse it)."""
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The counts, for a log line or a table."""
        return {
            key: value
            for key, value in self.__dict__.items()
            if key != "problems" and isinstance(value, int)
        } | {"problems": len(self.problems)}


@dataclass
class CrashRun:
    """Drives ``cycles`` kill -9 cycles against one state directory, then verifies."""

    workdir: Path
    seed: int = 0
    rng: random.Random = field(init=False)
    report: CrashReport = field(default_factory=CrashReport)
    intent: dict[str, str] = field(default_factory=dict)
    """job id -> the last acknowledged mutation (added, canceled, paused, resumed)."""
    recurring: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)
    """Jobs whose last mutation was cut off by a kill: it may or may not have applied."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.record_path = self.workdir / "ran.log"
        self.script = self.workdir / "record.py"
        self.script.write_text(RECORDER.format(path=self.record_path))
        self.script.chmod(self.script.stat().st_mode | stat.S_IXUSR)

    # -- one cycle -----------------------------------------------------------------

    def daemon(self) -> DaemonProcess:
        return DaemonProcess(self.workdir, crash_config(self.workdir))

    @property
    def db_path(self) -> Path:
        return self.workdir / "state" / DB_FILE

    def cycle(self) -> None:
        """Start the daemon, load it, kill -9 it at a random moment, check what it promised."""
        daemon = self.daemon()
        try:
            daemon.start()
            assert daemon.proc is not None
            self.check_promises(daemon, when=f"restart before cycle {self.report.cycles + 1}")
            kill_after = self.rng.uniform(0.2, 1.5)
            anyio.run(self.load, daemon, kill_after)
            daemon.wait_exit(timeout=10)
        finally:
            daemon.close()
        self.report.cycles += 1
        self.check_integrity()

    async def load(self, daemon: DaemonProcess, kill_after: float) -> None:
        async with anyio.create_task_group() as tg:
            for worker in range(4):
                tg.start_soon(self.client_worker, daemon, random.Random(self.rng.random() + worker))
            await anyio.sleep(kill_after)
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGKILL)
            # Replies already on their way count as acknowledged; the workers stop
            # on their own once the socket is gone.

    async def client_worker(self, daemon: DaemonProcess, rng: random.Random) -> None:
        # Each worker mutates only the jobs it added: two clients racing on one job
        # could receive their acknowledgements in another order than they applied.
        mine: list[str] = []
        try:
            async with Client(daemon.socket_path, timeout=10) as client:
                while True:
                    await self.one_operation(client, rng, mine)
                    # Paced like busy users, not a flood: the crash, not overload, is tested.
                    await anyio.sleep(rng.uniform(0.01, 0.08))
        except SchedulerError:
            # DaemonUnreachable once killed (or before connecting): the cut-off
            # operation was never acknowledged.
            self.report.unacknowledged += 1

    async def one_operation(self, client: Client, rng: random.Random, mine: list[str]) -> None:
        roll = rng.random()
        if roll < 0.45 or not mine:
            mine.append(await self.add(client, rng, recurring=False))
        elif roll < 0.6:
            mine.append(await self.add(client, rng, recurring=True))
        else:
            job_id = rng.choice(mine)
            op = "cancel" if roll < 0.75 else "pause" if roll < 0.9 else "resume"
            try:
                if op == "cancel":
                    await client.cancel_job(job_id)
                elif op == "pause":
                    await client.pause_job(job_id)
                else:
                    await client.resume_job(job_id)
            except DaemonUnreachable:
                self.uncertain.add(job_id)
                raise
            except SchedulerError:
                self.report.refused += 1
                return
            self.intent[job_id] = {"cancel": "canceled", "pause": "paused"}.get(op, "resumed")
            setattr(self.report, op + "s", getattr(self.report, op + "s") + 1)

    async def add(self, client: Client, rng: random.Random, *, recurring: bool) -> str:
        now = datetime.now(UTC)
        spec = JobSpec(
            job_type="exec",
            payload={"argv": [str(self.script)]},
            run_at=now + timedelta(seconds=rng.uniform(0.0, 1.5)),
            recurrence=(
                Recurrence(
                    RecurrenceKind.CRON,
                    cron="* * * * * *",
                    max_occurrences=RECURRING_OCCURRENCES,
                )
                if recurring
                else None
            ),
            misfire=MisfirePolicy.RUN_ALL if recurring else None,
            # Every occurrence must run. With the default (forbid), an occurrence
            # whose previous one is still running is skipped by design, and on a
            # slow machine a retry after a kill (exec p90 400 ms) can still be
            # running when the next second's occurrence comes due.
            overlap=OverlapPolicy.ALLOW if recurring else None,
        )
        job = await client.add_job(spec)
        self.intent[job.id] = "added"
        if recurring:
            self.recurring.add(job.id)
        self.report.adds += 1
        return job.id

    # -- checks --------------------------------------------------------------------

    def check_integrity(self) -> None:
        # mode=rw: a missing file is an error, not a new empty database that passes.
        connection = sqlite3.connect(f"file:{self.db_path}?mode=rw", uri=True)
        try:
            result = connection.execute("PRAGMA integrity_check").fetchall()
        finally:
            connection.close()
        self.report.integrity_checks += 1
        if result != [("ok",)]:
            self.report.problems.append(
                f"integrity_check after cycle {self.report.cycles}: {result}"
            )

    def check_promises(self, daemon: DaemonProcess, *, when: str) -> None:
        anyio.run(self._check_promises, daemon, when)

    async def _check_promises(self, daemon: DaemonProcess, when: str) -> None:
        async with Client(daemon.socket_path, timeout=30) as client:
            for job_id, intent in self.intent.items():
                if job_id in self.uncertain:
                    continue
                try:
                    job = await client.get_job(job_id)
                except SchedulerError as exc:
                    self.report.problems.append(f"{when}: acknowledged job {job_id} lost: {exc}")
                    continue
                if intent == "canceled" and job.status is not JobStatus.CANCELED:
                    self.report.problems.append(
                        f"{when}: job {job_id} was canceled but is {job.status.value}"
                    )
                if intent == "paused" and job.status is not JobStatus.PAUSED:
                    self.report.problems.append(
                        f"{when}: job {job_id} was paused but is {job.status.value}"
                    )

    def finish(self, timeout: float = 60.0) -> CrashReport:
        """Restart once more, let every due occurrence run, stop cleanly, verify."""
        daemon = self.daemon()
        try:
            daemon.start()
            self.check_promises(daemon, when="final restart")
            anyio.run(self._drain_and_verify, daemon, timeout)
            daemon.send(signal.SIGTERM)
            daemon.wait_exit(timeout=20)
        finally:
            daemon.close()
        self.check_integrity()
        return self.report

    async def _drain_and_verify(self, daemon: DaemonProcess, limit_s: float) -> None:
        expected = [
            job_id
            for job_id, intent in self.intent.items()
            if intent in {"added", "resumed"} and job_id not in self.uncertain
        ]
        async with Client(daemon.socket_path, timeout=30) as client:
            jobs: dict[str, Job] = {}
            with anyio.move_on_after(limit_s):
                while len(jobs) < len(expected):
                    for job_id in expected:
                        if job_id not in jobs:
                            job = await client.get_job(job_id)
                            if job.status.is_final:
                                jobs[job_id] = job
                    await anyio.sleep(0.2)
            crashed: Counter[str] = Counter()
            cursor: str | None = None
            while True:
                page = await client.list_runs(outcome=["crashed"], limit=500, cursor=cursor)
                crashed.update(run.job_id for run in page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
        self.report.crashed_runs = sum(crashed.values())
        self.report.uncertain_jobs = len(self.uncertain)
        records = Counter(tuple(line.split()) for line in self.record_path.read_text().splitlines())
        by_job: Counter[str] = Counter()
        keys_by_job: dict[str, set[str]] = {}
        for (job_id, key), count in records.items():
            by_job[job_id] += count
            keys_by_job.setdefault(job_id, set()).add(key)
        for job_id in expected:
            final = jobs.get(job_id)
            if final is None:
                self.report.problems.append(f"job {job_id} did not finish within {limit_s} s")
                continue
            if final.status is not JobStatus.COMPLETED:
                self.report.problems.append(f"job {job_id} ended {final.status.value}")
            occurrences = RECURRING_OCCURRENCES if job_id in self.recurring else 1
            ran = len(keys_by_job.get(job_id, set()))
            if ran != occurrences:
                self.report.problems.append(
                    f"job {job_id} ({final.status.value}, occurrence_count "
                    f"{final.occurrence_count}): {ran} of {occurrences} occurrences ran: "
                    f"{sorted(keys_by_job.get(job_id, set()))}"
                )
        for job_id, count in by_job.items():
            extra = count - len(keys_by_job[job_id])
            self.report.duplicates += extra
            if extra > crashed[job_id]:
                self.report.problems.append(
                    f"job {job_id}: {extra} duplicate executions but only "
                    f"{crashed[job_id]} runs were open at a kill"
                )
