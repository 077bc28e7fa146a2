"""Bus overhead against raw nats-py request/reply, on a real nats-server.

The responder runs in its own process (as an actor would), the caller in this one; the bus
side is a typed API (``bus.api``): a typed client, and arguments checked at dispatch.
Prints sequential p50/p99 latency and calls/s, and calls/s with 64 in flight, for raw
nats-py and for the bus, and ends with one RESULT line.

    python bench/bus.py [--sequential 3000] [--concurrent 30000] [--rounds 3]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time

import msgpack
import nats

from bus import Actor, Bus, EmbeddedNatsServer
from bus.api import ServiceAPI, call

BODY = {
    "instance_uuid": "6f1c3b2a-9d4e-4c1b-8f0a-2b7e5d9c1a33",
    "flavor": "m1.small",
    "host": "node-1",
    "ram_mb": 2048,
    "vcpus": 1,
}
RAW_SUBJECT = "bench.raw.echo"
IN_FLIGHT = 64


class Bench(ServiceAPI, address="bench"):
    """A typed API like the services': its arguments are checked at dispatch, as theirs are."""

    @call
    async def echo(
        self, *, instance_uuid: str, flavor: str, host: str, ram_mb: int, vcpus: int
    ) -> dict[str, object]: ...


class EchoActor(Actor, Bench):
    name = "bench"
    max_inflight = IN_FLIGHT

    async def echo(
        self, *, instance_uuid: str, flavor: str, host: str, ram_mb: int, vcpus: int
    ) -> dict[str, object]:
        return {
            "instance_uuid": instance_uuid, "flavor": flavor, "host": host, "ram_mb": ram_mb, "vcpus": vcpus,
        }  # fmt: skip


async def serve(kind: str, url: str) -> None:
    """The responder process: raw nats-py echo, or the bus actor."""
    if kind == "raw":
        nc = await nats.connect(url)

        async def respond(msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(RAW_SUBJECT, queue="bench", cb=respond)
        await nc.flush()
    else:
        bus = await Bus.connect(url)
        await EchoActor(bus).start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def start_responder(kind: str, url: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--url", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{kind} responder did not start")
    return process


async def measure(request, sequential: int, concurrent: int) -> dict[str, float]:
    for _ in range(200):
        await request()
    latencies = []
    began = time.perf_counter()
    for _ in range(sequential):
        t0 = time.perf_counter()
        await request()
        latencies.append(time.perf_counter() - t0)
    seq_elapsed = time.perf_counter() - began
    latencies.sort()
    remaining = concurrent

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await request()

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    conc_elapsed = time.perf_counter() - began
    return {
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "seq_cps": sequential / seq_elapsed,
        "conc_cps": concurrent / conc_elapsed,
    }


async def run_raw(url: str, sequential: int, concurrent: int) -> dict[str, float]:
    responder = start_responder("raw", url)
    nc = await nats.connect(url)
    payload = msgpack.packb(BODY)
    try:

        async def raw_request() -> None:
            msg = await nc.request(RAW_SUBJECT, payload, timeout=5)
            msgpack.unpackb(msg.data)

        return await measure(raw_request, sequential, concurrent)
    finally:
        await nc.close()
        responder.communicate("")


async def run_bus(url: str, sequential: int, concurrent: int) -> dict[str, float]:
    responder = start_responder("bus", url)
    bus = await Bus.connect(url)
    bench = Bench.client(bus, timeout=5)
    try:

        async def echo() -> None:
            await bench.echo(**BODY)

        return await measure(echo, sequential, concurrent)
    finally:
        await bus.close()
        responder.communicate("")


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median of each figure over the rounds."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=["raw", "bus"])
    parser.add_argument("--url")
    parser.add_argument("--sequential", type=int, default=3000)
    parser.add_argument("--concurrent", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve, args.url)
        return
    with tempfile.TemporaryDirectory() as data_dir:
        async with EmbeddedNatsServer(data_dir) as server:
            raw_runs, bus_runs = [], []
            for _ in range(args.rounds):
                raw_runs.append(await run_raw(server.url, args.sequential, args.concurrent))
                bus_runs.append(await run_bus(server.url, args.sequential, args.concurrent))
    raw, bus = best(raw_runs), best(bus_runs)
    for label, figures in (("raw nats-py", raw), ("aiostack bus", bus)):
        print(
            f"{label:13s} sequential p50 {figures['p50_us']:7.1f} us  p99 {figures['p99_us']:7.1f} us"
            f"  {figures['seq_cps']:8.0f} calls/s   {IN_FLIGHT} in flight {figures['conc_cps']:8.0f} calls/s"
        )
    p50_overhead = bus["p50_us"] / raw["p50_us"] - 1
    throughput_kept = bus["conc_cps"] / raw["conc_cps"]
    goal_met = p50_overhead <= 0.20 and throughput_kept >= 0.80
    print(
        "RESULT "
        f"raw_p50_us={raw['p50_us']:.1f} raw_p99_us={raw['p99_us']:.1f} "
        f"raw_seq_calls_per_s={raw['seq_cps']:.0f} raw_calls_per_s_64={raw['conc_cps']:.0f} "
        f"bus_p50_us={bus['p50_us']:.1f} bus_p99_us={bus['p99_us']:.1f} "
        f"bus_seq_calls_per_s={bus['seq_cps']:.0f} bus_calls_per_s_64={bus['conc_cps']:.0f} "
        f"p50_overhead_pct={p50_overhead * 100:.1f} throughput_kept_pct={throughput_kept * 100:.1f} "
        f"goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
