"""The public client library of nexus-schedd: ``from nexus_schedd.client import Client``."""

from __future__ import annotations

from nexus_schedd.control.client import Client, event_from_json, spec_to_json
from nexus_schedd.control.paths import default_socket_path

__all__ = ["Client", "default_socket_path", "event_from_json", "spec_to_json"]
