"""What the queue handlers share: payload rules, the message, the reply, allow globs."""

from __future__ import annotations

import fnmatch
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nexus_schedd.errors import ConfigError, InvalidSpec
from nexus_schedd.handlers.base import ENGINE_KEYS, HandlerContext
from nexus_schedd.model import Job, JobResult
from nexus_schedd.model.times import format_instant

Mode = Literal["publish", "request"]
MODES: tuple[Mode, ...] = ("publish", "request")
COMMON_KEYS = frozenset({"mode", "envelope", "body"}) | ENGINE_KEYS
"""Keys every queue handler reads (the engine's ``trigger`` / ``event`` travel in
the envelope's payload)."""
EXTRA = "queues"
"""The optional extra that brings the broker clients."""

TASK_ID_NAMESPACE = uuid.UUID("6f1d3c62-4a0e-5b8e-9d1a-8c2f7e5b0a11")
"""The UUIDv5 namespace of Celery task ids derived from message ids (fixed forever:
a changed namespace would give a repeated hand-off a new task id)."""


def require(module: str, handler: str) -> None:
    """Raise ConfigError naming the extra if the broker client ``module`` is missing."""
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(
            "<config>",
            f"handlers.{handler}",
            f"the {handler} handler needs the {module!r} client: "
            f"install the extra with pip install 'nexus-schedd[{EXTRA}]'",
        ) from None


