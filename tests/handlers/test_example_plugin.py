"""The example plugin in examples/ installs as its own distribution and is found by
load_handlers() through the nexus_schedd.handlers entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nexus-schedd-example-plugin"

PROBE = """
import json
from datetime import UTC, datetime

import anyio
import structlog

from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.handlers.loading import load_handlers
from nexus_schedd.model import Job, JobDefaults, JobSpec

registry = load_handlers({"greet": {"greeting": "Moin"}}, log=structlog.get_logger())
handler = registry.resolve("greet")
now = datetime(2025, 1, 1, tzinfo=UTC)
job = Job.create(JobSpec(job_type="greet", payload={"name": "Ada"}), now, JobDefaults())
result = anyio.run(handler.handle, job, HandlerContext(1, "k", None, now, structlog.get_logger()))
print(json.dumps({
    "names": registry.names(),
    "broken": dict(registry.broken),
    "module": type(handler).__module__,
    "output": result.output,
}))
"""


def test_installed_example_plugin_is_loaded_through_its_entry_point(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, source],
        check=True,
        timeout=120,
    )
    assert (site / "nexus_schedd_example").is_dir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(probe.stdout.splitlines()[-1])
    assert "greet" in report["names"]
    assert report["broken"] == {}
    assert report["module"] == "nexus_schedd_example.handler"
    assert report["output"] == {"message": "Moin, Ada!"}


def test_without_the_plugin_installed_greet_is_unknown() -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; print(u.find_spec('nexus_schedd_example'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.strip() == "None"
