"""Event delivery benchmark on the real stack (`aiostack up`: real nats-server, one process per actor).

Prints: latency from the libvirt lifecycle callback on the node (the ``libvirt_ts`` the node
stamps on each ``domain.lifecycle`` event when libvirt's callback runs) to each websocket
client's receipt, p50/p99 over every (event, subscriber) pair, with 1, 100 and 1,000 concurrent
subscribers while servers boot one after another on the test driver (their DEFINED and STARTED
events); the gateway's resident memory with 1,000 connected subscribers; events/s one gateway
process delivers. Subscribers live in worker processes of 250 sockets each, read in an epoll
loop on plain sockets that only stamp and split the frames as they arrive (the JSON is parsed
after the run), so the figures are the gateway's, not the cost of a Python websocket client
parsing 1,000 copies of each frame on the same two cores. Goal: p99 <= 10 ms at 100 and at
1,000 subscribers, gateway <= 150 MB with 1,000. Ends with one RESULT line.

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
import base64
import json
import selectors
import socket
import statistics
import struct
import tempfile
import time

import aiohttp
import psutil
from yarl import URL

from aiostack.client import password_auth
from bus import Bus
from deploy.launch import aiostack_up

PASSWORD = "bench-secret"
SOCKETS_PER_WORKER = 250
SUBSCRIBERS = (1, 100, 1000)
FLOOD_BATCH = 1000
TOKEN_VARIABLE = "AIOSTACK_BENCH_TOKEN"
"""How a worker gets the token the main process logged in with (one login, not one per worker)."""


async def login(session: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    body = password_auth("admin", PASSWORD, "admin")
    async with session.post(f"{url}/identity/v3/auth/tokens", json=body) as response:
        token = response.headers["X-Subject-Token"]
        project = (await response.json())["token"]["project"]["id"]
    return token, project


class RawSubscriber:
    """One event websocket on a plain socket: the handshake, then frames split as bytes arrive,
    each text frame kept with the time its last byte was read (parsed only once the run is over),
    pings answered. As cheap per frame as a Python client gets, so the latency is the gateway's."""

    def __init__(self, url: URL, token: str, kinds: str) -> None:
        self.sock = socket.create_connection((url.host, url.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws?kinds={kinds} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Auth-Token: {token}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"no websocket: {head.decode(errors='replace')}")
        self.sock.setblocking(False)
        self.texts: list[tuple[float, bytes]] = []
        self.events = 0

    def read(self) -> None:
        data = self.sock.recv(1 << 20)
        arrived = time.time()
        if not data:
            raise RuntimeError("the gateway closed an event socket")
        self.buffer += data
        while len(self.buffer) >= 2:
            opcode, length, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                (length,), start = struct.unpack_from("!H", self.buffer, 2), 4
            elif length == 127:
                (length,), start = struct.unpack_from("!Q", self.buffer, 2), 10
            if len(self.buffer) < start + length:
                return
            payload, self.buffer = self.buffer[start : start + length], self.buffer[start + length :]
            if opcode == 0x1:
                self.texts.append((arrived, payload))
                self.events += payload.startswith(b'{"type": "event"')
            elif opcode == 0x9:  # ping: pong, masked with a zero key as a client must mask
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload), 0, 0, 0, 0]) + payload)

    def latencies(self) -> list[float]:
        """From the libvirt callback to this socket, for each ``domain.lifecycle`` event."""
        found = []
        for arrived, payload in self.texts:
            frame = json.loads(payload)
            if frame["type"] == "event" and frame["event"]["type"] == "domain.lifecycle":
                found.append(arrived - frame["event"]["state"]["libvirt_ts"])
        return found


def worker(url: str, token: str, sockets: int, kinds: str, expect: int) -> None:
    """A subscriber process: ``sockets`` websockets; prints what each saw as JSON on stdin EOF,
    or once every socket has ``expect`` events (with the time that happened)."""
    subscribers = [RawSubscriber(URL(url), token, kinds) for _ in range(sockets)]
    selector = selectors.DefaultSelector()
    for subscriber in subscribers:
        selector.register(subscriber.sock, selectors.EVENT_READ, subscriber)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    print("ready", flush=True)
    done_at = 0.0
    while not done_at:
        for key, _ in selector.select():
            if key.data is None:
                if not sys.stdin.read():
                    done_at = -1.0
                continue
            key.data.read()
            if expect and all(subscriber.events >= expect for subscriber in subscribers):
                done_at = time.time()
    latencies = [latency for subscriber in subscribers for latency in subscriber.latencies()]
    counts = [subscriber.events for subscriber in subscribers]
    print(json.dumps({"latencies": latencies, "counts": counts, "done_at": max(done_at, 0.0)}), flush=True)
    os._exit(0)


