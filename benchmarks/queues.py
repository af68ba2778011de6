"""Workload 7, hand-off to queues: N one-shot jobs due now, handed by a real daemon
(SQLite, durability full) to each broker in publish mode, durable destination and
confirms on; hand-offs/s from the first AddJobs call to the n-th run
recorded as succeeded, i.e. confirmed by the broker (the broker must then hold n).
Beside it, the ceiling: the raw publish rate with confirms through the same client
library, in the same run, at the daemon's concurrency (64 in flight).

    python -m benchmarks.queues [--jobs 5000]

Brokers: RabbitMQ (aio-pika, a durable queue, publisher confirms, persistent
messages), Redis (redis.asyncio XADD), NATS JetStream (nats-py, file storage,
PubAck), Celery on Redis (kombu's message LPUSHed). A broker that does not answer
gives an empty row. Celery beat's own dispatch is not measured: beat sends one
task per due entry from a single process with no confirm, so it is no ceiling for
a confirmed hand-off (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from benchmarks.common import Report, Row, daemon_config, emit, running_daemon, workdir

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"
CONCURRENCY = 64
PORTS = {"amqp": 5672, "redis": 6379, "nats": 4222, "celery": 6379}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


class Destination:
    """One broker's destination for a run: created, counted, removed."""

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.name = f"nxs-bench-{uuid.uuid4().hex[:10]}"

    @property
    def payload(self) -> dict[str, Any]:
        if self.broker == "amqp":
            return {"routing_key": self.name}
        if self.broker == "redis":
            return {"stream": self.name}
        if self.broker == "nats":
            return {"subject": f"{self.name}.jobs"}
        if self.broker == "bench":
            return {}
        return {"task": "bench.noop", "queue": self.name}

    async def create(self) -> None:
        if self.broker == "amqp":
            import aio_pika

            async with await aio_pika.connect(AMQP_URL) as connection:
                channel = await connection.channel()
                await channel.declare_queue(self.name, durable=True)
        elif self.broker == "nats":
            import nats

            nc = await nats.connect(NATS_URL)
            await nc.jetstream().add_stream(name=self.name, subjects=[f"{self.name}.>"])
            await nc.close()

    async def count(self) -> int:
        if self.broker == "amqp":
            import aio_pika

            async with await aio_pika.connect(AMQP_URL) as connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(self.name, durable=True, passive=True)
                return int(queue.declaration_result.message_count or 0)
        if self.broker == "nats":
            import nats

            nc = await nats.connect(NATS_URL)
            try:
                info = await nc.jetstream().stream_info(self.name)
                return int(info.state.messages)
            finally:
                await nc.close()
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            if self.broker == "redis":
                return int(await client.xlen(self.name))
            return int(await client.llen(self.name))  # type: ignore[misc]
        finally:
            await client.aclose()

    async def remove(self) -> None:
        if self.broker == "bench":
            return
        if self.broker == "amqp":
            import aio_pika

            async with await aio_pika.connect(AMQP_URL) as connection:
                channel = await connection.channel()
                await channel.queue_delete(self.name)
        elif self.broker == "nats":
            import nats

            nc = await nats.connect(NATS_URL)
            await nc.jetstream().delete_stream(self.name)
            await nc.close()
        else:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(REDIS_URL)
            await client.delete(self.name)
            await client.aclose()


async def _concurrently(n: int, publish: Callable[[int], Awaitable[None]]) -> float:
    """Run ``publish(i)`` for i < n with CONCURRENCY in flight; returns seconds."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await publish(i)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(CONCURRENCY):
            tg.start_soon(lane)
    return time.perf_counter() - started


async def raw_rate(destination: Destination, n: int) -> float:
    """The ceiling: n confirmed publishes through the broker's client, no scheduler."""
    body = json.dumps({"job_id": "x" * 26, "payload": destination.payload, "attempt": 1}).encode()
    if destination.broker == "amqp":
        import aio_pika

        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)

            async def publish(i: int) -> None:
                message = aio_pika.Message(
                    body, message_id=str(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                )
                await channel.default_exchange.publish(
                    message, routing_key=destination.name, mandatory=True
                )

            seconds = await _concurrently(n, publish)
    elif destination.broker == "nats":
        import nats

        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()

        async def publish(i: int) -> None:
            await js.publish(f"{destination.name}.jobs", body, headers={"Nats-Msg-Id": f"raw-{i}"})

        seconds = await _concurrently(n, publish)
        await nc.close()
    else:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS_URL)

        async def publish(i: int) -> None:
            if destination.broker == "redis":
                await client.xadd(destination.name, {"message_id": str(i), "body": body})
            else:
                await client.lpush(destination.name, body)  # type: ignore[misc]

        seconds = await _concurrently(n, publish)
        await client.aclose()
    return n / seconds


