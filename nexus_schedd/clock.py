"""Time enters nexus-schedd through one :class:`Clock`.

Nothing else reads the wall clock (``datetime.now()``, ``time.time()``): every
"now" and every wait for an instant goes through a Clock. Intervals that measure
the process itself rather than the schedule (event-loop lag for the watchdog, the
bounded joins of leftover threads at exit) use the monotonic clock. The engine waits with
``with clock.deadline_scope(t): await wakeup.wait()`` and bounds handler attempts
with the same kind of scope, so a :class:`VirtualClock` can drive days of
schedule in milliseconds of real time.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import itertools
import os
import sys
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.abc
import anyio.lowlevel


class Clock(Protocol):
    """The source of the current time and of time-based cancellation."""

    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    def deadline_scope(self, deadline: datetime | None) -> anyio.CancelScope:
        """A cancel scope that is cancelled once the clock reaches ``deadline``.

        ``None`` means no deadline. The scope is not shielded; callers check
        ``scope.cancelled_caught`` to learn whether the deadline fired.
        """
        ...

    async def sleep_until(self, deadline: datetime) -> None:
        """Return once the clock has reached ``deadline``."""
        ...


class SystemClock:
    """The real wall clock; deadlines are mapped onto the event loop's monotonic time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def deadline_scope(self, deadline: datetime | None) -> anyio.CancelScope:
        if deadline is None:
            return anyio.CancelScope()
        remaining = (deadline - self.now()).total_seconds()
        return anyio.CancelScope(deadline=anyio.current_time() + max(0.0, remaining))

    async def sleep_until(self, deadline: datetime) -> None:
        remaining = (deadline - self.now()).total_seconds()
        if remaining > 0:
            await anyio.sleep(remaining)


class VirtualClock:
    """A clock for tests: time moves only when told, or when everything is idle.

    ``advance()`` moves time and cancels every scope whose deadline has passed.
    With ``autojump`` running (``tg.start_soon(clock.autojump)``), whenever all
    tasks are blocked the clock jumps straight to the earliest pending deadline,
    so a test runs a week of schedule without sleeping. ``timers_armed`` counts
    every deadline ever armed: a test proves the engine does not poll by seeing
    that count stay still.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2025, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start")
        self._timers: list[tuple[datetime, int, weakref.ref[anyio.CancelScope]]] = []
        self._sequence = itertools.count()
        self.timers_armed = 0

    def now(self) -> datetime:
        return self._now

    def deadline_scope(self, deadline: datetime | None) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        if deadline is None:
            return scope
        self.timers_armed += 1
        if deadline <= self._now:
            scope.cancel()
        else:
            heapq.heappush(self._timers, (deadline, next(self._sequence), weakref.ref(scope)))
        return scope

    async def sleep_until(self, deadline: datetime) -> None:
        with self.deadline_scope(deadline):
            await anyio.sleep_forever()

    def next_deadline(self) -> datetime | None:
        """The earliest armed deadline whose scope still exists, if any."""
        self._drop_dead_timers()
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and fire every deadline passed."""
        self.advance_to(self._now + timedelta(seconds=seconds))

    def advance_to(self, instant: datetime) -> None:
        """Move time forward to ``instant`` (never backwards) and fire deadlines."""
        if instant > self._now:
            self._now = instant
        while self._timers and self._timers[0][0] <= self._now:
            _, _, ref = heapq.heappop(self._timers)
            scope = ref()
            if scope is not None:
                scope.cancel()

    def set_time(self, instant: datetime) -> None:
        """Jump the wall clock to ``instant``, backwards included (clock-step tests)."""
        self._now = instant
        self.advance_to(instant)

    async def autojump(self, *, settle: float = 0.0) -> None:
        """Forever: once every task is blocked, jump to the earliest deadline.

        ``settle`` adds a short real-time pause before each jump so that work
        in worker threads (SQLite) can finish first.
        """
        while True:
            await anyio.wait_all_tasks_blocked()
            if settle:
                await anyio.sleep(settle)
                await anyio.wait_all_tasks_blocked()
            target = self.next_deadline()
            if target is None:
                await anyio.sleep(0.001)
                continue
            self.advance_to(target)
            await anyio.lowlevel.checkpoint()

    def _drop_dead_timers(self) -> None:
        while self._timers:
            scope = self._timers[0][2]()
            if scope is not None and not scope.cancel_called:
                return
            heapq.heappop(self._timers)


