"""Migration benchmark on the real stack: how long a resize, a cold migration and a live
migration take, and a real guest's live-migration time and downtime.

Test-driver nodes (`aiostack up --nodes 2`): for each of ``--servers`` servers (m1.tiny, ACTIVE),
one after another, through the SDK as the admin: a resize to m1.small until VERIFY_RESIZE,
confirmed; a cold migration until VERIFY_RESIZE (on the other node), confirmed; a live migration
back until ACTIVE on the other node (the ``instance.active`` event). Prints p50 and p99 of each;
the goals are a resize and a cold migration in ≤ 2 s each (p50).

Real guests (root only; ``--real-rounds``, 0 to skip): the multi-host harness
(``deploy.cluster.cloud_on_hosts``, two hosts of real guests, each with a libvirtd of its own),
where a client host runs ``deploy.migration_probe``: the test guest (TCG, flavor 1: 512 MB)
live-migrated back and forth. ``real_guest_live_migration_s`` is the p50 of the time from the
request until its task ended on the other host; ``real_guest_downtime_s`` the p50 of libvirt's
own measure of the downtime (the completed job's ``downtime`` on the destination); its goal is
≤ 1 s. The machine may be shared: the figures are noisy. Ends with one RESULT line.

    python bench/migrate.py [--servers 10] [--real-rounds 4]
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

from aiostack.client import Client
from bench.resize import GOAL_S, PASSWORD, percentile, print_percentiles, timed
from deploy.cluster import cloud_on_hosts
from deploy.launch import aiostack_up
from deploy.testguest import build_test_guest, default_cache_dir

DOWNTIME_GOAL_S = 1.0


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


async def measure_real(rounds: int) -> list[dict[str, object]]:
    """The probe's rounds: a real guest live-migrated back and forth between two harness hosts."""
    guest = build_test_guest(default_cache_dir())
    async with cloud_on_hosts(computes=2, clients=1, guests=2) as cloud:
        client = cloud.hosts.hosts[cloud.clients[0]]
        output = await client.run(
            sys.executable, "-m", "deploy.migration_probe", cloud.url, guest.to_json(),
            json.dumps(cloud.libvirt_uris), "--rounds", str(rounds), timeout=1800,
            env={**os.environ, "ADMIN_PASSWORD": cloud.admin_password},
        )  # fmt: skip
    report = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    for moved in report["rounds"]:
        if (moved["host"], moved["record"]) != (moved["dest"], "completed") or moved["booted_again"]:
            raise SystemExit(f"a real guest's live migration did not keep it running: {moved}")
    return list(report["rounds"])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=10, help="servers, each resized and migrated twice")
    parser.add_argument(
        "--real-rounds", type=int, default=4, help="live migrations of a real guest (0: none)"
    )
    args = parser.parse_args()
    times = await measure(args.servers)
    print_percentiles(times)
    resize_s, cold_s = percentile(times["resize"], 0.5), percentile(times["cold_migration"], 0.5)
    real = await measure_real(args.real_rounds) if args.real_rounds else []
    for moved in real:
        print(
            f"real guest {moved['source']} -> {moved['dest']}: {moved['seconds']:.2f} s,"
            f" downtime {moved['downtime_ms']} ms, counter {moved['last_before']} -> {moved['first_after']}"
        )
    if real:
        real_s = statistics.median(float(str(moved["seconds"])) for moved in real)
        downtime_s = statistics.median(int(str(moved["downtime_ms"])) / 1000 for moved in real)
        real_fields = f"real_guest_live_migration_s={real_s:.3f} real_guest_downtime_s={downtime_s:.3f}"
    else:
        real_fields, downtime_s = (
            "real_guest_live_migration_s=not_measured real_guest_downtime_s=not_measured",
            99.0,
        )
    met = max(resize_s, cold_s) <= GOAL_S and downtime_s <= DOWNTIME_GOAL_S
    print(
        f"RESULT resize_s={resize_s:.3f} cold_migration_s={cold_s:.3f}"
        f" live_migration_test_driver_s={percentile(times['live_migration'], 0.5):.3f}"
        f" {real_fields} goal_met={'yes' if met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
