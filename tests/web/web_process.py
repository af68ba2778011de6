"""A real ``nexus-schedweb`` subprocess on a free loopback port."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from tests.daemon.daemon_process import console_script


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WebProcess:
    """Start ``nexus-schedweb`` with a config file, wait until it serves, stop it."""

    def __init__(
        self,
        workdir: Path,
        daemon_socket: str,
        config_text: str = "",
        *,
        tls_ca: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.tls_ca = tls_ca
        """With TLS: the certificate to trust (the URL is then https://)."""
        self.url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.config_path = workdir / f"web-{self.port}.toml"
        self.config_path.write_text(config_text)
        self.log_path = workdir / f"web-{self.port}.log"
        self.daemon_socket = daemon_socket
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait (bounded) until /metrics answers."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    console_script("nexus-schedweb"),
                    "--socket",
                    self.daemon_socket,
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--config",
                    str(self.config_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nexus-schedweb exited early:\n{self.log()}")
            try:
                reply = httpx.get(f"{self.url}/metrics", timeout=2, verify=self.verify())
                if reply.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"nexus-schedweb did not serve within {timeout} s:\n{self.log()}")

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx should verify the server with."""
        return ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else True

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
