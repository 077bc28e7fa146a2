"""Migration benchmark on the real stack (`aiostack up --nodes 2`, test-driver nodes): how long a
resize, a cold migration and a live migration take.

For each of ``--servers`` servers (m1.tiny, ACTIVE), one after another, through the SDK as the
admin: a resize to m1.small until VERIFY_RESIZE, confirmed; a cold migration until VERIFY_RESIZE
(on the other node), confirmed; a live migration back until ACTIVE on the other node (the
``instance.active`` event). Prints p50 and p99 of each; the goals are a resize and a cold
migration in ≤ 2 s each (p50). The goal of the issue for a real guest's live migration
(downtime ≤ 1 s, TCG, 512 MB) is not measured: aiostack does not migrate real QEMU guests between
hosts (harness hosts use ``qemu:///embed``, which cannot migrate), so the RESULT line says so and
``goal_met`` is ``no``. Ends with one RESULT line.

    python bench/migrate.py [--servers 10]
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

from aiostack.client import Client
from bench.resize import GOAL_S, PASSWORD, percentile, print_percentiles, timed
from deploy.launch import aiostack_up


async def measure(servers: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"resize": [], "cold_migration": [], "live_migration": []}
    with tempfile.TemporaryDirectory() as data_dir:
        env = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD, "AIOSTACK_DEMO_PASSWORD": PASSWORD}
        async with (
            aiostack_up(data_dir, "--nodes", "2", "--log-level", "ERROR", env=env) as cloud,
            Client(cloud.gateway_url) as client,
        ):
            await client.login("admin", PASSWORD, "admin")
            for number in range(servers):
                server = await client.servers.create(
                    f"migrate-{number}", image="aiostack-tiny", flavor="m1.tiny"
                )
                await timed(client.servers.resize(server, "m1.small"), times["resize"])
                await client.servers.confirm_resize(server)
                source = (await client.servers.get(server)).host
                await timed(client.servers.migrate(server), times["cold_migration"])
                await client.servers.confirm_resize(server)
                migrated = (await client.servers.get(server)).host
                assert migrated not in (None, source), (source, migrated)
                await timed(client.servers.live_migrate(server), times["live_migration"])
                shown = await client.servers.get(server)
                assert shown.status == "ACTIVE" and shown.host not in (None, migrated), shown
                await client.servers.delete(server)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=10, help="servers, each resized and migrated twice")
    args = parser.parse_args()
    times = await measure(args.servers)
    print_percentiles(times)
    resize_s, cold_s = percentile(times["resize"], 0.5), percentile(times["cold_migration"], 0.5)
    print("real QEMU guests are not migrated between hosts: their live-migration time and downtime")
    print("are not measured, so the goal (downtime <= 1 s) is not met")
    print(
        f"RESULT resize_s={resize_s:.3f} cold_migration_s={cold_s:.3f}"
        f" live_migration_test_driver_s={percentile(times['live_migration'], 0.5):.3f}"
        f" resize_and_cold_goal_met={'yes' if max(resize_s, cold_s) <= GOAL_S else 'no'}"
        " real_guest_live_migration_s=not_measured real_guest_downtime_s=not_measured"
        " goal_met=no"
    )


if __name__ == "__main__":
    asyncio.run(main())
