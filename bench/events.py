"""Event delivery benchmark on the real stack (`aiostack up`: real nats-server, one process per actor).

Prints: latency from the libvirt lifecycle callback on the node (the ``libvirt_ts`` of each
``domain.lifecycle`` event) to the websocket client, p50/p99, with 1 and with 100 concurrent
subscribers; events/s one gateway process delivers; the gateway's resident memory with 1,000
connected subscribers. Subscribers live in separate worker processes (25 sockets each), so
the figures are the gateway's, not one client process parsing 100 copies of each frame.
Ends with one RESULT line.

    python bench/events.py [--boots 100] [--flood 20000]
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

import aiohttp
import psutil

from aiostack.client import password_auth
from bus import Bus
from deploy.launch import aiostack_up

PASSWORD = "bench-secret"
SOCKETS_PER_WORKER = 25


async def login(session: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    body = password_auth("admin", PASSWORD, "admin")
    async with session.post(f"{url}/identity/v3/auth/tokens", json=body) as response:
        token = response.headers["X-Subject-Token"]
        project = (await response.json())["token"]["project"]["id"]
    return token, project


async def worker(url: str, sockets: int, kinds: str, expect: int) -> None:
    """A subscriber process: ``sockets`` websockets; prints what each saw as JSON on stdin EOF,
    or once every socket has ``expect`` events (with the time that happened)."""
    async with aiohttp.ClientSession() as session:
        token, _ = await login(session, url)
        latencies: list[float] = []
        counts = [0] * sockets
        all_done = asyncio.Event()
        done_at = 0.0

        async def read(index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            async for message in ws:
                arrived = time.time()
                frame = json.loads(message.data)
                if frame["type"] != "event":
                    continue
                counts[index] += 1
                if expect and counts[index] == expect and all(c >= expect for c in counts):
                    nonlocal done_at
                    done_at = arrived
                    all_done.set()
                event = frame["event"]
                if event["type"] == "domain.lifecycle":
                    latencies.append(arrived - event["state"]["libvirt_ts"])

        sockets_open = [
            await session.ws_connect(f"{url}/ws?kinds={kinds}", headers={"X-Auth-Token": token})
            for _ in range(sockets)
        ]
        readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets_open)]
        print("ready", flush=True)
        stdin_closed = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, sys.stdin.read))
        await asyncio.wait(
            {stdin_closed, asyncio.ensure_future(all_done.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        for reader in readers:
            reader.cancel()
        print(json.dumps({"latencies": latencies, "counts": counts, "done_at": done_at}), flush=True)
        os._exit(0)


class Workers:
    """Subscriber worker processes holding ``total`` websockets between them."""

    def __init__(self, url: str, total: int, kinds: str, expect: int = 0) -> None:
        self.url, self.total, self.kinds, self.expect = url, total, kinds, expect
        self.processes: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Workers:
        remaining = self.total
        while remaining > 0:
            count = min(SOCKETS_PER_WORKER, remaining)
            remaining -= count
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--worker",
                self.url,
                "--sockets",
                str(count),
                "--kinds",
                self.kinds,
                "--expect",
                str(self.expect),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.processes.append(process)
        for process in self.processes:
            assert (await process.stdout.readline()).strip() == b"ready"
        return self

    async def results(self) -> tuple[list[float], list[int], float]:
        """Every latency and per-socket count, and when the last worker got all it expected."""
        latencies: list[float] = []
        counts: list[int] = []
        done_at = 0.0
        for process in self.processes:
            if not self.expect:
                process.stdin.close()
            output = await process.stdout.read()
            await process.wait()
            result = json.loads(output.decode().strip().splitlines()[-1])
            latencies += result["latencies"]
            counts += result["counts"]
            done_at = max(done_at, result["done_at"])
        return latencies, counts, done_at

    async def __aexit__(self, *exc_info: object) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def boot_sequentially(url: str, count: int) -> None:
    async with aiohttp.ClientSession() as session:
        token, _ = await login(session, url)
        headers = {"X-Auth-Token": token}
        async with session.get(f"{url}/image/v2/images?name=aiostack-tiny", headers=headers) as response:
            image = (await response.json())["images"][0]["id"]
        async with session.ws_connect(f"{url}/ws?kinds=instance", headers=headers) as ws:
            for i in range(count):
                async with session.post(
                    f"{url}/compute/v2.1/servers",
                    headers=headers,
                    json={"server": {"name": f"ev-{i}", "imageRef": image, "flavorRef": "1"}},
                ) as response:
                    server_id = (await response.json())["server"]["id"]
                async for message in ws:
                    frame = json.loads(message.data)
                    if (
                        frame["type"] == "event"
                        and frame["event"]["id"] == server_id
                        and frame["event"]["type"] == "instance.active"
                    ):
                        break
                await asyncio.sleep(0.02)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--sockets", type=int, default=1)
    parser.add_argument("--kinds", default="domain")
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--boots", type=int, default=100)
    parser.add_argument("--flood", type=int, default=20000)
    args = parser.parse_args()
    if args.worker:
        await worker(args.worker, args.sockets, args.kinds, args.expect)
        return
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        async with aiostack_up(
            data_dir,
            "--log-level",
            "WARNING",
            env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD, "AIOSTACK_DEMO_PASSWORD": PASSWORD},
        ) as cloud:
            url, nats_url = cloud.gateway_url, cloud.nats_url
            gateway_pid = next(
                p.pid for p in psutil.Process(cloud.process.pid).children() if "gateway" in p.cmdline()
            )
            for subscribers in (1, 100):
                async with Workers(url, subscribers, "domain") as workers:
                    await boot_sequentially(url, args.boots)
                    await asyncio.sleep(0.5)
                    latencies, _, _ = await workers.results()
                results[f"p50_ms_{subscribers}"] = statistics.median(latencies) * 1000
                results[f"p99_ms_{subscribers}"] = percentile(latencies, 0.99) * 1000

            async with aiohttp.ClientSession() as session:
                _, project = await login(session, url)
            body = {
                "kind": "volume",
                "id": "flood",
                "project": project,
                "type": "volume.available",
                "ts": 0.0,
                "request_id": None,
                "state": {"status": "available", "size": 1},
            }
            async with (
                Workers(url, 10, "volume", expect=args.flood) as workers,
                await Bus.connect(
                    nats_url,
                    name="bench-flood",
                    credentials=cloud.admin_credentials,
                ) as bus,
            ):
                began = time.time()
                await asyncio.gather(
                    *(bus.publish_event(f"evt.volume.{project}.flood", body) for _ in range(args.flood))
                )
                _, counts, done_at = await workers.results()
            results["delivered"] = sum(counts)
            results["events_per_s"] = sum(counts) / (done_at - began)
            assert sum(counts) == args.flood * 10, f"{sum(counts)} of {args.flood * 10} delivered"

            async with Workers(url, 1000, "instance"):
                await asyncio.sleep(2)
                results["gateway_mb_1000"] = psutil.Process(gateway_pid).memory_info().rss / 2**20

    print(
        f"libvirt callback -> websocket client, 1 subscriber: p50 {results['p50_ms_1']:.2f} ms, "
        f"p99 {results['p99_ms_1']:.2f} ms"
    )
    print(
        f"libvirt callback -> websocket client, 100 subscribers: p50 {results['p50_ms_100']:.2f} ms, "
        f"p99 {results['p99_ms_100']:.2f} ms"
    )
    print(
        f"one gateway delivered {results['delivered']:.0f} events to 10 sockets: "
        f"{results['events_per_s']:.0f} events/s"
    )
    print(f"gateway resident memory with 1000 subscribers: {results['gateway_mb_1000']:.0f} MB")
    goal_met = results["p99_ms_100"] <= 10 and results["gateway_mb_1000"] <= 150
    print(
        f"RESULT p50_ms_1={results['p50_ms_1']:.2f} p99_ms_1={results['p99_ms_1']:.2f} "
        f"p50_ms_100={results['p50_ms_100']:.2f} p99_ms_100={results['p99_ms_100']:.2f} "
        f"events_per_s={results['events_per_s']:.0f} gateway_mb_1000={results['gateway_mb_1000']:.0f} "
        f"goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
