"""The ``amqp`` handler: hand a job to RabbitMQ (AMQP 0-9-1, aio-pika).

Payload: ``{"exchange": "", "routing_key": "reports", "persistent": true,
"headers": {...}, "mode": "publish" | "request", "envelope": true, "body": ...}``.
Published mandatory on a channel with publisher confirms: the attempt succeeds on
the broker's ack; a returned (unroutable) message is a permanent failure; a nack,
a lost connection or a slow broker is a retriable one. ``message_id`` is the
message id (:func:`.envelope.message_id`). In request mode the message carries
``reply_to`` (the handler's exclusive reply queue) and ``correlation_id`` (the run
id); the worker's reply, a JobResult as JSON, decides the attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.handlers.base import HandlerContext, with_trace_headers
from nexus_schedd.handlers.queues.envelope import (
    Delivery,
    UnconfiguredHandler,
    check_allowed,
    config_allow,
    config_keys,
    config_seconds,
    config_url,
    encode_body,
    message_id,
    reply_result,
    require,
    text,
)
from nexus_schedd.handlers.queues.link import BrokerLink, BrokerUnavailable, unavailable
from nexus_schedd.handlers.queues.replies import ReplyWaiters
from nexus_schedd.model import Job, JobResult

if TYPE_CHECKING:
    import aio_pika.abc

_PAYLOAD_KEYS = frozenset({"exchange", "routing_key", "persistent", "headers"})
_CONFIG_KEYS = frozenset(
    {"url", "allow", "connect_timeout_s", "publish_timeout_s", "reply_timeout_s"}
)


@dataclass(frozen=True, slots=True)
class AmqpPayload:
    """A validated ``amqp`` payload."""

    exchange: str
    routing_key: str
    persistent: bool
    headers: Mapping[str, Any]
    delivery: Delivery

    @property
    def destination(self) -> str:
        """What ``allow`` matches: the routing key on the default exchange (the queue
        name), else the exchange."""
        return self.exchange or self.routing_key

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> AmqpPayload:
        """Check the payload; raises InvalidSpec naming the field."""
        delivery = Delivery.parse(payload, _PAYLOAD_KEYS)
        exchange = text(payload, "exchange", "")
        routing_key = text(payload, "routing_key", "" if exchange else None)
        persistent = payload.get("persistent", True)
        if not isinstance(persistent, bool):
            raise InvalidSpec("payload.persistent", "must be true or false")
        headers = payload.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool)
            for k, v in headers.items()
        ):
            raise InvalidSpec(
                "payload.headers", "must be an object of names to strings, numbers or booleans"
            )
        return cls(exchange, routing_key, persistent, dict(headers), delivery)


@dataclass(eq=False)
class _Session:
    """One AMQP connection with its confirm channel and, once needed, a reply queue."""

    connection: aio_pika.abc.AbstractConnection
    channel: aio_pika.abc.AbstractChannel
    replies: ReplyWaiters = field(default_factory=ReplyWaiters)
    reply_queue: str | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    def is_open(self) -> bool:
        return not self.connection.is_closed and not self.channel.is_closed


class AmqpHandler:
    """Runs ``amqp`` jobs: one publish (and in request mode one reply) per attempt."""

    name = "amqp"

    def __init__(
        self,
        url: str,
        allow: tuple[str, ...] = (),
        *,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        reply_timeout_s: float = 300.0,
    ) -> None:
        self.url = url
        self.allow = allow
        self.publish_timeout_s = publish_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.link: BrokerLink[_Session] = BrokerLink(
            self.name,
            self._connect,
            self._close,
            _Session.is_open,
            connect_timeout_s=connect_timeout_s,
        )

    def supports(self, job_type: str) -> bool:
        """Only the ``amqp`` job type."""
        return job_type == self.name

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Add-time check: known keys, a JSON body, a destination ``allow`` permits."""
        self._parse(payload)

    def _parse(self, payload: Mapping[str, Any]) -> AmqpPayload:
        parsed = AmqpPayload.parse(payload)
        field_name = "payload.exchange" if parsed.exchange else "payload.routing_key"
        check_allowed(field_name, parsed.destination, self.allow, self.name)
        return parsed

    async def aclose(self) -> None:
        """Close the connection (shutdown, reload)."""
        await self.link.aclose()

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """Publish the message; in request mode, wait for the worker's reply."""
        import aio_pika
        import aio_pika.exceptions as amqp_errors

        try:
            request = self._parse(job.payload)
        except InvalidSpec as exc:
            return JobResult.failure(f"bad amqp payload: {exc.message}", should_retry=False)
        try:
            session = await self.link.get()
            reply_to = (
                await self._reply_queue(session) if request.delivery.mode == "request" else None
            )
        except BrokerUnavailable as exc:
            return unavailable(exc)
        except (amqp_errors.AMQPError, OSError) as exc:
            self.link.discard(session)
            return JobResult.failure(f"amqp: cannot set up the reply queue: {_describe(exc)}")
        correlation_id = ctx.run_id or uuid.uuid4().hex
        msg_id = message_id(ctx, request.delivery.mode)
        message = aio_pika.Message(
            encode_body(job, ctx, request.delivery),
            content_type="application/json" if request.delivery.envelope else None,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if request.persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
            message_id=msg_id,
            correlation_id=correlation_id if reply_to else None,
            reply_to=reply_to,
            headers=with_trace_headers(dict(request.headers), ctx),
            app_id="nexus-schedd",
        )
        waiter = session.replies.expect(correlation_id) if reply_to else None
        try:
            result = await self._publish(session, request, message)
            if result is not None or waiter is None:
                return result or JobResult.success({"message_id": msg_id})
            return await session.replies.wait(waiter, ctx, self.reply_timeout_s)
        finally:
            if waiter is not None:
                session.replies.forget(correlation_id)

    async def _publish(
        self, session: _Session, request: AmqpPayload, message: aio_pika.Message
    ) -> JobResult | None:
        """Publish and wait for the confirm: None when acked, else the failure."""
        import aio_pika.exceptions as amqp_errors

        try:
            exchange = (
                session.channel.default_exchange
                if not request.exchange
                else await session.channel.get_exchange(request.exchange, ensure=False)
            )
            with anyio.fail_after(self.publish_timeout_s):
                await exchange.publish(message, routing_key=request.routing_key, mandatory=True)
        except amqp_errors.PublishError as exc:
            return JobResult.failure(
                f"amqp: unroutable: no queue is bound to {request.destination!r} "
                f"(returned: {_reply_text(exc)})",
                should_retry=False,
            )
        except amqp_errors.DeliveryError:
            return JobResult.failure("amqp: the broker refused the message (nack)")
        except amqp_errors.ChannelNotFoundEntity as exc:
            self.link.discard(session)  # the broker closed the channel
            return JobResult.failure(f"amqp: {_describe(exc)}", should_retry=False)
        except TimeoutError:
            return JobResult.failure(
                f"amqp: no publisher confirm within {self.publish_timeout_s:g} s"
            )
        except (amqp_errors.AMQPError, OSError, RuntimeError) as exc:
            self.link.discard(session)
            return JobResult.failure(f"amqp: publish failed: {_describe(exc)}")
        return None

    async def _reply_queue(self, session: _Session) -> str:
        """The session's exclusive reply queue, declared and consumed on first use."""
        async with session.lock:
            if session.reply_queue is None:
                queue = await session.channel.declare_queue(exclusive=True, auto_delete=True)

                async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    if message.correlation_id:
                        session.replies.deliver(message.correlation_id, reply_result(message.body))

                await queue.consume(on_reply, no_ack=True)
                session.reply_queue = queue.name
            return session.reply_queue

    async def _connect(self) -> _Session:
        import aio_pika

        connection = await aio_pika.connect(self.url, timeout=self.link.connect_timeout_s)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            await connection.close()
            raise
        session = _Session(connection, channel)

        def lost(*_args: Any) -> None:
            session.replies.fail_all("amqp: the connection closed while waiting for the reply")

        connection.close_callbacks.add(lost)
        channel.close_callbacks.add(lost)
        return session

    async def _close(self, session: _Session) -> None:
        await session.connection.close()


def _reply_text(exc: Exception) -> str:
    frame = getattr(exc, "frame", None)
    return str(getattr(frame, "reply_text", "") or type(exc).__name__)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def make_handler(config: Mapping[str, Any]) -> AmqpHandler | UnconfiguredHandler:
    """Entry point ``amqp``: ``[handlers.amqp]`` takes ``url`` (amqp://...), ``allow``
    (globs of routing keys or exchanges), ``connect_timeout_s``, ``publish_timeout_s``
    and ``reply_timeout_s`` (request mode, for jobs without a timeout)."""
    if not config:
        return UnconfiguredHandler("amqp", "url")
    require("aio_pika", "amqp")
    config_keys(config, "amqp", _CONFIG_KEYS)
    return AmqpHandler(
        config_url(config, "amqp", "url", ("amqp", "amqps")),
        config_allow(config, "amqp"),
        connect_timeout_s=config_seconds(config, "amqp", "connect_timeout_s", 10.0),
        publish_timeout_s=config_seconds(config, "amqp", "publish_timeout_s", 30.0),
        reply_timeout_s=config_seconds(config, "amqp", "reply_timeout_s", 300.0),
    )


__all__ = ["AmqpHandler", "AmqpPayload", "make_handler"]
