"""Boot benchmark on the real stack: `aiostack up` (real nats-server, one process per actor).

Prints: latency from POST /servers to the ACTIVE event on the websocket (sequential,
p50/p99) and where that time goes; boots/s with 64 in flight across 8 nodes (the eight
simulated hosts in one node process, and each in its own, since here they share the control
plane's 2 cores where real compute hosts would not); resident
memory of all aiostack processes (nats-server included) idle with one node and after
1,000 instances exist. Ends with one RESULT line.

    python bench/boot.py [--sequential 100] [--throughput-boots 1000] [--instances 1000]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

import aiohttp
import psutil

from aiostack.client import password_auth
from deploy.launch import aiostack_up

PASSWORD = "bench-secret"
IN_FLIGHT = 64


def resident_mb(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


class Cloud:
    """One logged-in HTTP session and one websocket that resolves waits for instance events."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        self.headers: dict[str, str] = {}
        self.seen: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self.waiting: dict[tuple[str, str], asyncio.Future[tuple[float, dict[str, Any]]]] = {}

    async def start(self, kinds: str = "instance", password: str = PASSWORD) -> None:
        body = password_auth("admin", password, "admin")
        async with self.session.post(f"{self.url}/identity/v3/auth/tokens", json=body) as response:
            self.headers = {"X-Auth-Token": response.headers["X-Subject-Token"]}
        async with self.session.get(
            f"{self.url}/image/v2/images?name=aiostack-tiny", headers=self.headers
        ) as r:
            self.image = (await r.json())["images"][0]["id"]
        self.ws = await self.session.ws_connect(f"{self.url}/ws?kinds={kinds}", headers=self.headers)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            arrived = time.time()
            frame = json.loads(message.data)
            if frame["type"] != "event":
                continue
            event = frame["event"]
            key = (
                event["id"],
                event["type"] if event["type"] != "domain.lifecycle" else event["state"]["event"],
            )
            self.seen[key] = (arrived, event)
            future = self.waiting.pop(key, None)
            if future is not None and not future.done():
                future.set_result((arrived, event))
        closed = RuntimeError(f"the gateway closed the event websocket: {self.ws.close_code}")
        for future in self.waiting.values():
            future.set_exception(closed)

    async def wait(self, server_id: str, what: str) -> tuple[float, dict[str, Any]]:
        if (server_id, what) in self.seen:
            return self.seen[(server_id, what)]
        future = self.waiting.setdefault((server_id, what), asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(future, 120)

    async def boot(self, name: str) -> tuple[str, float, float]:
        """POST a server; return its id, when the POST was sent and when the 202 came back."""
        sent = time.time()
        async with self.session.post(
            f"{self.url}/compute/v2.1/servers",
            headers=self.headers,
            json={"server": {"name": name, "imageRef": self.image, "flavorRef": "1"}},
        ) as response:
            body = await response.json()
            if response.status != 202:
                raise RuntimeError(f"boot failed: {response.status} {body}")
        return body["server"]["id"], sent, time.time()

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        await self.session.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def boot_many(cloud: Cloud, count: int, prefix: str) -> float:
    """Boot ``count`` servers with IN_FLIGHT at a time; seconds until the last is ACTIVE."""
    remaining = count

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            server_id, _, _ = await cloud.boot(f"{prefix}-{remaining}")
            await cloud.wait(server_id, "instance.active")

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    return time.perf_counter() - began


async def one_node_phase(args: argparse.Namespace, results: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        async with aiostack_up(
            data_dir,
            "--nodes",
            "1",
            "--log-level",
            "WARNING",
            env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD, "AIOSTACK_DEMO_PASSWORD": PASSWORD},
        ) as cloud:
            url, pid = cloud.gateway_url, cloud.process.pid
            await asyncio.sleep(3)
            results["idle_mb"] = resident_mb(pid)
            cloud = Cloud(url)
            await cloud.start("instance,domain")
            latencies, hops = (
                [],
                {"api_202": [], "to_libvirt_started": [], "started_to_active": [], "active_to_client": []},
            )
            for i in range(args.sequential):
                server_id, sent, accepted = await cloud.boot(f"seq-{i}")
                arrived, active = await cloud.wait(server_id, "instance.active")
                _, started = await cloud.wait(server_id, "STARTED")
                latencies.append(arrived - sent)
                hops["api_202"].append(accepted - sent)
                hops["to_libvirt_started"].append(started["state"]["libvirt_ts"] - accepted)
                hops["started_to_active"].append(active["ts"] - started["state"]["libvirt_ts"])
                hops["active_to_client"].append(arrived - active["ts"])
            await cloud.close()
            results["p50_ms"] = statistics.median(latencies) * 1000
            results["p99_ms"] = percentile(latencies, 0.99) * 1000
            for hop, values in hops.items():
                results[f"hop_{hop}_ms"] = statistics.median(values) * 1000
            cloud = Cloud(url)
            await cloud.start()
            await boot_many(cloud, args.instances - args.sequential, "fill")
            await cloud.close()
            await asyncio.sleep(3)
            results["mb_1000"] = resident_mb(pid)


async def throughput_phase(
    args: argparse.Namespace, results: dict[str, float], layout: str, *up_args: str
) -> None:
    """Boots/s with IN_FLIGHT in flight across 8 test-driver nodes laid out as ``up_args`` say."""
    with tempfile.TemporaryDirectory() as data_dir:
        async with aiostack_up(
            data_dir,
            "--nodes",
            "8",
            "--log-level",
            "WARNING",
            *up_args,
            env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD, "AIOSTACK_DEMO_PASSWORD": PASSWORD},
        ) as up:
            cloud = Cloud(up.gateway_url)
            await cloud.start()
            await boot_many(cloud, IN_FLIGHT, "warm")
            elapsed = await boot_many(cloud, args.throughput_boots, "tput")
            results[f"boots_per_s_{layout}"] = args.throughput_boots / elapsed
            await cloud.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--throughput-boots", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=1000)
    args = parser.parse_args()
    results: dict[str, float] = {}
    await one_node_phase(args, results)
    await throughput_phase(args, results, "one_process", "--nodes-per-process", "8")
    await throughput_phase(args, results, "own_processes")
    print(
        "POST /servers -> ACTIVE event, sequential: "
        f"p50 {results['p50_ms']:.1f} ms, p99 {results['p99_ms']:.1f} ms"
    )
    print(
        "  where the time goes (medians): "
        f"API accept (202) {results['hop_api_202_ms']:.1f} ms, "
        f"202 -> libvirt STARTED (schedule, claim, node gathers image/ports, define+create) "
        f"{results['hop_to_libvirt_started_ms']:.1f} ms, "
        f"STARTED -> instance.active published {results['hop_started_to_active_ms']:.1f} ms, "
        f"published -> websocket client {results['hop_active_to_client_ms']:.1f} ms"
    )
    print(
        f"boots/s, {IN_FLIGHT} in flight across 8 test-driver nodes: "
        f"{results['boots_per_s_one_process']:.0f}"
        f" with the 8 simulated hosts in one node process (--nodes-per-process 8), "
        f"{results['boots_per_s_own_processes']:.0f} with a process each (both on these 2 shared cores)"
    )
    print(
        f"resident memory, all processes incl. nats-server: idle (1 node) {results['idle_mb']:.0f} MB, "
        f"with {args.instances} instances {results['mb_1000']:.0f} MB "
        f"(+{results['mb_1000'] - results['idle_mb']:.0f} MB)"
    )
    growth = results["mb_1000"] - results["idle_mb"]
    goal_met = (
        results["p50_ms"] <= 20
        and results["boots_per_s_one_process"] >= 200
        and results["idle_mb"] <= 400
        and growth <= 50
    )
    print(
        f"RESULT p50_ms={results['p50_ms']:.1f} p99_ms={results['p99_ms']:.1f} "
        f"boots_per_s={results['boots_per_s_one_process']:.0f} "
        f"boots_per_s_node_per_process={results['boots_per_s_own_processes']:.0f} "
        f"idle_mb={results['idle_mb']:.0f} "
        f"mb_with_{args.instances}={results['mb_1000']:.0f} growth_mb={growth:.0f} "
        f"goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
