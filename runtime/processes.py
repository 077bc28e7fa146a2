"""The programs a service runs: tools run to their end (``run_tool``), and daemons it starts and
finds again by their pid file (qemu-storage-daemon, dnsmasq), which outlive the process that
started them, so a restarted one finds them, or stops them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path


class ToolFailed(RuntimeError):
    """A program exited with an error (the command and its own words say why)."""


async def run_tool(*argv: str, stdin: str | None = None, error: type[ToolFailed] = ToolFailed) -> str:
    """Run a program to its end; what it printed.

    :raises ToolFailed: (or ``error``) it exited non-zero: the command and its stderr.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    if process.returncode != 0:
        said = err.decode(errors="replace").strip() or f"exit status {process.returncode}"
        raise error(f"{' '.join(argv)}: {said}")
    return out.decode()


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
