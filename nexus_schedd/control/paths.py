"""Where the control socket lives (SPEC section 1), in one place for the daemon,
the client library and the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SOCKET_ENV = "NEXUS_SCHEDD_SOCKET"
SYSTEM_SOCKET = Path("/run/nexus-schedd/control.sock")


def default_socket_path(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """``$NEXUS_SCHEDD_SOCKET``, else the system socket for root, else the user socket
    under ``$XDG_RUNTIME_DIR`` (``/run/user/UID`` when that is unset)."""
    env = os.environ if environ is None else environ
    override = env.get(SOCKET_ENV)
    if override:
        return Path(override)
    user = os.geteuid() if uid is None else uid
    if user == 0:
        return SYSTEM_SOCKET
    runtime = env.get("XDG_RUNTIME_DIR") or ""
    if not runtime or not Path(runtime).is_absolute():
        # The XDG spec says relative values are invalid and must be ignored.
        runtime = f"/run/user/{user}"
    return Path(runtime) / "nexus-schedd" / "control.sock"


def resolve_socket_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit`` (``--socket``) when given, else :func:`default_socket_path`."""
    return Path(explicit) if explicit else default_socket_path()
