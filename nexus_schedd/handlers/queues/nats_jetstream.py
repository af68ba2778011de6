"""The ``nats`` handler: hand a job to NATS JetStream (nats-py).

Payload: ``{"subject": "reports.daily", "mode": "publish" | "request",
"envelope": true, "body": ...}``. One JetStream publish per attempt with the
header ``Nats-Msg-Id`` (:func:`.envelope.message_id`), so the stream drops a
repeated hand-off within its duplicate window; the attempt succeeds on the PubAck
(a duplicate's too). A subject no stream captures is a permanent failure. In
request mode the header ``Nexus-Reply-To`` names a subject the handler listens
on; the worker publishes its reply, a JobResult as JSON, there.
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
from nexus_schedd.handlers.queues.link import (
    BrokerLink,
    BrokerUnavailable,
    cleanup,
    unavailable,
)
from nexus_schedd.handlers.queues.replies import ReplyWaiters
from nexus_schedd.model import Job, JobResult

if TYPE_CHECKING:
    import nats.aio.client
    import nats.aio.msg
    import nats.js

REPLY_HEADER = "Nexus-Reply-To"
_PAYLOAD_KEYS = frozenset({"subject"})
_CONFIG_KEYS = frozenset(
    {"url", "allow", "connect_timeout_s", "publish_timeout_s", "reply_timeout_s"}
)


@dataclass(frozen=True, slots=True)
class NatsPayload:
    """A validated ``nats`` payload."""

    subject: str
    delivery: Delivery

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> NatsPayload:
        """Check the payload; raises InvalidSpec naming the field."""
        delivery = Delivery.parse(payload, _PAYLOAD_KEYS)
        subject = text(payload, "subject")
        if any(c in subject for c in " \t\r\n*>") or ".." in subject or subject.startswith("."):
            raise InvalidSpec("payload.subject", "must be a NATS subject without wildcards")
        return cls(subject, delivery)


@dataclass(eq=False)
class _Session:
    """One NATS connection, its JetStream context and its waiting requests."""

    client: nats.aio.client.Client
    js: nats.js.JetStreamContext
    replies: ReplyWaiters = field(default_factory=ReplyWaiters)
    publishing: set[anyio.CancelScope] = field(default_factory=set)
    """Publishes waiting for their PubAck: nats-py leaves them waiting when the
    connection is lost, so :meth:`lost` cancels them."""

    def is_open(self) -> bool:
        return self.client.is_connected

    def lost(self) -> None:
        """The connection is gone: fail what waits on it."""
        for scope in list(self.publishing):
            scope.cancel()
        self.replies.fail_all("nats: the connection closed while waiting for the reply")


class NatsHandler:
    """Runs ``nats`` jobs: one JetStream publish (and in request mode one reply) per attempt."""

    name = "nats"

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
        self._reply_root = f"_NEXUS.reply.{uuid.uuid4().hex}"
        self.link: BrokerLink[_Session] = BrokerLink(
            self.name, self._connect, self._close, _Session.is_open,
            connect_timeout_s=connect_timeout_s,
        )  # fmt: skip

    def supports(self, job_type: str) -> bool:
        """Only the ``nats`` job type."""
        return job_type == self.name

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Add-time check: known keys, a JSON body, a subject ``allow`` permits."""
        self._parse(payload)

    def _parse(self, payload: Mapping[str, Any]) -> NatsPayload:
        parsed = NatsPayload.parse(payload)
        check_allowed("payload.subject", parsed.subject, self.allow, self.name)
        return parsed

    async def aclose(self) -> None:
        """Close the connection (shutdown, reload)."""
        await self.link.aclose()

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """Publish to JetStream; in request mode, wait for the worker's reply."""
        import nats.errors
        import nats.js.errors

        try:
            request = self._parse(job.payload)
        except InvalidSpec as exc:
            return JobResult.failure(f"bad nats payload: {exc.message}", should_retry=False)
        try:
            session = await self.link.get()
        except BrokerUnavailable as exc:
            return unavailable(exc)
        msg_id = message_id(ctx, request.delivery.mode)
        headers = with_trace_headers({"Nats-Msg-Id": msg_id}, ctx)
        subscription = None
        waiter = None
        try:
            if request.delivery.mode == "request":
                reply_subject = f"{self._reply_root}.{ctx.run_id or uuid.uuid4().hex}"
                headers[REPLY_HEADER] = reply_subject
                waiter = session.replies.expect(reply_subject)

                async def on_reply(msg: nats.aio.msg.Msg) -> None:
                    session.replies.deliver(msg.subject, reply_result(msg.data))

                subscription = await session.client.subscribe(reply_subject, cb=on_reply)
            with anyio.fail_after(self.publish_timeout_s), anyio.CancelScope() as publishing:
                session.publishing.add(publishing)
                try:
                    ack = await session.js.publish(
                        request.subject,
                        encode_body(job, ctx, request.delivery),
                        timeout=self.publish_timeout_s,
                        headers=headers,
                    )
                finally:
                    session.publishing.discard(publishing)
            if publishing.cancelled_caught:
                self.link.discard(session)
                return JobResult.failure("nats: the connection closed before the PubAck")
            if waiter is None:
                return JobResult.success(
                    {
                        "message_id": msg_id,
                        "stream": ack.stream,
                        "seq": ack.seq,
                        "duplicate": bool(ack.duplicate),
                    }
                )
            return await session.replies.wait(waiter, ctx, self.reply_timeout_s)
        except nats.js.errors.NoStreamResponseError:
            return JobResult.failure(
                f"nats: no JetStream stream captures subject {request.subject!r}",
                should_retry=False,
            )
        except (TimeoutError, nats.errors.TimeoutError):
            return JobResult.failure(f"nats: no PubAck within {self.publish_timeout_s:g} s")
        except nats.js.errors.APIError as exc:
            return JobResult.failure(f"nats: JetStream refused the message: {exc}")
        except (nats.errors.Error, OSError) as exc:
            self.link.discard(session)
            return JobResult.failure(f"nats: publish failed: {type(exc).__name__}: {exc}")
        finally:
            if waiter is not None:
                session.replies.forget(headers[REPLY_HEADER])
            if subscription is not None:
                await cleanup(subscription.unsubscribe)

    async def _connect(self) -> _Session:
        import nats

        session: _Session | None = None

        async def lost() -> None:
            if session is not None:
                session.lost()

        async def quiet(_exc: Exception) -> None:
            pass  # failures surface as errors of the calls that meet them

        client = await nats.connect(
            self.url,
            connect_timeout=max(1, int(self.link.connect_timeout_s)),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            disconnected_cb=lost,
            closed_cb=lost,
            error_cb=quiet,
            name="nexus-schedd",
        )
        session = _Session(client, client.jetstream(timeout=self.publish_timeout_s))
        return session

    async def _close(self, session: _Session) -> None:
        await session.client.close()


def make_handler(config: Mapping[str, Any]) -> NatsHandler | UnconfiguredHandler:
    """Entry point ``nats``: ``[handlers.nats]`` takes ``url`` (nats://...), ``allow``
    (subject globs), ``connect_timeout_s``, ``publish_timeout_s`` and ``reply_timeout_s``."""
    if not config:
        return UnconfiguredHandler("nats", "url")
    require("nats", "nats")
    config_keys(config, "nats", _CONFIG_KEYS)
    return NatsHandler(
        config_url(config, "nats", "url", ("nats", "tls")),
        config_allow(config, "nats"),
        connect_timeout_s=config_seconds(config, "nats", "connect_timeout_s", 10.0),
        publish_timeout_s=config_seconds(config, "nats", "publish_timeout_s", 30.0),
        reply_timeout_s=config_seconds(config, "nats", "reply_timeout_s", 300.0),
    )


__all__ = ["NatsHandler", "NatsPayload", "make_handler"]
