"""The ``celery`` handler: send a Celery task by name to its broker, AMQP or Redis.

Celery's own client is synchronous, so the handler speaks Celery's documented
task message protocol (version 2) with the async clients: on RabbitMQ a
persistent message published mandatory with publisher confirms to the queue (the
default exchange, the queue declared durable as Celery declares it); on Redis an
LPUSH of kombu's JSON envelope onto the queue's list. An unmodified worker
(``celery -A proj worker -Q QUEUE``) runs the task by name.

Payload: ``{"task": "proj.tasks.refresh", "args": [...], "kwargs": {...},
"queue": "celery", "wait_result": false}``. The task id is a UUIDv5 of the message
id (:func:`.envelope.task_id`), so a hand-off repeated after a crash names the same
task. With ``wait_result`` the attempt waits for the task's state in the Redis
result backend: SUCCESS is success (the result is the output; a dict result with
``should_retry`` is read as a JobResult), RETRY a retriable failure, FAILURE and
REVOKED permanent failures.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from nexus_schedd.errors import ConfigError, InvalidSpec
from nexus_schedd.handlers.base import ENGINE_KEYS, HandlerContext, with_trace_headers
from nexus_schedd.handlers.queues.envelope import (
    UnconfiguredHandler,
    build_envelope,
    check_allowed,
    config_allow,
    config_keys,
    config_seconds,
    config_url,
    message_id,
    require,
    result_from_mapping,
    task_id,
    text,
)
from nexus_schedd.handlers.queues.link import BrokerLink, BrokerUnavailable, cleanup, unavailable
from nexus_schedd.model import Job, JobResult

if TYPE_CHECKING:
    import aio_pika.abc
    import redis.asyncio

_PAYLOAD_KEYS = frozenset({"task", "args", "kwargs", "queue", "wait_result"})
_CONFIG_KEYS = frozenset(
    {
        "broker_url",
        "result_backend",
        "allow",
        "connect_timeout_s",
        "publish_timeout_s",
        "reply_timeout_s",
    }
)
RESULT_KEY_PREFIX = "celery-task-meta-"
"""Where Celery's Redis result backend keeps (and publishes) a task's state."""


@dataclass(frozen=True, slots=True)
class CeleryPayload:
    """A validated ``celery`` payload."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    wait_result: bool

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> CeleryPayload:
        """Check the payload; raises InvalidSpec naming the field."""
        unknown = set(payload) - _PAYLOAD_KEYS - ENGINE_KEYS
        if unknown:
            raise InvalidSpec(
                f"payload.{sorted(unknown)[0]}",
                f"unknown payload key (use {', '.join(sorted(_PAYLOAD_KEYS))})",
            )
        task = text(payload, "task")
        args = payload.get("args", [])
        if not isinstance(args, list):
            raise InvalidSpec("payload.args", "must be a list")
        kwargs = payload.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise InvalidSpec("payload.kwargs", "must be an object")
        for name, value in (("args", args), ("kwargs", kwargs)):
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidSpec(f"payload.{name}", f"not JSON-serialisable: {exc}") from None
        queue = text(payload, "queue", "celery") or "celery"
        wait_result = payload.get("wait_result", False)
        if not isinstance(wait_result, bool):
            raise InvalidSpec("payload.wait_result", "must be true or false")
        # A follow-up's trigger / a notification's event is a keyword argument
        # of the task (SPEC 15), unless kwargs names it already.
        added = {key: payload[key] for key in sorted(ENGINE_KEYS) if key in payload}
        return cls(task, list(args), {**added, **kwargs}, queue, wait_result)


