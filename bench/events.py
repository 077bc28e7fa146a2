"""Event delivery benchmark on the real stack (`aiostack up`: real nats-server, one process per actor).

Prints: latency from the libvirt lifecycle callback on the node (the ``libvirt_ts`` the node
stamps on each ``domain.lifecycle`` event when libvirt's callback runs) to each websocket
client's receipt, p50/p99 over every (event, subscriber) pair, with 1, 100 and 1,000 concurrent
subscribers while servers boot one after another on the test driver (their DEFINED and STARTED
events); the gateway's resident memory with 1,000 connected subscribers; events/s one gateway
process delivers. Subscribers live in worker processes of 250 sockets each, read in an epoll
loop on plain sockets that only stamp and split the frames as they arrive (the JSON is parsed
after the run), so the figures are the gateway's, not the cost of a Python websocket client
parsing 1,000 copies of each frame on the same two cores. A socket the gateway cuts off for
falling behind (``slow_consumer``) connects again from its resume point, as a client should, and
is counted. Goal: p99 <= 10 ms at 100 and at
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
    pings answered. As cheap per frame as a Python client gets, so the latency is the gateway's.
    Cut off for falling behind (``slow_consumer``), it connects again from its resume point, as a
    client should; ``resumed`` counts those."""

    def __init__(self, url: URL, token: str, kinds: str) -> None:
        self.url, self.token, self.kinds = url, token, kinds
        self.texts: list[tuple[float, bytes]] = []
        self.events = 0
        self.resumed = 0
        self.resume_seq: int | None = None
        self.sock, self.buffer = self._connect(None)

    def _connect(self, since: int | None) -> tuple[socket.socket, bytes]:
        """A new event socket (from ``since`` on), and the bytes read past its handshake."""
        url = self.url
        sock = socket.create_connection((url.host, url.port))
        key = base64.b64encode(os.urandom(16)).decode()
        resume = f"&since={since}" if since is not None else ""
        sock.sendall(
            f"GET /ws?kinds={self.kinds}{resume} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-Auth-Token: {self.token}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        head, rest = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"no websocket: {head.decode(errors='replace')}")
        sock.setblocking(False)
        return sock, rest

    def read(self) -> bool:
        """Take what arrived; False once the gateway closed the socket."""
        data = self.sock.recv(1 << 20)
        arrived = time.time()
        if not data:
            return False
        self.buffer += data
        while len(self.buffer) >= 2:
            opcode, length, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                (length,), start = struct.unpack_from("!H", self.buffer, 2), 4
            elif length == 127:
                (length,), start = struct.unpack_from("!Q", self.buffer, 2), 10
            if len(self.buffer) < start + length:
                return True
            payload, self.buffer = self.buffer[start : start + length], self.buffer[start + length :]
            if opcode == 0x1:
                self.texts.append((arrived, payload))
                self.events += payload.startswith(b'{"type": "event"')
                if payload.startswith(b'{"type": "slow_consumer"'):
                    self.resume_seq = json.loads(payload)["resume_seq"]
            elif opcode == 0x8:
                return False
            elif opcode == 0x9:  # ping: pong, masked with a zero key as a client must mask
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload), 0, 0, 0, 0]) + payload)
        return True

    def resume(self) -> None:
        """Connect again from where the gateway cut this socket off.

        :raises RuntimeError: it was closed without a resume point.
        """
        if self.resume_seq is None:
            raise RuntimeError("the gateway closed an event socket")
        self.sock.close()
        self.sock, self.buffer = self._connect(self.resume_seq)
        self.resume_seq = None
        self.resumed += 1

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
            if not key.data.read():
                selector.unregister(key.fileobj)
                key.data.resume()
                selector.register(key.data.sock, selectors.EVENT_READ, key.data)
            if expect and all(subscriber.events >= expect for subscriber in subscribers):
                done_at = time.time()
    latencies = [latency for subscriber in subscribers for latency in subscriber.latencies()]
    counts = [subscriber.events for subscriber in subscribers]
    resumed = sum(subscriber.resumed for subscriber in subscribers)
    print(
        json.dumps(
            {"latencies": latencies, "counts": counts, "done_at": max(done_at, 0.0), "resumed": resumed}
        ),
        flush=True,
    )
    os._exit(0)


class Workers:
    """Subscriber worker processes holding ``total`` websockets between them."""

    def __init__(self, url: str, token: str, total: int, kinds: str, expect: int = 0) -> None:
        self.url, self.token, self.total, self.kinds, self.expect = url, token, total, kinds, expect
        self.processes: list[asyncio.subprocess.Process] = []
        self.resumed = 0

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
        """Every latency and per-socket count, and when the last worker got all it expected
        (``resumed``: how often the gateway cut a socket off and it resumed)."""
        latencies: list[float] = []
        counts: list[int] = []
        done_at = 0.0
        self.resumed = 0
        for process in self.processes:
            if not self.expect:
                process.stdin.close()
            output = await process.stdout.read()
            await process.wait()
            result = json.loads(output.decode().strip().splitlines()[-1])
            latencies += result["latencies"]
            counts += result["counts"]
            done_at = max(done_at, result["done_at"])
            self.resumed += result["resumed"]
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
                results[f"resumed_{subscribers}"] = workers.resumed
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
                results["resumed_flood"] = workers.resumed
            results["delivered"] = sum(counts)
            results["events_per_s"] = sum(counts) / (done_at - began)
            assert sum(counts) == args.flood * 10, f"{sum(counts)} of {args.flood * 10} delivered"

    for subscribers in SUBSCRIBERS:
        print(
            f"libvirt callback -> websocket client, {subscribers} subscriber(s):"
            f" p50 {results[f'p50_ms_{subscribers}']:.2f} ms, p99 {results[f'p99_ms_{subscribers}']:.2f} ms"
            f" over {results[f'pairs_{subscribers}']:.0f} (event, subscriber) pairs;"
            f" sockets cut off for falling behind (then resumed): {results[f'resumed_{subscribers}']:.0f}"
        )
    print(
        f"one gateway delivered {results['delivered']:.0f} events to 10 sockets: "
        f"{results['events_per_s']:.0f} events/s (sockets cut off for falling behind, then resumed:"
        f" {results['resumed_flood']:.0f})"
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
