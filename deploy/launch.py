"""Run `aiostack up` as a child process and read what it prints: for tests, benchmarks and scripts."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RunningCloud:
    process: asyncio.subprocess.Process
    data_dir: Path
    banner: str
    nats_url: str
    gateway_url: str

    @property
    def admin_credentials(self) -> Path:
        """The bus credentials of the operator (every subject)."""
        return self.data_dir / "credentials" / "admin.json"


@asynccontextmanager
async def aiostack_up(
    data_dir: str | os.PathLike[str], *args: str, env: dict[str, str] | None = None, timeout: float = 90.0
) -> AsyncIterator[RunningCloud]:
    """``aiostack up --data-dir DATA_DIR --listen 127.0.0.1:0 ARGS``; Ctrl-C (SIGINT) on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiostack.cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--listen",
        "127.0.0.1:0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    banner = ""
    try:
        async with asyncio.timeout(timeout):
            while "Ctrl-C" not in banner:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"aiostack up exited early: {banner}")
                banner += line
        nats = re.search(r"NATS at (nats://\S+)", banner)
        gateway = re.search(r"gateway: (https?://\S+)", banner)
        assert nats is not None and gateway is not None, banner
        yield RunningCloud(process, Path(data_dir), banner, nats.group(1), gateway.group(1))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            async with asyncio.timeout(60):
                await process.wait()
