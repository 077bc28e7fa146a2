"""Resize benchmark on the real stack (`aiostack up`, test-driver node): how long a resize takes.

For each of ``--servers`` servers (m1.tiny, ACTIVE), one after another, through the SDK: a resize
to m1.small until VERIFY_RESIZE (the ``instance.verify_resize`` event), its revert until ACTIVE,
a resize to m1.small again, and its confirm (answered once the server is ACTIVE again). Prints
p50 and p99 of each (the default 10 servers make 20 resizes); the goal is a resize to
VERIFY_RESIZE in ≤ 2 s (p50). Ends with one RESULT line.

    python bench/resize.py [--servers 10]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from aiostack.client import Client
from deploy.launch import aiostack_up

PASSWORD = "bench-secret"
GOAL_S = 2.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def print_percentiles(times: dict[str, list[float]]) -> None:
    """p50 and p99 of each kind of time, a line each."""
    for name, values in times.items():
        print(
            f"{name}: p50 {percentile(values, 0.5):.3f} s, p99 {percentile(values, 0.99):.3f} s"
            f" ({len(values)} times)"
        )


async def timed(work: Awaitable[object], into: list[float]) -> None:
    began = time.perf_counter()
    await work
    into.append(time.perf_counter() - began)


@asynccontextmanager
async def demo_client(data_dir: str) -> AsyncIterator[Client]:
    """`aiostack up` in ``data_dir`` (logging errors only), and the SDK logged in as its demo user."""
    env = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD, "AIOSTACK_DEMO_PASSWORD": PASSWORD}
    async with (
        aiostack_up(data_dir, "--log-level", "ERROR", env=env) as cloud,
        Client(cloud.gateway_url) as client,
    ):
        await client.login("demo", PASSWORD, "demo")
        yield client


async def measure(servers: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"resize": [], "revert": [], "confirm": []}
    with tempfile.TemporaryDirectory() as data_dir:
        async with demo_client(data_dir) as client:
            for number in range(servers):
                server = await client.servers.create(
                    f"resize-{number}", image="aiostack-tiny", flavor="m1.tiny"
                )
                await timed(client.servers.resize(server, "m1.small"), times["resize"])
                await timed(client.servers.revert_resize(server), times["revert"])
                await timed(client.servers.resize(server, "m1.small"), times["resize"])
                await timed(client.servers.confirm_resize(server), times["confirm"])
                shown = await client.servers.get(server)
                assert shown.status == "ACTIVE" and shown.flavor_id == "2", shown
                await client.servers.delete(server)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=10, help="servers, each resized twice")
    args = parser.parse_args()
    times = await measure(args.servers)
    print_percentiles(times)
    resize_s = percentile(times["resize"], 0.5)
    print(
        f"RESULT resize_s={resize_s:.3f} confirm_s={percentile(times['confirm'], 0.5):.3f}"
        f" revert_s={percentile(times['revert'], 0.5):.3f} goal_met={'yes' if resize_s <= GOAL_S else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
