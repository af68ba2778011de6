"""kill -9 of the real daemon at random moments under mixed control-socket load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from tests.reliability.crash import CrashRun

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CI_CYCLES = 5


def test_kill_9_under_load_loses_nothing_acknowledged_and_runs_every_due_occurrence(
    tmp_path: Path,
) -> None:
    run = CrashRun(tmp_path, seed=20261127)
    for _ in range(CI_CYCLES):
        run.cycle()
    report = run.finish()
    structlog.get_logger("tests.reliability").info("crash_run", **report.summary())
    assert report.problems == [], json.dumps(report.problems[:20], indent=1)
    assert report.cycles == CI_CYCLES
    assert report.integrity_checks == CI_CYCLES + 1
    assert report.adds > CI_CYCLES, "the load did not reach the daemon"
    assert report.cancels + report.pauses > 0, "no cancel/pause was acknowledged"
