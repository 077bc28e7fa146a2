"""The failure sequence of the cluster's test and bench: boots run from a client host
(``deploy.boot_load``) while the controllers fail one after another, each brought back:

1. controller-3's link is cut for ``PARTITION_S`` seconds (its replicas and nats-server run on,
   unreachable, and come back by themselves when the link does);
2. every process of controller-2 is SIGKILLed (its `aiostack join`, nats-server and replicas), then
   `aiostack join` is started again ``DOWN_S`` seconds later (it rejoins from its data directory);
3. controller-1's nats-server is SIGKILLed; `aiostack up` starts it again two seconds later;
4. every process of compute-2 is SIGKILLed (its `aiostack join` and node: the host loses power),
   then `aiostack join` is started again ``DOWN_S`` seconds later: the node defines and starts its
   recorded domains again, and builds it dropped are rescheduled.

Each failure starts once the client has had another quarter (the last: eighth) of its boots answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from deploy.cluster import HarnessCloud

PARTITION_S = 8.0
DOWN_S = 4.0
NATS_DOWN_S = 2.0


async def boots_through_failures(
    cloud: HarnessCloud, boots: int, lanes: int, timeout: float = 900.0, *, partition: bool = True
) -> tuple[dict[str, float], dict[str, Any]]:
    """Run the sequence during ``boots`` boots in ``lanes`` lanes (without ``partition``: not the
    cut link); when each failure began and ended, and the client's report (``deploy.boot_load``)."""
    client = cloud.hosts.hosts[cloud.clients[0]]
    progress = cloud.hosts.root / "progress"
    argv = [sys.executable, "-m", "deploy.boot_load", cloud.url, "--boots", str(boots)]
    argv += ["--lanes", str(lanes), "--progress", str(progress)]  # the password: in the environment
    environment = {**os.environ, "ADMIN_PASSWORD": cloud.admin_password}
    load = asyncio.ensure_future(client.run(*argv, timeout=timeout, env=environment))
    controllers, times = cloud.hosts.hosts, {}

    async def answered(count: int) -> None:
        while _count(progress) < count and not load.done():
            await asyncio.sleep(0.1)

    if partition:
        await answered(boots // 4)
        times["partition"] = time.time()
        controllers["controller-3"].cut()
        await asyncio.sleep(PARTITION_S)
        controllers["controller-3"].mend()
        times["mended"] = time.time()
    await answered(boots // 2)
    times["controller_killed"] = time.time()
    await controllers["controller-2"].kill()
    await asyncio.sleep(DOWN_S)
    await controllers["controller-2"].revive()
    times["revived"] = time.time()
    await answered(3 * boots // 4)
    times["nats_killed"] = time.time()
    cloud.kill_nats_server("controller-1")
    await asyncio.sleep(NATS_DOWN_S)
    times["nats_revived"] = time.time()
    await answered(7 * boots // 8)
    times["compute_killed"] = time.time()
    await controllers["compute-2"].kill()
    await asyncio.sleep(DOWN_S)
    await controllers["compute-2"].revive()
    times["compute_revived"] = time.time()
    report: dict[str, Any] = json.loads((await load).strip().splitlines()[-1])
    return times, report


def _count(progress: Path) -> int:
    try:
        return int(progress.read_text())
    except (OSError, ValueError):
        return 0
