"""Daemons a service starts and finds again by their pid file (qemu-storage-daemon, dnsmasq):
they outlive the process that started them, so a restarted one finds them, or stops them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

STOP_GRACE = 2.0
"""Seconds a daemon gets between SIGTERM and SIGKILL."""


def running_pid(pidfile: Path, *marks: bytes) -> int | None:
    """The pid in ``pidfile`` if that process runs and its command line holds every one of
    ``marks`` (a pid reused by another program is not it); else None."""
    try:
        pid = int(pidfile.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if all(mark in command for mark in marks) and not exited(pid) else None


async def stop_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL if it is still there ``STOP_GRACE`` seconds later."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(int(STOP_GRACE / 0.02)):
        if exited(pid):
            return
        await asyncio.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def exited(pid: int) -> bool:
    """Whether the process is gone, or a zombie (a daemon's parent, init, has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"
