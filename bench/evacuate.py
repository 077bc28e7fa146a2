"""Evacuate benchmark on the test driver: how long an evacuate takes, host down to ACTIVE elsewhere.

Every actor runs in this process (as the test suite runs them: a real nats-server, two nodes on
libvirt's test driver, the gateway on a loopback HTTP server). ``--servers`` servers (m1.tiny) are
booted (the scheduler spreads them over both nodes), then node-1's node is stopped; once the
scheduler calls it down each server it had is evacuated, one after another, through the SDK
(``servers.evacuate``, answered once the server is ACTIVE on node-2: the ``instance.active``
event). Prints p50 and p99; the goal is an evacuate in ≤ 2 s (p50). Ends with one RESULT line.

    python bench/evacuate.py [--servers 20]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from aiostack.client import Client
from api.scheduler import SchedulerReader
from bus import Actor, Bus, EmbeddedNatsServer
from gateway.app import create_app
from node.actor import NodeActor
from node.testnode import write_test_node_file
from runtime.auth import install
from runtime.config import Config

PASSWORD = "bench-secret"
GOAL_S = 2.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def measure(servers: int, data_dir: Path) -> list[float]:
    os.environ["AIOSTACK_ADMIN_PASSWORD"] = PASSWORD
    os.environ["AIOSTACK_DEMO_PASSWORD"] = PASSWORD
    started: list[tuple[Actor, Bus]] = []
    async with EmbeddedNatsServer(data_dir / "nats") as nats:
        config = Config(data_dir=data_dir / "data", nats_url=nats.url)

        async def start(actor_class: type[Actor], **kwargs: Any) -> Actor:
            actor_bus = await Bus.connect(config.nats_url, prefix=config.prefix, name=actor_class.__name__)
            await install(actor_bus)
            actor = actor_class(actor_bus, config, **kwargs)
            await actor.start()
            started.append((actor, actor_bus))
            return actor

        bus = await Bus.connect(config.nats_url, prefix=config.prefix, name="bench")
        gateway_bus = await Bus.connect(config.nats_url, prefix=config.prefix, name="gateway")
        server = TestServer(create_app(gateway_bus), host="127.0.0.1")
        nodes: dict[str, NodeActor] = {}
        try:
            for actor_class in (IdentityActor, ImageActor, NetActor, VolumeActor):
                await start(actor_class)
            await start(SchedulerActor, service_down_time=2.0, liveness_interval=0.2)
            await start(ConductorActor, task_timeout=30.0, ack_timeout=0.5)
            for host in ("node-1", "node-2"):
                uri = write_test_node_file(
                    config.data_dir / "nodes" / host / "testnode.xml", vcpus=64, memory_mb=65536
                )
                node = await start(NodeActor, host=host, libvirt_uri=uri, report_interval=0.5)
                assert isinstance(node, NodeActor)
                await node.report_capacity()
                nodes[host] = node
            await server.start_server()
            times: list[float] = []
            async with Client(str(server.make_url("")).rstrip("/")) as client:
                await client.login("admin", PASSWORD, "admin")
                booted = []
                for number in range(servers):
                    booted.append(
                        await client.servers.create(
                            f"evacuate-{number}", image="aiostack-tiny", flavor="m1.tiny"
                        )
                    )
                source = "node-1"
                await nodes[source].stop()
                async with asyncio.timeout(15):
                    while any(
                        h["host"] == source and h["alive"]
                        for h in await SchedulerReader.client(bus).list_hosts()
                    ):
                        await asyncio.sleep(0.1)
                for one in booted:
                    if (await client.servers.get(one)).host != source:
                        continue
                    began = time.perf_counter()
                    moved = await client.servers.evacuate(one)
                    times.append(time.perf_counter() - began)
                    assert moved.status == "ACTIVE" and moved.host == "node-2", moved
        finally:
            await server.close()
            for actor, actor_bus in reversed(started):
                if actor is not nodes.get("node-1"):
                    await actor.stop()
                await actor_bus.close()
            await gateway_bus.close()
            await bus.close()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=20, help="servers booted, those on node-1 evacuated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as data_dir:
        times = await measure(args.servers, Path(data_dir))
    evacuate_s = percentile(times, 0.5)
    print(f"evacuate: p50 {evacuate_s:.3f} s, p99 {percentile(times, 0.99):.3f} s ({len(times)} times)")
    print(f"RESULT evacuate_s={evacuate_s:.3f} goal_met={'yes' if evacuate_s <= GOAL_S else 'no'}")


if __name__ == "__main__":
    asyncio.run(main())
