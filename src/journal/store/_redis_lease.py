"""Whose is a replica id's lease: one live store per replica id.

The lease key holds an instance token, ``<host>:<boot>:<pid>:<random> <lease
ms>``, renewed every third of the lease by compare-and-set.  A store that
opens and finds another token judges its holder here: alive (renewed while
we watched, an open store of this process, no expiry), dead (this host, this
boot, a pid that is gone or is this process's closed store; or a renewal
overdue), or not known yet (watch a little longer).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

__all__ = ["BOOT", "LIVE", "LIVE_LOCK", "holder_state", "new_instance"]


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip().replace("-", "")[:12] or "-"
    except OSError:
        return "-"


BOOT = _boot_id()

# Stores of this process with a live lease, by instance token: a lease key
# holding a token of this process that is not here was closed or abandoned.
LIVE: set[str] = set()
LIVE_LOCK = threading.Lock()


def new_instance(pid: int) -> str:
    return f"{socket.gethostname()}:{BOOT}:{pid}:{uuid.uuid4().hex[:12]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is dead
    except (OSError, IndexError):
        return True


def holder_state(holder: str, pttl: int, first_seen: tuple[str, int, float], now: float,
                 own_pid: int, default_lease_ms: int) -> str:
    """'live', 'dead' or 'unknown' (keep watching) for the lease holder.

    ``first_seen`` is (holder, its PTTL, when) as first read: a PTTL that
    went up since was renewed.  A holder is judged dead once a renewal is
    overdue: more than one renewal period (a third of its lease) and a
    quarter of one more since its last renewal, so a restarted hub takes its
    id back after at most about one renewal period, not the whole lease.
    """
    token, _, lease_text = holder.rpartition(" ")
    try:
        lease_ms = int(lease_text)
    except ValueError:  # an older taskjournal's "host:pid", or foreign
        token, lease_ms = holder, default_lease_ms
    with LIVE_LOCK:
        if token in LIVE:
            return "live"  # an open store of this very process
    parts = token.split(":")
    if len(parts) == 4:
        host, boot, pid_text, _ = parts
    elif len(parts) == 2:
        (host, pid_text), boot = parts, BOOT
    else:
        host = boot = pid_text = ""
    if host == socket.gethostname() and boot == BOOT and pid_text.isdigit():
        pid = int(pid_text)
        if pid == own_pid or not _pid_alive(pid):
            return "dead"  # this process's closed or abandoned store, or a gone process
    if pttl == -1:
        return "live"  # no expiry at all: set by hand, never runs out
    _, first_pttl, first_at = first_seen
    if pttl > first_pttl - (now - first_at) * 1000 + 50:
        return "live"  # renewed while we watched
    period = lease_ms / 3
    since_renewal = lease_ms - pttl
    if since_renewal > period + max(200, period / 4):
        return "dead"  # a renewal is overdue: nobody renews it
    return "unknown"
