"""Shelve benchmark on the real stack (`aiostack up`, test-driver node): how long a shelve and an
unshelve take.

For each of ``--servers`` servers (m1.tiny, ACTIVE), one after another, through the SDK: a shelve
until SHELVED_OFFLOADED (`aiostack up` offloads at once, Nova's default: the domain powered off,
its disk uploaded as an image, the domain removed, the claim given back), then an unshelve until
ACTIVE (a host claimed, the server built from its shelved image with its port). Prints p50 and p99
of each and checks with `aiostack audit` that nothing was left behind; the goal is a shelve and
an unshelve in ≤ 2 s each (p50). Ends with one RESULT line.

    python bench/shelve.py [--servers 10]
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

from bench.resize import demo_client, percentile, timed
from tests.helpers import aiostack_audit

GOAL_S = 2.0


async def measure(servers: int) -> tuple[dict[str, list[float]], int]:
    """The times of each step, and the audit's exit status at the end."""
    times: dict[str, list[float]] = {"shelve": [], "unshelve": []}
    with tempfile.TemporaryDirectory() as data_dir:
        async with demo_client(data_dir) as client:
            for number in range(servers):
                server = await client.servers.create(
                    f"shelve-{number}", image="aiostack-tiny", flavor="m1.tiny"
                )
                await timed(client.servers.shelve(server), times["shelve"])
                assert (await client.servers.get(server)).status == "SHELVED_OFFLOADED"
                await timed(client.servers.unshelve(server), times["unshelve"])
                assert (await client.servers.get(server)).status == "ACTIVE"
                await client.servers.delete(server)
            audited, output = await aiostack_audit(data_dir)
            if audited:
                print(output, file=sys.stderr)
    return times, audited


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=10, help="servers, each shelved and unshelved")
    args = parser.parse_args()
    times, audited = await measure(args.servers)
    for name, values in times.items():
        print(
            f"{name}: p50 {percentile(values, 0.5):.3f} s, p99 {percentile(values, 0.99):.3f} s"
            f" ({len(values)} times)"
        )
    shelve_s, unshelve_s = percentile(times["shelve"], 0.5), percentile(times["unshelve"], 0.5)
    clean = audited == 0
    met = shelve_s <= GOAL_S and unshelve_s <= GOAL_S and clean
    print(
        f"RESULT shelve_s={shelve_s:.3f} unshelve_s={unshelve_s:.3f} audit_clean={'yes' if clean else 'no'}"
        f" goal_met={'yes' if met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
