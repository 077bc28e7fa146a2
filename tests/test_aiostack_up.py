"""`aiostack up` as an operator runs it: a real process, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import psutil

from bus import Bus


async def test_up_starts_the_bus_and_stops_cleanly_on_ctrl_c(tmp_path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiostack.cli",
        "up",
        "--data-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    banner = ""
    async with asyncio.timeout(60):
        while "Ctrl-C" not in banner:
            line = (await process.stdout.readline()).decode()
            assert line, f"aiostack up exited early: {banner}"
            banner += line
    url = re.search(r"NATS at (nats://127\.0\.0\.1:\d+)", banner).group(1)
    nats_pid = int(re.search(r"nats-server pid (\d+)", banner).group(1))
    async with await Bus.connect(url) as bus:
        await bus.flush()
        assert bus.nc.is_connected
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        assert await process.wait() == 0
    assert not psutil.pid_exists(nats_pid) or psutil.Process(nats_pid).status() == psutil.STATUS_ZOMBIE