def daemon_rate(destination: Destination, n: int) -> dict[str, Any]:
    """n hand-offs through a real daemon: from the first AddJobs to the n-th confirmed
    run (Watch events); the broker must then hold all n."""
    from nexus_schedd.client import Client

    extra = {
        "amqp": f'[handlers.amqp]\nurl = "{AMQP_URL}"\nallow = ["nxs-bench-*"]\n',
        "redis": f'[handlers.redis]\nurl = "{REDIS_URL}"\nallow = ["nxs-bench-*"]\n',
        "nats": f'[handlers.nats]\nurl = "{NATS_URL}"\nallow = ["nxs-bench-*"]\n',
        "celery": f'[handlers.celery]\nbroker_url = "{REDIS_URL}"\nallow = ["bench.*"]\n',
        "bench": "",
    }[destination.broker]
    with workdir("nxb-queues-") as work, running_daemon(work, daemon_config(extra=extra)) as daemon:

        async def measure() -> dict[str, Any]:
            from nexus_schedd.model.events import EventKind

            specs = [
                {"job_type": destination.broker, "payload": destination.payload} for _ in range(n)
            ]
            finished = anyio.Event()
            subscribed = anyio.Event()

            async def wake_on_runs(watcher: Client) -> None:
                # Watch drops the oldest events of a slow subscriber, so an event is
                # only a reason to look at the status counts, which are exact.
                nonlocal finished
                events = watcher.watch(job_type=destination.broker)
                subscribed.set()
                async for event in events:
                    if event.kind is EventKind.RUN_FINISHED:
                        finished.set()

            counts: dict[str, int] = {}
            async with (
                Client(daemon.socket_path, timeout=300) as client,
                Client(daemon.socket_path, timeout=None) as watcher,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(wake_on_runs, watcher)
                await subscribed.wait()
                started = time.perf_counter()
                for start in range(0, n, 1000):
                    await client.add_jobs(specs[start : start + 1000])
                with anyio.move_on_after(60 + n / 50):
                    while counts.get("completed", 0) + counts.get("failed_permanent", 0) < n:
                        await finished.wait()
                        finished = anyio.Event()
                        counts = (await client.status())["counts"]
                seconds = time.perf_counter() - started
                tg.cancel_scope.cancel()
            held = n if destination.broker == "bench" else await destination.count()
            return {
                "jobs": n,
                "held_by_broker": held,
                "jobs_by_status": {k: v for k, v in counts.items() if v},
                "seconds": round(seconds, 3),
                "handoffs_per_s": (
                    round(n / seconds) if counts.get("completed") == n and held >= n else None
                ),
            }

        return anyio.run(measure, backend_options={"use_uvloop": True})


def run(jobs: int) -> Report:
    """Every broker that answers: the daemon's hand-off rate and the raw ceiling."""
    report = Report("8 hand-off to queues")
    details: dict[str, Any] = {"jobs": jobs, "concurrency": CONCURRENCY}
    labels = {
        "amqp": "raw aio-pika publish, confirms",
        "redis": "raw redis.asyncio XADD",
        "nats": "raw nats-py JetStream publish",
        "celery": "raw redis.asyncio LPUSH",
    }
    for broker in ("amqp", "redis", "nats", "celery"):
        metric = f"{broker} hand-offs/s (publish, confirmed)"
        if not _answers(PORTS[broker]):
            report.rows.append(Row(metric, None, None, theirs_label="broker not answering"))
            continue
        raw_destination, destination = Destination(broker), Destination(broker)
        try:
            anyio.run(raw_destination.create)
            anyio.run(destination.create)
            ceiling = anyio.run(raw_rate, raw_destination, jobs)
            ours = daemon_rate(destination, jobs)
        finally:
            anyio.run(raw_destination.remove)
            anyio.run(destination.remove)
        details[broker] = {"daemon": ours, "raw_per_s": round(ceiling)}
        report.rows.append(
            Row(metric, ours["handoffs_per_s"], round(ceiling), theirs_label=labels[broker])
        )
    # The same harness with the benchmarks' no-op handler: what the daemon itself
    # (durable start and finish of each run) allows, with no broker at all.
    baseline = daemon_rate(Destination("bench"), jobs)
    details["no_op_handler"] = baseline
    report.rows.append(
        Row(
            "no-op handler jobs/s, same harness",
            baseline["handoffs_per_s"],
            None,
            theirs_label="the daemon's own ceiling here",
        )
    )
    report.details = details
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5_000)
    args = parser.parse_args()
    emit([run(args.jobs)])


if __name__ == "__main__":
    main()
