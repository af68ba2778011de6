"""The engine: one core (dispatch, workers, deadlines, outcomes, checkpoints) fed by
a source of due work (a window over a local store, or leased claims on a shared
one), and the control operations on top."""

from __future__ import annotations

from nexus_schedd.engine.engine import Engine, RunState, engine_for
from nexus_schedd.engine.settings import EngineSettings

__all__ = ["Engine", "EngineSettings", "RunState", "engine_for"]