class WallClockSteps:
    """Tells when the system wall clock is stepped (``date -s``, an NTP step, a VM resume).

    :class:`SystemClock` sleeps on the event loop's monotonic clock, so a step would
    otherwise go unnoticed until the current sleep ends: a job due at 10:00 would
    run hours late after the clock jumps forward. Linux reports steps without
    polling through a ``timerfd`` on ``CLOCK_REALTIME`` armed with
    ``TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET``: its ``read()`` fails with
    ``ECANCELED`` whenever the clock is set. :meth:`open` returns None where that
    is unavailable (not Linux, no libc), and callers simply go without.
    """

    _CLOCK_REALTIME = 0
    _TFD_TIMER_ABSTIME = 1
    _TFD_TIMER_CANCEL_ON_SET = 2
    _FAR_FUTURE_S = 1 << 40
    """Armed so far ahead that it never expires; only a clock step wakes it."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self._fd = fd
        self._libc = libc

    @classmethod
    def open(cls) -> WallClockSteps | None:
        """A watcher, or None when this platform cannot report clock steps."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            create = libc.timerfd_create
        except (OSError, AttributeError):
            return None
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        create.restype = ctypes.c_int
        fd = create(cls._CLOCK_REALTIME, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        watcher = cls(fd, libc)
        try:
            watcher._arm()
        except OSError:
            watcher.close()
            return None
        return watcher

    @property
    def fileno(self) -> int:
        """The timerfd (for tests that read it directly)."""
        return self._fd

    _ARM_TRIES = 100

    def _arm(self) -> bool:
        """Arm the timer far ahead; True when the clock was set while arming.

        ``timerfd_settime`` fails with ``ECANCELED`` when the clock was set since
        the timer was last read (two steps close together: a VM resume and an
        NTP step, ``date -s`` twice). That failure is the report of the step,
        and it leaves the timer unarmed (the descriptor no longer readable), so
        the call is made again; a step is never an error.
        """
        spec = _ITimerSpec(it_interval=_TimeSpec(0, 0), it_value=_TimeSpec(self._FAR_FUTURE_S, 0))
        settime = self._libc.timerfd_settime
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        settime.restype = ctypes.c_int
        flags = self._TFD_TIMER_ABSTIME | self._TFD_TIMER_CANCEL_ON_SET
        stepped = False
        for _ in range(self._ARM_TRIES):
            if settime(self._fd, flags, ctypes.byref(spec), None) == 0:
                return stepped
            err = ctypes.get_errno()
            if err != errno.ECANCELED:
                raise OSError(err, os.strerror(err))
            stepped = True
        raise OSError(errno.ECANCELED, "the wall clock was set at every try to watch it")

    def consume(self) -> bool:
        """Read the timerfd once it is readable; True when the clock was stepped.

        A step is reported once per arming, so the timer is re-armed after it.
        """
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno != errno.ECANCELED:
                raise
            self._arm()
            return True
        # The far-future expiry itself: not a step, but re-arm anyway.
        return self._arm()

    async def wait(self) -> None:
        """Return after the next wall-clock step."""
        while True:
            await anyio.wait_readable(self._fd)
            if self.consume():
                return

    def close(self) -> None:
        """Release the timerfd."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


async def watch_clock_steps(
    on_step: Callable[[], None],
    *,
    task_status: anyio.abc.TaskStatus[bool] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``on_step`` after every wall-clock step, forever.

    Reports ``started(True)`` when steps can be watched here, ``started(False)``
    (and returns) when they cannot.
    """
    watcher = WallClockSteps.open()
    if watcher is None:
        task_status.started(False)
        return
    try:
        task_status.started(True)
        while True:
            await watcher.wait()
            on_step()
    finally:
        watcher.close()
