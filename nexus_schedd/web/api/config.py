"""The ``[api]`` table of ``nexus-schedweb``'s config: the JSON API and its tokens."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from nexus_schedd.errors import ConfigError

Scope = Literal["read", "admin"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
IDEMPOTENCY_FILE = "api-idempotency.db"

_KEYS = frozenset({"enabled", "max_body_bytes", "state_dir", "idempotency_db", "tokens"})
_TOKEN_KEYS = frozenset({"name", "sha256", "token_file", "scope", "job_types"})
_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One ``[[api.tokens]]`` entry: who it is, the SHA-256 of its secret, what it may do.

    ``job_types`` empty means every type; otherwise only types matching one of
    the globs are visible to it (the others answer 404, as if absent).
    """

    name: str
    digest: bytes
    scope: Scope = "read"
    job_types: tuple[str, ...] = ()

    def sees(self, job_type: str) -> bool:
        """Whether jobs of ``job_type`` exist for this token."""
        return not self.job_types or any(fnmatchcase(job_type, glob) for glob in self.job_types)

    @property
    def confined(self) -> bool:
        """True when the token sees only some job types."""
        return bool(self.job_types)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """What the API runs with. Off unless ``enabled``."""

    enabled: bool = False
    tokens: tuple[ApiToken, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    idempotency_db: Path = field(default_factory=lambda: default_state_dir() / IDEMPOTENCY_FILE)


def default_state_dir() -> Path:
    """systemd's ``$STATE_DIRECTORY``, else /var/lib/nexus-schedweb for root, else the
    user's ``$XDG_STATE_HOME/nexus-schedweb``."""
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/nexus-schedweb")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nexus-schedweb"


def parse_api_table(file: str, base: Path, table: Any) -> ApiConfig:
    """``[api]`` as an :class:`ApiConfig`; a bad key raises ConfigError naming it."""
    if not isinstance(table, dict):
        raise ConfigError(file, "api", "must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(file, f"api.{sorted(unknown)[0]}", "unknown key")
    enabled = table.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(file, "api.enabled", "must be true or false")
    max_body = table.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1024:
        raise ConfigError(file, "api.max_body_bytes", "must be a whole number >= 1024")
    if "state_dir" in table and "idempotency_db" in table:
        raise ConfigError(file, "api.idempotency_db", "set state_dir or idempotency_db, not both")
    state_dir = default_state_dir()
    if "state_dir" in table:
        state_dir = base / os.path.expandvars(_text(file, "api.state_dir", table["state_dir"]))
    database = state_dir / IDEMPOTENCY_FILE
    if "idempotency_db" in table:
        raw = _text(file, "api.idempotency_db", table["idempotency_db"])
        database = base / os.path.expandvars(raw)
    raw_tokens = table.get("tokens", [])
    if not isinstance(raw_tokens, list):
        raise ConfigError(file, "api.tokens", "must be an array of tables ([[api.tokens]])")
    tokens = tuple(
        _token(file, base, f"api.tokens[{index}]", raw) for index, raw in enumerate(raw_tokens)
    )
    names = [token.name for token in tokens]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(file, f"api.tokens[{index}].name", f"{name!r} is used twice")
    digests = [token.digest for token in tokens]
    for index, digest in enumerate(digests):
        if digest in digests[:index]:
            raise ConfigError(file, f"api.tokens[{index}]", "the same secret is used twice")
    if enabled and not tokens:
        raise ConfigError(
            file, "api.tokens", "the API is enabled but no [[api.tokens]] is declared"
        )
    return ApiConfig(
        enabled=enabled,
        tokens=tokens,
        max_body_bytes=max_body,
        idempotency_db=database.absolute(),
    )


def prepare_state(config: ApiConfig) -> str | None:
    """Create the idempotency file's folder (0700) and the file (0600) if missing;
    returns why that is impossible, or None. Run at start-up, so that a state
    directory nobody can write is a config error, not a failed request."""
    path = config.idempotency_db
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            path.touch(mode=0o600)
        with path.open("ab"):
            pass
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def _token(file: str, base: Path, where: str, raw: Any) -> ApiToken:
    if not isinstance(raw, dict):
        raise ConfigError(file, where, "must be a table")
    unknown = set(raw) - _TOKEN_KEYS
    if unknown:
        raise ConfigError(file, f"{where}.{sorted(unknown)[0]}", "unknown key")
    name = _text(file, f"{where}.name", raw.get("name"))
    if not name:
        raise ConfigError(file, f"{where}.name", "is required")
    has_hash, has_file = "sha256" in raw, "token_file" in raw
    if has_hash == has_file:
        raise ConfigError(file, where, "give exactly one of sha256 or token_file")
    if has_hash:
        hexdigest = _text(file, f"{where}.sha256", raw["sha256"])
        if not _HEX_SHA256.match(hexdigest):
            raise ConfigError(file, f"{where}.sha256", "must be 64 hex digits (sha256sum)")
        digest = bytes.fromhex(hexdigest)
    else:
        path = base / os.path.expandvars(_text(file, f"{where}.token_file", raw["token_file"]))
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(file, f"{where}.token_file", f"{path}: {exc.strerror}") from None
        if len(secret) < 16:
            raise ConfigError(file, f"{where}.token_file", f"{path} holds fewer than 16 characters")
        digest = hashlib.sha256(secret.encode()).digest()
    scope = raw.get("scope", "read")
    if scope not in ("read", "admin"):
        raise ConfigError(file, f"{where}.scope", "must be read or admin")
    globs = raw.get("job_types", [])
    if not isinstance(globs, list) or not all(isinstance(g, str) and g for g in globs):
        raise ConfigError(file, f"{where}.job_types", "must be a list of non-empty globs")
    return ApiToken(name=name, digest=digest, scope=scope, job_types=tuple(globs))


def _text(file: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(file, key, "must be a string")
    return value
