"""The ``redis`` handler: hand a job to a Redis stream (redis.asyncio).

Payload: ``{"stream": "reports", "maxlen": 10000, "mode": "publish" | "request",
"envelope": true, "body": ...}``. One XADD per attempt with the fields
``message_id`` (:func:`.envelope.message_id`), ``body`` (the envelope or
``payload.body``) and, in request mode, ``reply_to``; the attempt succeeds on the
XADD reply (the entry id). In request mode the worker XADDs its reply, a JobResult
as JSON in the field ``result``, to the stream named in ``reply_to`` (also in the
envelope); the handler reads it with a blocking XREAD and deletes that stream.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
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
from nexus_schedd.model import Job, JobResult

if TYPE_CHECKING:
    import redis.asyncio

_PAYLOAD_KEYS = frozenset({"stream", "maxlen"})
_CONFIG_KEYS = frozenset(
    {"url", "allow", "connect_timeout_s", "publish_timeout_s", "reply_timeout_s", "reply_prefix"}
)
REPLY_FIELD = "result"
_READ_BLOCK_MS = 30_000
"""One blocking XREAD waits at most this long before it is issued again (the
socket must not look idle forever to proxies and the server's timeout)."""


@dataclass(frozen=True, slots=True)
class RedisPayload:
    """A validated ``redis`` payload."""

    stream: str
    maxlen: int | None
    delivery: Delivery

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> RedisPayload:
        """Check the payload; raises InvalidSpec naming the field."""
        delivery = Delivery.parse(payload, _PAYLOAD_KEYS)
        stream = text(payload, "stream")
        maxlen = payload.get("maxlen")
        if maxlen is not None and (
            isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1
        ):
            raise InvalidSpec("payload.maxlen", "must be a whole number >= 1")
        return cls(stream, maxlen, delivery)


class RedisHandler:
    """Runs ``redis`` jobs: one XADD (and in request mode one reply) per attempt."""

    name = "redis"

    def __init__(
        self,
        url: str,
        allow: tuple[str, ...] = (),
        *,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        reply_timeout_s: float = 300.0,
        reply_prefix: str = "nexus:reply:",
    ) -> None:
        self.url = url
        self.allow = allow
        self.publish_timeout_s = publish_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.reply_prefix = reply_prefix
        self.link: BrokerLink[redis.asyncio.Redis] = BrokerLink(
            self.name, self._connect, self._close, lambda _: True,
            connect_timeout_s=connect_timeout_s,
        )  # fmt: skip

    def supports(self, job_type: str) -> bool:
        """Only the ``redis`` job type."""
        return job_type == self.name

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Add-time check: known keys, a JSON body, a stream ``allow`` permits."""
        self._parse(payload)

    def _parse(self, payload: Mapping[str, Any]) -> RedisPayload:
        parsed = RedisPayload.parse(payload)
        check_allowed("payload.stream", parsed.stream, self.allow, self.name)
        return parsed

    async def aclose(self) -> None:
        """Close the connection pool (shutdown, reload)."""
        await self.link.aclose()

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """XADD the message; in request mode, wait for the worker's reply."""
        import redis.exceptions

        try:
            request = self._parse(job.payload)
        except InvalidSpec as exc:
            return JobResult.failure(f"bad redis payload: {exc.message}", should_retry=False)
        try:
            client = await self.link.get()
        except BrokerUnavailable as exc:
            return unavailable(exc)
        msg_id = message_id(ctx, request.delivery.mode)
        reply_to = (
            f"{self.reply_prefix}{ctx.run_id or uuid.uuid4().hex}"
            if request.delivery.mode == "request"
            else None
        )
        fields: dict[Any, Any] = {
            "message_id": msg_id,
            "body": encode_body(
                job, ctx, request.delivery, **({"reply_to": reply_to} if reply_to else {})
            ),
        }
        if reply_to:
            fields["reply_to"] = reply_to
        with_trace_headers(fields, ctx)
        try:
            with anyio.fail_after(self.publish_timeout_s):
                entry = await client.xadd(request.stream, fields, maxlen=request.maxlen)
        except TimeoutError:
            self.link.discard(client)
            return JobResult.failure(f"redis: no XADD reply within {self.publish_timeout_s:g} s")
        except redis.exceptions.ResponseError as exc:
            # WRONGTYPE and the like: the key is not a stream; retrying will not help.
            return JobResult.failure(f"redis: XADD refused: {exc}", should_retry=False)
        except (redis.exceptions.RedisError, OSError) as exc:
            self.link.discard(client)
            return JobResult.failure(f"redis: XADD failed: {type(exc).__name__}: {exc}")
        stream_id = entry.decode() if isinstance(entry, bytes) else str(entry)
        if reply_to is None:
            return JobResult.success({"message_id": msg_id, "stream_id": stream_id})
        return await self._reply(client, reply_to, ctx)

    async def _reply(
        self, client: redis.asyncio.Redis, reply_to: str, ctx: HandlerContext
    ) -> JobResult:
        """Block on the reply stream until the worker's reply (see replies.wait_for)."""
        import redis.exceptions

        waited_ms = 0
        limit_ms = None if ctx.deadline is not None else int(self.reply_timeout_s * 1000)
        try:
            while limit_ms is None or waited_ms < limit_ms:
                block = (
                    _READ_BLOCK_MS
                    if limit_ms is None
                    else min(_READ_BLOCK_MS, limit_ms - waited_ms)
                )
                found = await client.xread({reply_to: "0"}, count=1, block=block)
                if found:
                    _stream, entries = found[0]
                    _entry_id, values = entries[0]
                    raw = values.get(REPLY_FIELD.encode())
                    if raw is None:
                        return JobResult.failure(
                            f"the reply has no {REPLY_FIELD!r} field: "
                            f"{json.dumps(sorted(k.decode() for k in values))}"
                        )
                    return reply_result(raw)
                waited_ms += block
        except (redis.exceptions.RedisError, OSError) as exc:
            self.link.discard(client)
            return JobResult.failure(
                f"redis: lost the connection while waiting for the reply: {type(exc).__name__}: {exc}"
            )
        finally:
            await cleanup(lambda: client.delete(reply_to))
        return JobResult.failure(f"no reply within {self.reply_timeout_s:g} s")

    async def _connect(self) -> redis.asyncio.Redis:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(
            self.url, socket_connect_timeout=self.link.connect_timeout_s
        )
        try:
            await client.ping()  # type: ignore[misc]  # redis-py types sync|async as one
        except BaseException:
            await client.aclose()
            raise
        return client

    async def _close(self, client: redis.asyncio.Redis) -> None:
        await client.aclose()


def make_handler(config: Mapping[str, Any]) -> RedisHandler | UnconfiguredHandler:
    """Entry point ``redis``: ``[handlers.redis]`` takes ``url`` (redis://...),
    ``allow`` (stream globs), ``connect_timeout_s``, ``publish_timeout_s``,
    ``reply_timeout_s`` and ``reply_prefix`` (of request mode's reply streams)."""
    if not config:
        return UnconfiguredHandler("redis", "url")
    require("redis", "redis")
    config_keys(config, "redis", _CONFIG_KEYS)
    prefix = config.get("reply_prefix", "nexus:reply:")
    if not isinstance(prefix, str) or not prefix:
        from nexus_schedd.errors import ConfigError

        raise ConfigError("<config>", "handlers.redis.reply_prefix", "must be a non-empty string")
    return RedisHandler(
        config_url(config, "redis", "url", ("redis", "rediss", "unix")),
        config_allow(config, "redis"),
        connect_timeout_s=config_seconds(config, "redis", "connect_timeout_s", 10.0),
        publish_timeout_s=config_seconds(config, "redis", "publish_timeout_s", 30.0),
        reply_timeout_s=config_seconds(config, "redis", "reply_timeout_s", 300.0),
        reply_prefix=prefix,
    )


__all__ = ["RedisHandler", "RedisPayload", "make_handler"]
