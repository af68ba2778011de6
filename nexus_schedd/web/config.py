"""The dashboard's settings: the ``[web]`` table of its TOML file, then the command line."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

from nexus_schedd.errors import ConfigError, InvalidSpec
from nexus_schedd.model.times import resolve_zone

DEFAULT_LISTEN = "127.0.0.1:8470"

LogFormat = Literal["auto", "json", "console"]

_KEYS = frozenset(
    {
        "listen",
        "socket",
        "actions_enabled",
        "token",
        "token_file",
        "trust_proxy_header",
        "timezone",
        "log_format",
        "log_level",
    }
)
_LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What ``nexus-schedweb`` runs with.

    ``socket`` None means the client library's default (``$NEXUS_SCHEDD_SOCKET``,
    else the system or user socket). ``timezone`` "" shows times in the server's
    local zone. Actions need ``actions_enabled`` and a way to authenticate:
    ``token`` or ``trust_proxy_header`` (the name of a header a reverse proxy sets
    to the authenticated user, e.g. ``X-Remote-User``).
    """

    listen: str = DEFAULT_LISTEN
    socket: str | None = None
    actions_enabled: bool = False
    token: str | None = None
    trust_proxy_header: str | None = None
    timezone: str = ""
    log_format: LogFormat = "auto"
    log_level: str = "info"

    def __post_init__(self) -> None:
        parse_listen(self.listen)
        if self.timezone:
            try:
                resolve_zone(self.timezone)
            except InvalidSpec as exc:
                raise ConfigError("web", "timezone", exc.reason) from None
        if self.actions_enabled and not (self.token or self.trust_proxy_header):
            raise ConfigError(
                "web",
                "actions_enabled",
                "actions need a token or trust_proxy_header; refusing to allow them to anyone",
            )

    def with_overrides(self, *, listen: str | None, socket: str | None) -> WebConfig:
        """A copy with the command line's ``--listen`` / ``--socket`` applied."""
        return replace(self, listen=listen or self.listen, socket=socket or self.socket)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a host and a port number."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError("web", "listen", f"{text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def load_config(path: str | Path | None) -> WebConfig:
    """Read ``[web]`` from ``path`` (no file: all defaults); bad keys raise ConfigError."""
    if path is None:
        return WebConfig()
    file = str(path)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(file, "", exc.strerror or "cannot be read") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    unknown_tables = set(document) - {"web"}
    if unknown_tables:
        raise ConfigError(file, sorted(unknown_tables)[0], "unknown table (only [web] is read)")
    table = document.get("web", {})
    if not isinstance(table, dict):
        raise ConfigError(file, "web", "must be a table")
    return _from_table(file, Path(path).parent, table)


def _from_table(file: str, base: Path, table: dict[str, Any]) -> WebConfig:
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(file, f"web.{sorted(unknown)[0]}", "unknown key")

    def text(key: str, default: str | None) -> str | None:
        value = table.get(key, default)
        if value is not None and not isinstance(value, str):
            raise ConfigError(file, f"web.{key}", "must be a string")
        return value

    actions = table.get("actions_enabled", False)
    if not isinstance(actions, bool):
        raise ConfigError(file, "web.actions_enabled", "must be true or false")
    token = text("token", None) or None
    token_file = text("token_file", None)
    if token and token_file:
        raise ConfigError(file, "web.token_file", "set token or token_file, not both")
    if token_file:
        # $CREDENTIALS_DIRECTORY: systemd's LoadCredential= hands the token over there.
        token = _read_token(file, base / os.path.expandvars(token_file))
    log_format = text("log_format", "auto")
    if log_format not in ("auto", "json", "console"):
        raise ConfigError(file, "web.log_format", "must be auto, json or console")
    log_level = (text("log_level", "info") or "info").lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(file, "web.log_level", f"must be one of {', '.join(sorted(_LOG_LEVELS))}")
    try:
        return WebConfig(
            listen=text("listen", DEFAULT_LISTEN) or DEFAULT_LISTEN,
            socket=text("socket", None) or None,
            actions_enabled=actions,
            token=token,
            trust_proxy_header=text("trust_proxy_header", None) or None,
            timezone=text("timezone", "") or "",
            log_format=cast(LogFormat, log_format),
            log_level=log_level,
        )
    except ConfigError as exc:
        raise ConfigError(file, f"web.{exc.key}", exc.reason) from None


def _read_token(file: str, path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(file, "web.token_file", f"{path}: {exc.strerror}") from None
    if not token:
        raise ConfigError(file, "web.token_file", f"{path} is empty")
    return token
