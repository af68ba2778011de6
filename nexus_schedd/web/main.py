"""``nexus-schedweb``: serve the dashboard with Hypercorn until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import structlog
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from nexus_schedd.daemon.logging import configure_logging
from nexus_schedd.errors import EXIT_OK, EXIT_USAGE, ConfigError
from nexus_schedd.web.api.config import prepare_state
from nexus_schedd.web.app import Dashboard
from nexus_schedd.web.config import WebConfig, load_config, parse_listen

log = structlog.get_logger("nexus_schedd.web")

# Open Server-Sent Events streams are ended on shutdown; this bounds the rest.
GRACEFUL_TIMEOUT_S = 5.0
EXIT_CANNOT_LISTEN = 1


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``nexus-schedweb``."""
    parser = argparse.ArgumentParser(
        prog="nexus-schedweb",
        description="Web dashboard and Prometheus metrics for a nexus-schedd daemon.",
    )
    parser.add_argument("--socket", help="the daemon's control socket (default: as nexus-schedctl)")
    parser.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:8470)")
    parser.add_argument("--config", help="TOML file with a [web] table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config).with_overrides(listen=args.listen, socket=args.socket)
        if args.listen:
            parse_listen(args.listen)
        if config.api.enabled:
            problem = prepare_state(config.api)
            if problem:
                raise ConfigError(args.config or "", "api.idempotency_db", problem)
    except ConfigError as exc:
        sys.stderr.write(f"nexus-schedweb: {exc}\n")
        return EXIT_USAGE
    configure_logging(config.log_level, config.log_format)
    backend_options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401  # optional: faster, and what the daemon uses

        backend_options["use_uvloop"] = True
    except ImportError:
        pass
    return anyio.run(run, config, backend="asyncio", backend_options=backend_options)


async def run(config: WebConfig) -> int:
    """Serve until SIGTERM/SIGINT, then close live streams and drain requests.

    Returns the exit code: 0 after a clean stop, 1 when the address cannot be bound.
    """
    dashboard = Dashboard(config)
    host, port = parse_listen(config.listen)
    try:
        listener = _bind(host, port)
    except OSError as exc:
        log.error("web_listen_failed", listen=config.listen, reason=exc.strerror or str(exc))
        return EXIT_CANNOT_LISTEN
    bound = listener.getsockname()
    server_config = HypercornConfig()
    # Bound here, handed over by descriptor: a bind error is reported above, before
    # Hypercorn has started the app's lifespan.
    server_config.bind = [f"fd://{listener.detach()}"]
    server_config.graceful_timeout = GRACEFUL_TIMEOUT_S
    if config.tls:
        server_config.certfile = config.tls_cert
        server_config.keyfile = config.tls_key
    server_config.accesslog = None
    # Hypercorn's own messages go through the root handler configure_logging installed.
    server_config.errorlog = logging.getLogger("hypercorn.error")
    stop = anyio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        # Ends the /events streams, so open pages do not hold the drain.
        dashboard.close_streams()

    async with anyio.create_task_group() as tg:
        tg.start_soon(_wait_for_signal, stop)
        log.info(
            "web_starting",
            listen=f"{bound[0]}:{bound[1]}",
            socket=config.socket or "default",
            actions_enabled=config.actions_enabled,
            api_enabled=config.api.enabled,
            tls=config.tls,
        )
        try:
            await serve(dashboard.asgi(), server_config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
        finally:
            tg.cancel_scope.cancel()
    log.info("web_stopped")
    return EXIT_OK


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by accepted connections (Linux): a response's header and body
        # writes go out at once instead of waiting on the client's delayed ACK.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    return listener


async def _wait_for_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            log.info("web_stopping")
            stop.set()
            return


if __name__ == "__main__":
    raise SystemExit(main())
