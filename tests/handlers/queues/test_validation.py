"""Refused when added: bad payloads and destinations outside ``allow`` (no broker needed:
the add-time check does no I/O), and the handlers' config tables."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from nexus_schedd.errors import ConfigError, InvalidSpec, UnknownJobType
from nexus_schedd.handlers.queues import amqp, celery_tasks, nats_jetstream, redis_streams
from nexus_schedd.handlers.registry import HandlerRegistry

REGISTRY = HandlerRegistry(
    {
        "amqp": amqp.make_handler({"url": "amqp://127.0.0.1/", "allow": ["jobs.*"]}),
        "redis": redis_streams.make_handler({"url": "redis://127.0.0.1/", "allow": ["jobs:*"]}),
        "nats": nats_jetstream.make_handler({"url": "nats://127.0.0.1", "allow": ["jobs.>", "jobs.*"]}),
        "celery": celery_tasks.make_handler({"broker_url": "redis://127.0.0.1/", "allow": ["proj.tasks.*"]}),
    }
)  # fmt: skip

GOOD = {
    "amqp": {"routing_key": "jobs.daily"},
    "redis": {"stream": "jobs:daily", "maxlen": 1000},
    "nats": {"subject": "jobs.daily", "mode": "request"},
    "celery": {"task": "proj.tasks.refresh", "args": [1], "kwargs": {"a": 2}},
}


@pytest.mark.parametrize("job_type", sorted(GOOD))
def test_a_good_payload_is_accepted(job_type: str) -> None:
    REGISTRY.check_job(job_type, GOOD[job_type])


@pytest.mark.parametrize(
    ("job_type", "payload", "field"),
    [
        # unknown payload keys
        ("amqp", {"routing_key": "jobs.daily", "exchnage": "x"}, "payload.exchnage"),
        ("redis", {"stream": "jobs:daily", "maxlen": 10, "ttl": 5}, "payload.ttl"),
        ("nats", {"subject": "jobs.daily", "reply": "x"}, "payload.reply"),
        ("celery", {"task": "proj.tasks.refresh", "countdown": 5}, "payload.countdown"),
        # destinations outside allow
        ("amqp", {"routing_key": "billing.charge"}, "payload.routing_key"),
        ("amqp", {"exchange": "amq.topic", "routing_key": "jobs.daily"}, "payload.exchange"),
        ("redis", {"stream": "billing"}, "payload.stream"),
        ("nats", {"subject": "billing.charge"}, "payload.subject"),
        ("celery", {"task": "os.system"}, "payload.task"),
        # bodies and arguments that are not JSON-serialisable
        ("amqp", {"routing_key": "jobs.daily", "body": {1, 2}}, "payload.body"),
        ("redis", {"stream": "jobs:daily", "body": float("nan")}, "payload.body"),
        ("nats", {"subject": "jobs.daily", "body": object()}, "payload.body"),
        ("celery", {"task": "proj.tasks.refresh", "args": [b"raw"]}, "payload.args"),
        # other bad values
        ("amqp", {"routing_key": "jobs.daily", "mode": "fire"}, "payload.mode"),
        ("amqp", {"routing_key": ""}, "payload.routing_key"),
        ("redis", {"stream": "jobs:daily", "maxlen": 0}, "payload.maxlen"),
        ("nats", {"subject": "jobs.*"}, "payload.subject"),
        ("nats", {"subject": "jobs.daily", "envelope": False}, "payload.body"),
        ("celery", {"task": "proj.tasks.refresh", "wait_result": True}, "payload.wait_result"),
    ],
)
def test_a_bad_payload_is_refused_with_the_field_named(
    job_type: str, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSpec) as refused:
        REGISTRY.check_job(job_type, payload)
    assert refused.value.field == field


def test_an_unknown_job_type_is_still_unknown() -> None:
    with pytest.raises(UnknownJobType):
        REGISTRY.check_job("kafka", {})


@pytest.mark.parametrize(
    ("factory", "table", "key"),
    [
        (amqp.make_handler, {"allow": ["x"]}, "handlers.amqp.url"),
        (amqp.make_handler, {"url": "http://x"}, "handlers.amqp.url"),
        (redis_streams.make_handler, {"url": "redis://x", "alow": []}, "handlers.redis.alow"),
        (nats_jetstream.make_handler, {"url": "nats://x", "allow": "jobs.*"}, "handlers.nats.allow"),
        (celery_tasks.make_handler, {"broker_url": "redis://x", "result_backend": "rpc://"}, "handlers.celery.result_backend"),
    ],
)  # fmt: skip
def test_a_bad_table_is_a_config_error_naming_the_key(
    factory: Any, table: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        factory(table)
    assert refused.value.key == key


@pytest.mark.parametrize(
    ("factory", "module", "table"),
    [
        (amqp.make_handler, "aio_pika", {"url": "amqp://x"}),
        (redis_streams.make_handler, "redis", {"url": "redis://x"}),
        (nats_jetstream.make_handler, "nats", {"url": "nats://x"}),
        (celery_tasks.make_handler, "aio_pika", {"broker_url": "amqp://x"}),
    ],
)
def test_without_the_extra_a_configured_table_names_it(
    factory: Any, module: str, table: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError) as missing:
        factory(table)
    assert "nexus-schedd[queues]" in missing.value.reason


@pytest.mark.parametrize(
    "factory",
    [amqp.make_handler, redis_streams.make_handler, nats_jetstream.make_handler, celery_tasks.make_handler],
)  # fmt: skip
def test_without_a_table_the_job_type_is_refused_with_what_to_configure(factory: Any) -> None:
    handler = factory({})  # installed, not configured: the daemon still starts
    name = handler.name
    assert handler.supports(name)
    with pytest.raises(InvalidSpec) as refused:
        HandlerRegistry({name: handler}).check_job(name, {})
    assert f"[handlers.{name}]" in refused.value.reason
