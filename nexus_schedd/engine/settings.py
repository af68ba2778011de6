"""The engine's settings (a slice of the daemon config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nexus_schedd.engine.rates import Rate
from nexus_schedd.engine.reactions import NotifyRule
from nexus_schedd.model import JobDefaults


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine runs jobs.

    ``window_size`` bounds how many pending jobs sit in the in-memory heap; the
    rest stay in the store until the window drains (adds may take memory up to
    :attr:`memory_bound` before it is trimmed back). ``commit_interval_ms`` is the
    longest rows nobody waits for (a finished run, a job's next state) wait for
    company before their checkpoint starts (see
    :class:`~nexus_schedd.engine.checkpoint.Checkpointer`); 0, the default here,
    writes at once, and ``[store] commit_interval_ms`` (default 5) sets it in the
    daemon. ``start_ahead_ms``:
    a due job's start is checkpointed up to this long before its run_at and its
    handler is called at run_at, so the start's fsync is not part of its lateness.
    The default leaves room for a commit that waits behind another one on a slow
    disk (10 ms left a p99 lateness of 5 ms where commits took 3 to 6 ms; 30 ms
    gave 2 ms, see docs/performance.md).
    """

    node: str = ""
    max_concurrency: int = 64
    type_limits: Mapping[str, int] = field(default_factory=dict)
    type_rates: Mapping[str, Rate] = field(default_factory=dict)
    """Starts per job type and period (``[limits.rates]``), see :mod:`.rates`."""
    defaults: JobDefaults = field(default_factory=JobDefaults)
    notify: tuple[NotifyRule, ...] = ()
    """The ``[[notify]]`` rules (see :mod:`.reactions`)."""
    commit_interval_ms: float = 0.0
    shutdown_grace_s: float = 30.0
    window_size: int = 100_000
    start_ahead_ms: float = 30.0
    history_keep_days: float = 30
    history_keep_per_job: int = 100
    lease_s: float = 30.0
    """Shared mode (multi-node): how long a claim holds a job; renewed every lease_s / 3."""
    safety_recheck_s: float = 60.0
    """Shared mode: re-read the store this often against lost notifications."""

    @property
    def memory_bound(self) -> int:
        """How many jobs memory may hold before the window forgets the latest
        pending ones (they are on disk): one and a half windows. Adds to a
        daemon whose window is full stop at this bound, and a million jobs added
        over the socket stay within SPEC 10's 250 MB (docs/performance.md)."""
        return self.window_size * 3 // 2

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.window_size < 1:
            raise ValueError("window_size must be >= 1")
        if not 0 <= self.commit_interval_ms <= 10_000:
            raise ValueError("commit_interval_ms must be within 0..10000")
        if not 0 <= self.start_ahead_ms <= 1000:
            raise ValueError("start_ahead_ms must be within 0..1000")
        if not 1.0 <= self.lease_s <= 3600.0:
            raise ValueError("lease_s must be within 1..3600")
        if not 1.0 <= self.safety_recheck_s <= 86400.0:
            raise ValueError("safety_recheck_s must be within 1..86400")
        if any(limit < 0 for limit in self.type_limits.values()):
            raise ValueError("type limits must be >= 0")
