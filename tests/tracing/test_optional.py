"""Without tracing, nothing imports OpenTelemetry (SPEC 15: the extra is optional).

A fresh interpreter whose import system refuses (and records) every
``opentelemetry`` import loads every module of the package but the SDK side
(``nexus_schedd.tracing.otel``), runs jobs through the engine with jobs that carry
a trace context, and asks for tracing as the daemon does: with no ``OTEL_*``
variables, and with ``OTEL_TRACES_EXPORTER=otlp`` as if the extra were missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import importlib, json, pkgutil, sys

attempts = []

class RefuseOpenTelemetry:
    """A meta path finder: records, then refuses, every opentelemetry import."""

    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            attempts.append(name)
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, RefuseOpenTelemetry())

import anyio
import nexus_schedd

modules = [
    info.name
    for info in pkgutil.walk_packages(nexus_schedd.__path__, "nexus_schedd.")
    if info.name != "nexus_schedd.tracing.otel"
]
for name in modules:
    importlib.import_module(name)
after_imports = list(attempts)

from nexus_schedd.clock import SystemClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.handlers.log import LogHandler
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import JobSpec, JobStatus
from nexus_schedd.store import MemoryStore
from nexus_schedd.tracing import TracingSettings, current_trace_context, start_tracing

JOBS = 50
CONTEXT = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


class Events:
    def __init__(self):
        self.seen = []

    def info(self, event, **fields):
        self.seen.append(event)

    warning = info


async def main():
    events = Events()
    off = start_tracing(TracingSettings.from_env({}), {}, events)
    asking = {"OTEL_TRACES_EXPORTER": "otlp"}
    asked = start_tracing(TracingSettings.from_env(asking), asking, events)
    store = MemoryStore()
    await store.open()
    engine = Engine(
        store, HandlerRegistry({"log": LogHandler("debug")}), SystemClock(), EngineSettings()
    )
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        for number in range(JOBS):
            await engine.add_job(
                JobSpec(job_type="log", payload={"n": number}, trace_context=CONTEXT)
            )
        with anyio.fail_after(30):
            while engine.status().counts.get(JobStatus.COMPLETED, 0) < JOBS:
                await anyio.sleep(0.01)
        await engine.stop(1)
        tg.cancel_scope.cancel()
    return {
        "off": off is None,
        "asked": asked is None,
        "events": events.seen,
        "completed": engine.status().counts.get(JobStatus.COMPLETED, 0),
        "client_context": current_trace_context(),
    }


result = anyio.run(main)
result["modules"] = len(modules)
result["import_attempts_by_modules"] = after_imports
result["import_attempts"] = attempts
result["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
print(json.dumps(result))
'''


def test_the_engine_runs_jobs_and_nothing_imports_opentelemetry() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] > 50
    assert result["import_attempts_by_modules"] == []
    assert result["completed"] == 50
    assert result["off"] and result["asked"]
    assert result["events"] == ["tracing_disabled", "tracing_unavailable"]
    assert result["client_context"] is None
    # The one look-up made: whether the extra is installed, when the environment
    # asked for tracing (refused here, as if it were not).
    assert result["import_attempts"] == ["opentelemetry"]
    assert result["loaded"] == []