@dataclass(frozen=True, slots=True)
class Delivery:
    """The payload keys every queue handler reads."""

    mode: Mode
    envelope: bool
    body: Any

    @classmethod
    def parse(cls, payload: Mapping[str, Any], keys: frozenset[str]) -> Delivery:
        """Check the common keys and that no key outside ``keys`` | COMMON_KEYS is set."""
        unknown = set(payload) - keys - COMMON_KEYS
        if unknown:
            allowed = ", ".join(sorted(keys | COMMON_KEYS))
            raise InvalidSpec(
                f"payload.{sorted(unknown)[0]}", f"unknown payload key (use {allowed})"
            )
        mode = payload.get("mode", "publish")
        if mode not in MODES:
            raise InvalidSpec("payload.mode", f"must be publish or request, got {mode!r}")
        envelope = payload.get("envelope", True)
        if not isinstance(envelope, bool):
            raise InvalidSpec("payload.envelope", "must be true or false")
        body = payload.get("body")
        try:
            json.dumps(body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidSpec("payload.body", f"not JSON-serialisable: {exc}") from None
        if not envelope and "body" not in payload:
            raise InvalidSpec("payload.body", "is required when envelope is false")
        return cls(mode, envelope, body)


def text(payload: Mapping[str, Any], key: str, default: str | None = None) -> str:
    """``payload[key]`` as a non-empty string (``default`` when absent, if given)."""
    value = payload.get(key, default)
    if not isinstance(value, str) or (not value and default is None):
        raise InvalidSpec(f"payload.{key}", "must be a non-empty string")
    return value


def check_allowed(field: str, destination: str, allow: Sequence[str], handler: str) -> None:
    """Refuse ``destination`` unless an ``allow`` glob of ``[handlers.NAME]`` matches it."""
    if not any(fnmatch.fnmatchcase(destination, pattern) for pattern in allow):
        permits = ", ".join(allow) if allow else "nothing (no 'allow' globs set)"
        raise InvalidSpec(
            field, f"{destination!r} is not allowed: [handlers.{handler}] allow permits {permits}"
        )


def message_id(ctx: HandlerContext, mode: Mode) -> str:
    """The message id of this hand-off: the idempotency key, so a hand-off repeated
    after a crash or a broker failure carries the same id. In request mode a retry
    the worker asked for is a new request, so the attempt number is appended."""
    if mode == "request":
        return f"{ctx.idempotency_key}:{ctx.attempt}"
    return ctx.idempotency_key


def task_id(message: str) -> str:
    """The Celery task id of a message id: a UUIDv5, the same for the same id."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, message))


def build_envelope(job: Job, ctx: HandlerContext, **extra: Any) -> dict[str, Any]:
    """The envelope of SPEC 14 (``extra`` adds keys such as ``reply_to``)."""
    return {
        "job_id": job.id,
        "job_type": job.job_type,
        "target_id": job.target_id,
        "payload": job.payload,
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "scheduled_for": format_instant(ctx.scheduled_for),
        "idempotency_key": ctx.idempotency_key,
        **extra,
    }


def encode_body(job: Job, ctx: HandlerContext, delivery: Delivery, **extra: Any) -> bytes:
    """The message body: the envelope, or ``payload.body`` alone (a string as UTF-8
    text, anything else as JSON)."""
    if delivery.envelope:
        return json.dumps(build_envelope(job, ctx, **extra), separators=(",", ":")).encode()
    if isinstance(delivery.body, str):
        return delivery.body.encode()
    return json.dumps(delivery.body, separators=(",", ":")).encode()


def reply_result(raw: bytes | str) -> JobResult:
    """A worker's reply as a JobResult; a reply that is not one is a retriable failure."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return JobResult.failure(f"the reply is not JSON: {exc}")
    if not isinstance(value, dict):
        return _not_a_result(f"a JSON {type(value).__name__}")
    return result_from_mapping(value)


def result_from_mapping(value: Mapping[str, Any]) -> JobResult:
    """``{"success", "output", "error", "should_retry", "retry_delay_s"}`` as a JobResult."""
    unknown = set(value) - {"success", "output", "error", "should_retry", "retry_delay_s"}
    success = value.get("success")
    if unknown or not isinstance(success, bool):
        return _not_a_result(
            f"unknown keys {sorted(unknown)}" if unknown else "'success' is not true or false"
        )
    if success:
        return JobResult.success(value.get("output"))
    error = value.get("error")
    should_retry = value.get("should_retry", True)
    delay = value.get("retry_delay_s")
    if not isinstance(should_retry, bool):
        return _not_a_result("'should_retry' is not true or false")
    if delay is not None and (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        return _not_a_result("'retry_delay_s' is not a number of seconds >= 0")
    return JobResult.failure(
        str(error) if error is not None else "the worker reported a failure",
        should_retry=should_retry,
        retry_delay_s=None if delay is None else float(delay),
        output=value.get("output"),
    )


def _not_a_result(why: str) -> JobResult:
    return JobResult.failure(
        f"the reply is not a JobResult ({why}); expected "
        '{"success", "output", "error", "should_retry", "retry_delay_s"}'
    )


class UnconfiguredHandler:
    """What an installed queue handler is without a ``[handlers.NAME]`` table: it owns
    its job type, so a job of that type is refused at add with a message saying what
    to configure (rather than UnknownJobType), and it needs no broker client."""

    def __init__(self, name: str, url_key: str) -> None:
        self.name = name
        self.reason = (
            f"the {name} handler is not configured: add a [handlers.{name}] table "
            f"with {url_key} and allow"
        )

    def supports(self, job_type: str) -> bool:
        """Its own job type."""
        return job_type == self.name

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Refuse every job: there is no broker to hand it to."""
        raise InvalidSpec("job_type", self.reason)

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """A permanent failure (the table was removed since the job was added)."""
        return JobResult.failure(self.reason, should_retry=False)


def config_keys(config: Mapping[str, Any], handler: str, keys: frozenset[str]) -> None:
    """Refuse a ``[handlers.NAME]`` key the handler does not know."""
    unknown = set(config) - keys
    if unknown:
        raise ConfigError(
            "<config>",
            f"handlers.{handler}.{sorted(unknown)[0]}",
            f"unknown key (use {', '.join(sorted(keys))})",
        )


def config_allow(config: Mapping[str, Any], handler: str) -> tuple[str, ...]:
    """The ``allow`` globs of ``[handlers.NAME]`` (none by default)."""
    allow = config.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(p, str) and p for p in allow):
        raise ConfigError("<config>", f"handlers.{handler}.allow", "must be a list of globs")
    return tuple(allow)


def config_seconds(config: Mapping[str, Any], handler: str, key: str, default: float) -> float:
    """A positive number of seconds from ``[handlers.NAME]``."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
        raise ConfigError(
            "<config>", f"handlers.{handler}.{key}", "must be a number of seconds in (0, 86400]"
        )
    return float(value)


def config_url(config: Mapping[str, Any], handler: str, key: str, schemes: Sequence[str]) -> str:
    """A broker URL from ``[handlers.NAME]`` (required) with one of ``schemes``."""
    value = config.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(
            "<config>", f"handlers.{handler}.{key}", f"is required (a {schemes[0]}:// URL)"
        )
    scheme = value.partition("://")[0]
    if scheme not in schemes:
        raise ConfigError(
            "<config>",
            f"handlers.{handler}.{key}",
            f"must be a {' or '.join(s + '://' for s in schemes)} URL",
        )
    return value


__all__ = [
    "EXTRA",
    "MODES",
    "Delivery",
    "Mode",
    "build_envelope",
    "check_allowed",
    "encode_body",
    "message_id",
    "reply_result",
    "require",
    "result_from_mapping",
    "task_id",
]
