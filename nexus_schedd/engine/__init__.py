"""The engine: the in-memory heap of due times, dispatch to handlers, retries,
misfire and overlap policies, and checkpoints to the store."""

from __future__ import annotations

from nexus_schedd.engine.engine import Engine
from nexus_schedd.engine.settings import EngineSettings

__all__ = ["Engine", "EngineSettings"]