def task_message(
    request: CeleryPayload, job: Job, ctx: HandlerContext, tid: str
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Celery's task message protocol 2: (headers, properties, JSON body)."""
    envelope = build_envelope(job, ctx)
    del envelope["payload"]  # the task's args are its payload
    headers: dict[str, Any] = {
        "lang": "py",
        "task": request.task,
        "id": tid,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": tid,
        "parent_id": None,
        "argsrepr": repr(tuple(request.args)),
        "kwargsrepr": repr(request.kwargs),
        "origin": f"nexus-schedd@{socket.gethostname()}",
        "ignore_result": not request.wait_result,
        "nexus": envelope,
    }
    with_trace_headers(headers, ctx)  # where Celery's own instrumentation puts it
    properties: dict[str, Any] = {"correlation_id": tid, "reply_to": ""}
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([request.args, request.kwargs, embed], separators=(",", ":")).encode()
    return headers, properties, body


class _AmqpBroker:
    """Celery's AMQP transport: a durable queue, publisher confirms, mandatory."""

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        self.url = url
        self.declared: set[str] = set()
        self.link: BrokerLink[aio_pika.abc.AbstractConnection] = BrokerLink(
            "celery (amqp)", self._connect, lambda c: c.close(), lambda c: not c.is_closed,
            connect_timeout_s=connect_timeout_s,
        )  # fmt: skip
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        import aio_pika

        connection = await aio_pika.connect(self.url, timeout=self.link.connect_timeout_s)
        try:
            self._channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            await connection.close()
            raise
        self.declared = set()
        return connection

    async def publish(
        self, queue: str, headers: dict[str, Any], properties: dict[str, Any], body: bytes
    ) -> JobResult | None:
        import aio_pika
        import aio_pika.exceptions as amqp_errors

        connection = await self.link.get()
        channel = self._channel
        try:
            if channel is None or channel.is_closed:
                raise amqp_errors.ChannelInvalidStateError("the channel is closed")
            if queue not in self.declared:
                # As Celery declares its queues, so a worker started later finds the task.
                await channel.declare_queue(queue, durable=True)
                self.declared.add(queue)
            message = aio_pika.Message(
                body,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                priority=0,
                correlation_id=properties["correlation_id"],
                message_id=properties["correlation_id"],
            )
            await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)
        except amqp_errors.PublishError:
            return JobResult.failure(f"celery: unroutable: no queue {queue!r}", should_retry=False)
        except amqp_errors.DeliveryError:
            return JobResult.failure("celery: the broker refused the message (nack)")
        except (amqp_errors.AMQPError, OSError, RuntimeError) as exc:
            self.link.discard(connection)
            return JobResult.failure(f"celery: publish failed: {type(exc).__name__}: {exc}")
        return None


class _RedisBroker:
    """Celery's Redis transport: kombu's JSON envelope LPUSHed onto the queue's list."""

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        self.link: BrokerLink[redis.asyncio.Redis] = BrokerLink(
            "celery (redis)", lambda: redis_client(url, connect_timeout_s),
            lambda c: c.aclose(), lambda _: True, connect_timeout_s=connect_timeout_s,
        )  # fmt: skip

    async def publish(
        self, queue: str, headers: dict[str, Any], properties: dict[str, Any], body: bytes
    ) -> JobResult | None:
        import redis.exceptions

        client = await self.link.get()
        message = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        try:
            await client.lpush(queue, json.dumps(message))  # type: ignore[misc]
        except redis.exceptions.ResponseError as exc:
            return JobResult.failure(f"celery: LPUSH refused: {exc}", should_retry=False)
        except (redis.exceptions.RedisError, OSError) as exc:
            self.link.discard(client)
            return JobResult.failure(f"celery: LPUSH failed: {type(exc).__name__}: {exc}")
        return None