class Workers:
    """Subscriber worker processes holding ``total`` websockets between them."""

    def __init__(self, url: str, token: str, total: int, kinds: str, expect: int = 0) -> None:
        self.url, self.token, self.total, self.kinds, self.expect = url, token, total, kinds, expect
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
                env={**os.environ, TOKEN_VARIABLE: self.token},
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
        worker(args.worker, os.environ[TOKEN_VARIABLE], args.sockets, args.kinds, args.expect)
        return
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        async with aiostack_up(
            data_dir,
            "--log-level",
            "WARNING",
            env={
                "AIOSTACK_ADMIN_PASSWORD": PASSWORD,
                "AIOSTACK_DEMO_PASSWORD": PASSWORD,
                # one user (admin) holds every subscriber's socket, and the booting client's
                "AIOSTACK_GATEWAY_SOCKETS_PER_USER": str(max(SUBSCRIBERS) + 1),
            },
        ) as cloud:
            url, nats_url = cloud.gateway_url, cloud.nats_url
            gateway_pid = next(
                p.pid for p in psutil.Process(cloud.process.pid).children() if "gateway" in p.cmdline()
            )
            async with aiohttp.ClientSession() as session:
                token, project = await login(session, url)
            for subscribers in SUBSCRIBERS:
                async with Workers(url, token, subscribers, "domain") as workers:
                    if subscribers == 1000:
                        await asyncio.sleep(2)
                        results["gateway_mb_1000"] = psutil.Process(gateway_pid).memory_info().rss / 2**20
                    await boot_sequentially(url, args.boots)
                    await asyncio.sleep(0.5)
                    latencies, _, _ = await workers.results()
                results[f"p50_ms_{subscribers}"] = statistics.median(latencies) * 1000
                results[f"p99_ms_{subscribers}"] = percentile(latencies, 0.99) * 1000
                results[f"pairs_{subscribers}"] = len(latencies)

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
                Workers(url, token, 10, "volume", expect=args.flood) as workers,
                await Bus.connect(
                    nats_url,
                    name="bench-flood",
                    credentials=cloud.admin_credentials,
                ) as bus,
            ):
                began = time.time()
                for first in range(0, args.flood, FLOOD_BATCH):  # the client's outbound buffer is bounded
                    batch = range(first, min(first + FLOOD_BATCH, args.flood))
                    await asyncio.gather(
                        *(bus.publish_event(f"evt.volume.{project}.flood", body) for _ in batch)
                    )
                _, counts, done_at = await workers.results()
            results["delivered"] = sum(counts)
            results["events_per_s"] = sum(counts) / (done_at - began)
            assert sum(counts) == args.flood * 10, f"{sum(counts)} of {args.flood * 10} delivered"

    for subscribers in SUBSCRIBERS:
        print(
            f"libvirt callback -> websocket client, {subscribers} subscriber(s):"
            f" p50 {results[f'p50_ms_{subscribers}']:.2f} ms, p99 {results[f'p99_ms_{subscribers}']:.2f} ms"
            f" over {results[f'pairs_{subscribers}']:.0f} (event, subscriber) pairs"
        )
    print(
        f"one gateway delivered {results['delivered']:.0f} events to 10 sockets: "
        f"{results['events_per_s']:.0f} events/s"
    )
    print(f"gateway resident memory with 1000 subscribers: {results['gateway_mb_1000']:.0f} MB")
    goal_met = (
        results["p99_ms_100"] <= 10 and results["p99_ms_1000"] <= 10 and results["gateway_mb_1000"] <= 150
    )
    print(
        f"RESULT p50_ms_1={results['p50_ms_1']:.2f} p99_ms_1={results['p99_ms_1']:.2f} "
        f"p50_ms_100={results['p50_ms_100']:.2f} p99_ms_100={results['p99_ms_100']:.2f} "
        f"p50_ms_1000={results['p50_ms_1000']:.2f} p99_ms_1000={results['p99_ms_1000']:.2f} "
        f"events_per_s={results['events_per_s']:.0f} gateway_mb_1000={results['gateway_mb_1000']:.0f} "
        f"goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
