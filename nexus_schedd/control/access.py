"""Who may do what on the control socket, decided from the peer's credentials.

uid 0, the daemon's own uid and members of ``admin_group`` may do everything;
members of ``read_group`` may only read; everyone else is refused. Group
membership counts the peer's primary gid (from SO_PEERCRED) and the
supplementary groups of its user.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Access(IntEnum):
    """What a peer may do; higher includes lower."""

    NONE = 0
    READ = 1
    ADMIN = 2


READ_METHODS = frozenset(
    {
        "GetStatus",
        "GetJob",
        "ListJobs",
        "ListRuns",
        "Preview",
        "Watch",
        "ListHandlers",
        "ExportCalendar",
    }
)
"""Methods of io.nexus.Scheduler a read-only peer may call (org.varlink.service too)."""


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The process at the other end of a Unix socket."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """SO_PEERCRED of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def group_id(name: str) -> int | None:
    """The gid of a group name (or a numeric gid), None when it does not exist."""
    if not name:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def groups_of(peer: PeerCredentials) -> frozenset[int]:
    """The peer's primary gid plus the supplementary groups of its user."""
    groups = {peer.gid}
    try:
        user = pwd.getpwuid(peer.uid)
    except KeyError:
        return frozenset(groups)
    groups.add(user.pw_gid)
    groups.update(os.getgrouplist(user.pw_name, user.pw_gid))
    return frozenset(groups)


def access_for(peer: PeerCredentials, admin_group: str, read_group: str) -> Access:
    """The access level of ``peer`` under the given group names."""
    if peer.uid in (0, os.getuid()):
        return Access.ADMIN
    groups = groups_of(peer)
    admin_gid = group_id(admin_group)
    if admin_gid is not None and admin_gid in groups:
        return Access.ADMIN
    read_gid = group_id(read_group)
    if read_gid is not None and read_gid in groups:
        return Access.READ
    return Access.NONE


def allowed(access: Access, interface: str, method: str) -> bool:
    """Whether a peer with ``access`` may call ``interface.method``."""
    if access is Access.ADMIN:
        return True
    if access is Access.NONE:
        return False
    return interface == "org.varlink.service" or method in READ_METHODS
