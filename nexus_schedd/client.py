"""The public client library of nexus-schedd: ``from nexus_schedd.client import Client``.

A call that changes state (add, cancel, pause, resume, trigger, reschedule,
reload) and gets no reply after it was sent raises :class:`OutcomeUnknown`: the
change may or may not have been made. Retry an add safely by giving the job a
``name`` (the same definition returns the existing job). A retried backfill adds
no occurrence whose backfill job is still queued or running.

``add_job`` and ``add_jobs`` pass the caller's trace context on: with
``trace_context=``, else, in an application that traces with OpenTelemetry, the
current span's, so the job's runs are spans of the caller's trace (docs/tracing.md).
"""

from __future__ import annotations

from nexus_schedd.control.client import (
    DEFAULT_TIMEOUT_S,
    Client,
    event_from_json,
    spec_to_json,
)
from nexus_schedd.control.paths import default_socket_path
from nexus_schedd.errors import DaemonUnreachable, OutcomeUnknown

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Client",
    "DaemonUnreachable",
    "OutcomeUnknown",
    "default_socket_path",
    "event_from_json",
    "spec_to_json",
]
