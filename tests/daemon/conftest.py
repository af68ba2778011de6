"""Fixtures of the end-to-end tests of the real daemon process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.daemon_process import DaemonProcess


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    """``make(config_text, **kwargs)`` -> a DaemonProcess in ``tmp_path``; every one
    made is closed (stopped, killed if need be) after the test."""
    started: list[DaemonProcess] = []

    def make(config_text: str, **kwargs: Any) -> DaemonProcess:
        process = DaemonProcess(tmp_path, config_text, **kwargs)
        started.append(process)
        return process

    yield make
    for process in started:
        process.close()
