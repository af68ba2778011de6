"""The dashboard's settings: the ``[web]`` table of its TOML file, then the command line."""

from __future__ import annotations

import ipaddress
import os
import ssl
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from nexus_schedd.errors import ConfigError, InvalidSpec
from nexus_schedd.model.times import resolve_zone
from nexus_schedd.web.api.config import ApiConfig, parse_api_table

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
        "tls_cert",
        "tls_key",
        "allow_plain_http",
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
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_plain_http: bool = False
    api: ApiConfig = field(default_factory=ApiConfig)

    @property
    def tls(self) -> bool:
        """True when HTTPS is served (both ``tls_cert`` and ``tls_key`` set)."""
        return bool(self.tls_cert and self.tls_key)

    def __post_init__(self) -> None:
        host, _ = parse_listen(self.listen)
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "tls_key" if self.tls_cert else "tls_cert"
            raise ConfigError("web", missing, "tls_cert and tls_key go together")
        if (
            self.api.enabled
            and not self.tls
            and not self.allow_plain_http
            and not is_loopback(host)
        ):
            raise ConfigError(
                "web",
                "listen",
                f"the API is enabled and {host} is beyond loopback: bearer tokens would cross"
                " the network in clear; set tls_cert and tls_key, or allow_plain_http = true"
                " behind a TLS proxy",
            )
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


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    unknown_tables = set(document) - {"web", "api"}
    if unknown_tables:
        raise ConfigError(
            file, sorted(unknown_tables)[0], "unknown table (only [web] and [api] are read)"
        )
    table = document.get("web", {})
    if not isinstance(table, dict):
        raise ConfigError(file, "web", "must be a table")
    base = Path(path).parent
    api = parse_api_table(file, base, document.get("api", {}))
    return _from_table(file, base, table, api)


def _from_table(file: str, base: Path, table: dict[str, Any], api: ApiConfig) -> WebConfig:
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
    allow_plain = table.get("allow_plain_http", False)
    if not isinstance(allow_plain, bool):
        raise ConfigError(file, "web.allow_plain_http", "must be true or false")
    tls_cert = text("tls_cert", None) or None
    tls_key = text("tls_key", None) or None
    if tls_cert and tls_key:
        tls_cert = str(base / os.path.expandvars(tls_cert))
        tls_key = str(base / os.path.expandvars(tls_key))
        _check_tls(file, tls_cert, tls_key)
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
            tls_cert=tls_cert,
            tls_key=tls_key,
            allow_plain_http=allow_plain,
            api=api,
        )
    except ConfigError as exc:
        raise ConfigError(file, f"web.{exc.key}", exc.reason) from None


def _check_tls(file: str, cert: str, key: str) -> None:
    """Load the pair once, so that a wrong path or a mismatched key is a config error."""
    for name, path in (("tls_cert", cert), ("tls_key", key)):
        if not os.access(path, os.R_OK):
            raise ConfigError(file, f"web.{name}", f"{path} cannot be read")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            file, "web.tls_key", f"{cert} and {key} are not a usable certificate and key: {exc}"
        ) from None


def _read_token(file: str, path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(file, "web.token_file", f"{path}: {exc.strerror}") from None
    if not token:
        raise ConfigError(file, "web.token_file", f"{path} is empty")
    return token
