"""Request mode: attempts waiting for their worker's reply, by correlation id."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import JobResult


@dataclass(eq=False)
class Waiter:
    """One attempt waiting for its reply."""

    arrived: anyio.Event = field(default_factory=anyio.Event)
    result: JobResult | None = None


class ReplyWaiters:
    """The attempts of one connection waiting for replies, by correlation id (the run id).

    Register with :meth:`expect` *before* publishing (a fast worker may answer
    before the publish returns); the connection's consumer calls :meth:`deliver`;
    a lost connection calls :meth:`fail_all` (its reply queue is gone with it).
    """

    def __init__(self) -> None:
        self._waiting: dict[str, Waiter] = {}

    def expect(self, correlation_id: str) -> Waiter:
        """Register the attempt that waits for ``correlation_id``."""
        waiter = Waiter()
        self._waiting[correlation_id] = waiter
        return waiter

    def deliver(self, correlation_id: str, result: JobResult) -> None:
        """Hand a reply to its attempt; a reply nobody waits for (late, or for an
        attempt that timed out) is dropped."""
        waiter = self._waiting.get(correlation_id)
        if waiter is not None and waiter.result is None:
            waiter.result = result
            waiter.arrived.set()

    def forget(self, correlation_id: str) -> None:
        """The attempt stopped waiting."""
        self._waiting.pop(correlation_id, None)

    def fail_all(self, error: str) -> None:
        """Fail every waiting attempt (retriable): their replies cannot arrive."""
        for waiter in list(self._waiting.values()):
            if waiter.result is None:
                waiter.result = JobResult.failure(error)
                waiter.arrived.set()

    @staticmethod
    async def wait(waiter: Waiter, ctx: HandlerContext, reply_timeout_s: float) -> JobResult:
        """The reply. A job with a timeout waits until the engine ends the attempt at
        its deadline (outcome timeout, retriable); one without waits
        ``reply_timeout_s`` and then fails, retriable."""
        return await wait_for(waiter.arrived, lambda: waiter.result, ctx, reply_timeout_s)


async def wait_for(
    arrived: anyio.Event,
    result: object,
    ctx: HandlerContext,
    reply_timeout_s: float,
) -> JobResult:
    """Wait for ``arrived``, then return ``result()`` (see :meth:`ReplyWaiters.wait`)."""
    if ctx.deadline is not None:
        await arrived.wait()
    else:
        with anyio.move_on_after(reply_timeout_s):
            await arrived.wait()
    value = result() if callable(result) else None
    if isinstance(value, JobResult):
        return value
    return JobResult.failure(f"no reply within {reply_timeout_s:g} s")


__all__ = ["ReplyWaiters", "Waiter", "wait_for"]
