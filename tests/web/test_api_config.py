"""The ``[api]`` table and the TLS keys: what loads, and errors naming file, key, reason."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.errors import ConfigError
from nexus_schedd.web.api.idempotency import IdempotencyStore, StoredReply, fingerprint
from nexus_schedd.web.config import WebConfig, load_config
from tests.web.conftest import ADMIN_TOKEN, api_config_text, sha256_hex


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.toml"
    path.write_text(text)
    return path


def test_tokens_load_from_a_hash_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("file-token-0123456789\n")
    config = load_config(
        write(
            tmp_path,
            f"""
[api]
enabled = true
max_body_bytes = 4096
state_dir = "state"

[[api.tokens]]
name = "a"
sha256 = "{sha256_hex(ADMIN_TOKEN)}"
scope = "admin"
job_types = ["export_*"]

[[api.tokens]]
name = "b"
token_file = "secret"
""",
        )
    )
    api = config.api
    assert api.enabled and api.max_body_bytes == 4096
    assert api.idempotency_db == tmp_path / "state" / "api-idempotency.db"
    first, second = api.tokens
    assert first.scope == "admin" and first.sees("export_pdf") and not first.sees("log")
    assert second.scope == "read" and second.sees("anything")
    assert second.digest == hashlib.sha256(b"file-token-0123456789").digest()


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[api]\nenabled = 1\n", "api.enabled", "true or false"),
        ("[api]\ncolour = 1\n", "api.colour", "unknown key"),
        ("[api]\nenabled = true\n", "api.tokens", "no [[api.tokens]]"),
        ("[api]\nmax_body_bytes = 10\n", "api.max_body_bytes", ">= 1024"),
        ('[[api.tokens]]\nname = "x"\nsha256 = "zz"\n', "api.tokens[0].sha256", "64 hex"),
        ('[[api.tokens]]\nname = "x"\n', "api.tokens[0]", "exactly one of"),
        (
            f'[[api.tokens]]\nname = "x"\nsha256 = "{"a" * 64}"\nscope = "root"\n',
            "api.tokens[0].scope",
            "read or admin",
        ),
        (
            f'[[api.tokens]]\nname = "x"\nsha256 = "{"a" * 64}"\njob_types = "x*"\n',
            "api.tokens[0].job_types",
            "list",
        ),
        ('[[api.tokens]]\nname = "x"\ntoken_file = "missing"\n', "api.tokens[0].token_file", ""),
        (
            f'[[api.tokens]]\nname = "x"\nsha256 = "{"a" * 64}"\n'
            f'[[api.tokens]]\nname = "x"\nsha256 = "{"b" * 64}"\n',
            "api.tokens[1].name",
            "twice",
        ),
        ('[web]\ntls_cert = "cert.pem"\n', "web.tls_key", "go together"),
        ('[web]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n', "web.tls_cert", "cannot be read"),
        ("[apis]\n", "apis", "unknown table"),
    ],
)
def test_bad_api_config_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.file == str(path)
    assert caught.value.key == key and reason in caught.value.reason


def test_beyond_loopback_needs_tls_or_allow_plain_http(tmp_path: Path) -> None:
    base = api_config_text(tmp_path / "i.db")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, '[web]\nlisten = "192.0.2.1:8470"\n' + base))
    assert caught.value.key == "web.listen" and "allow_plain_http" in caught.value.reason
    allowed = load_config(
        write(tmp_path, '[web]\nlisten = "192.0.2.1:8470"\nallow_plain_http = true\n' + base)
    )
    assert allowed.allow_plain_http
    for host in ("127.0.0.1", "127.8.9.10", "[::1]", "localhost"):
        assert load_config(write(tmp_path, f'[web]\nlisten = "{host}:8470"\n' + base))
    # Without the API the dashboard may listen anywhere (as before).
    assert WebConfig(listen="0.0.0.0:8470").listen == "0.0.0.0:8470"
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, base)).with_overrides(listen="0.0.0.0:8470", socket=None)


@pytest.mark.anyio
async def test_idempotency_keys_expire_after_24_hours(tmp_path: Path) -> None:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = IdempotencyStore(tmp_path / "keys.db", clock)
    await store.open()
    try:
        request = fingerprint("POST", "/api/v1/jobs", b"{}")
        assert (await store.claim("admin", "k", request)).fresh
        await store.complete("admin", "k", StoredReply(201, {"location": "/x"}, b"{}"))
        clock.advance(23 * 3600)
        kept = await store.claim("admin", "k", request)
        assert kept.stored == StoredReply(201, {"location": "/x"}, b"{}")
        assert (await store.claim("other-token", "k", request)).fresh
        clock.advance(2 * 3600)
        assert (await store.claim("admin", "k", fingerprint("POST", "/x", b"1"))).fresh
    finally:
        await store.close()


def test_the_shipped_example_config_loads_with_its_documented_defaults() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "nexus-schedweb.toml"
    config = load_config(example)
    assert config.listen == "127.0.0.1:8470"
    assert config.api.enabled is False and config.api.max_body_bytes == 1_048_576
    assert config.allow_plain_http is False and not config.api.tokens