async def redis_client(url: str, connect_timeout_s: float) -> redis.asyncio.Redis:
    """A connected redis.asyncio client (PING answered)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=connect_timeout_s)
    try:
        await client.ping()  # type: ignore[misc]  # redis-py types sync|async as one
    except BaseException:
        await client.aclose()
        raise
    return client


class CeleryHandler:
    """Runs ``celery`` jobs: one task message (and with wait_result its result) per attempt."""

    name = "celery"

    def __init__(
        self,
        broker_url: str,
        result_backend: str | None = None,
        allow: tuple[str, ...] = (),
        *,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        reply_timeout_s: float = 300.0,
    ) -> None:
        self.allow = allow
        self.publish_timeout_s = publish_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.broker: _AmqpBroker | _RedisBroker = (
            _AmqpBroker(broker_url, connect_timeout_s)
            if broker_url.startswith("amqp")
            else _RedisBroker(broker_url, connect_timeout_s)
        )
        self.result_backend = result_backend
        self.backend: BrokerLink[redis.asyncio.Redis] | None = None
        if result_backend is not None:
            self.backend = BrokerLink(
                "celery result backend", lambda: redis_client(result_backend, connect_timeout_s),
                lambda c: c.aclose(), lambda _: True, connect_timeout_s=connect_timeout_s,
            )  # fmt: skip

    def supports(self, job_type: str) -> bool:
        """Only the ``celery`` job type."""
        return job_type == self.name

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Add-time check: known keys, JSON args, a task name ``allow`` permits, and a
        result backend configured when the job waits for its result."""
        self._parse(payload)

    def _parse(self, payload: Mapping[str, Any]) -> CeleryPayload:
        parsed = CeleryPayload.parse(payload)
        check_allowed("payload.task", parsed.task, self.allow, self.name)
        if parsed.wait_result and self.backend is None:
            raise InvalidSpec(
                "payload.wait_result", "[handlers.celery] sets no result_backend to wait on"
            )
        return parsed

    async def aclose(self) -> None:
        """Close the broker and result backend connections (shutdown, reload)."""
        await self.broker.link.aclose()
        if self.backend is not None:
            await self.backend.aclose()

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """Send the task; with wait_result, wait for its state in the result backend."""
        try:
            request = self._parse(job.payload)
        except InvalidSpec as exc:
            return JobResult.failure(f"bad celery payload: {exc.message}", should_retry=False)
        msg_id = message_id(ctx, "request" if request.wait_result else "publish")
        tid = task_id(msg_id)
        headers, properties, body = task_message(request, job, ctx, tid)
        if not request.wait_result:
            failed = await self._send(request.queue, headers, properties, body)
            return failed or JobResult.success({"task_id": tid, "message_id": msg_id})
        assert self.backend is not None
        try:
            client = await self.backend.get()
        except BrokerUnavailable as exc:
            return unavailable(exc)
        return await self._send_and_wait(client, request.queue, tid, headers, properties, body, ctx)

    async def _send(
        self, queue: str, headers: dict[str, Any], properties: dict[str, Any], body: bytes
    ) -> JobResult | None:
        try:
            with anyio.fail_after(self.publish_timeout_s):
                return await self.broker.publish(queue, headers, properties, body)
        except BrokerUnavailable as exc:
            return unavailable(exc)
        except TimeoutError:
            return JobResult.failure(
                f"celery: no broker confirm within {self.publish_timeout_s:g} s"
            )

    async def _send_and_wait(
        self,
        client: redis.asyncio.Redis,
        queue: str,
        tid: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        body: bytes,
        ctx: HandlerContext,
    ) -> JobResult:
        """Subscribe to the task's result channel, send, then wait for a final state."""
        import redis.exceptions

        key = f"{RESULT_KEY_PREFIX}{tid}"
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(key)
            # A state left from an earlier attempt of the same task id would answer
            # at once: forget it before sending (a request-mode id is per attempt).
            await client.delete(key)
            failed = await self._send(queue, headers, properties, body)
            if failed is not None:
                return failed
            result: JobResult | None = None

            async def read() -> None:
                nonlocal result
                while result is None:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message.get("type") == "message":
                        result = state_result(message["data"], tid)

            if ctx.deadline is not None:
                await read()
            else:
                with anyio.move_on_after(self.reply_timeout_s):
                    await read()
            return result or JobResult.failure(
                f"no result for task {tid} within {self.reply_timeout_s:g} s"
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            if self.backend is not None:
                self.backend.discard(client)
            return JobResult.failure(
                f"celery: lost the result backend while waiting: {type(exc).__name__}: {exc}"
            )
        finally:
            await cleanup(pubsub.aclose)


def state_result(raw: bytes | str, tid: str) -> JobResult | None:
    """A task state from the result backend as a JobResult (None: not final yet)."""
    try:
        meta = json.loads(raw)
    except ValueError:
        return JobResult.failure(f"celery: task {tid}: unreadable result (not JSON)")
    status = meta.get("status") if isinstance(meta, dict) else None
    value = meta.get("result") if isinstance(meta, dict) else None
    if status == "SUCCESS":
        if isinstance(value, dict) and "should_retry" in value:
            return result_from_mapping({"success": False, **value})
        return JobResult.success(value)
    if status == "RETRY":
        return JobResult.failure(f"celery: task {tid} asked to be retried: {_exception(value)}")
    if status in ("FAILURE", "REVOKED"):
        return JobResult.failure(
            f"celery: task {tid} {status.lower()}: {_exception(value)}", should_retry=False
        )
    return None  # PENDING, RECEIVED, STARTED: keep waiting


def _exception(value: Any) -> str:
    if isinstance(value, dict) and "exc_type" in value:
        message = value.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(str(part) for part in message)
        return f"{value['exc_type']}: {message}" if message else str(value["exc_type"])
    return str(value)


def make_handler(config: Mapping[str, Any]) -> CeleryHandler | UnconfiguredHandler:
    """Entry point ``celery``: ``[handlers.celery]`` takes ``broker_url`` (amqp:// or
    redis://), ``result_backend`` (redis://, for wait_result), ``allow`` (task name
    globs), ``connect_timeout_s``, ``publish_timeout_s`` and ``reply_timeout_s``."""
    if not config:
        return UnconfiguredHandler("celery", "broker_url")
    config_keys(config, "celery", _CONFIG_KEYS)
    broker_url = config_url(config, "celery", "broker_url", ("amqp", "amqps", "redis", "rediss"))
    require("aio_pika" if broker_url.startswith("amqp") else "redis", "celery")
    backend = config.get("result_backend")
    if backend is not None:
        backend = config_url(config, "celery", "result_backend", ("redis", "rediss"))
        require("redis", "celery")
    elif "result_backend" in config:
        raise ConfigError("<config>", "handlers.celery.result_backend", "must be a redis:// URL")
    return CeleryHandler(
        broker_url,
        backend,
        config_allow(config, "celery"),
        connect_timeout_s=config_seconds(config, "celery", "connect_timeout_s", 10.0),
        publish_timeout_s=config_seconds(config, "celery", "publish_timeout_s", 30.0),
        reply_timeout_s=config_seconds(config, "celery", "reply_timeout_s", 300.0),
    )


__all__ = ["CeleryHandler", "CeleryPayload", "make_handler", "state_result", "task_message"]
