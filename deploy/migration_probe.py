"""A real guest's live migration as a client sees it, on a cloud of real-guest hosts (what
`bench/migrate.py` and `tests/test_live_migration_across_hosts.py` run on a client host of the
harness, ``deploy.cluster``).

It registers the test guest (``deploy.testguest``), boots one (flavor 1: 512 MB) whose user data
prints a counter on its serial console once a second, then live-migrates it ``--rounds`` times
between two hosts, each time until the migration ended (task state cleared), and reports as JSON:
per round the hosts, the seconds the migration took, the migration record's status, the
counter's last value before and first value after (read from the console of the host it runs
on), whether it booted again (``AIOSTACK-CONFIG-DRIVE`` on the new host's console) and its
addresses before and after; and libvirt's own measure of the guest's downtime (the completed
job's statistics on the destination, ``VIR_DOMAIN_JOB_STATS_COMPLETED``), read through the
destination's libvirtd (``uris``: host -> URI). With ``--volume-first`` a volume is attached
first, and a live migration asked for (which the cloud refuses: the status it answers), then
detached again.

    python -m deploy.migration_probe URL GUEST_JSON URIS_JSON [--rounds 1] [--volume-first]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import time
from typing import Any

import libvirt

from aiostack import ApiError
from aiostack.client import Client
from deploy.testguest import TestGuest, console_match, register_test_guest

COUNTER_SCRIPT = (
    "#!/bin/sh\n"
    '( i=0; while true; do i=$((i+1)); echo "AIOSTACK-COUNT $i" > /dev/console; sleep 1; done ) &\n'
)
COUNT = r"AIOSTACK-COUNT (\d+)"
BOOTED = "AIOSTACK-CONFIG-DRIVE"
"""What the test guest says once each boot."""
DEADLINE = 300.0


async def counts(client: Client, server_id: str) -> tuple[list[int], str]:
    output = await client.console_output(server_id)
    return [int(count) for count in re.findall(COUNT, output)], output


async def counted_past(client: Client, server_id: str, at_least: int) -> list[int]:
    """The counter's values on the console (of the host the guest runs on), once one is ``at_least``."""
    async with asyncio.timeout(DEADLINE):
        while True:
            found, _ = await counts(client, server_id)
            if found and found[-1] >= at_least:
                return found
            await asyncio.sleep(0.5)


async def settled(client: Client, server_id: str) -> dict[str, Any]:
    """The server once no task is in hand."""
    async with asyncio.timeout(DEADLINE):
        while (server := await client.server(server_id))["OS-EXT-STS:task_state"] is not None:
            await asyncio.sleep(0.2)
    return server


def downtime_ms(uri: str, server_id: str) -> int | None:
    """libvirt's measure of the last completed migration's downtime of the domain, in ms."""
    conn = libvirt.open(uri)
    try:
        stats = conn.lookupByUUIDString(server_id).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        return int(stats["downtime"]) if "downtime" in stats else None
    finally:
        conn.close()


async def migrate_once(client: Client, server_id: str, uris: dict[str, str]) -> dict[str, Any]:
    """One live migration to the other host, as seen from outside."""
    server = await client.server(server_id)
    source = server["OS-EXT-SRV-ATTR:host"]
    [dest] = sorted(set(uris) - {source})
    before = await counted_past(client, server_id, 1)
    started = time.monotonic()
    await client.servers.live_migrate(server_id, dest, wait=False)
    after_server = await settled(client, server_id)
    seconds = time.monotonic() - started
    host = after_server["OS-EXT-SRV-ATTR:host"]
    migrations = (await client.request("GET", f"/compute/v2.1/os-migrations?instance_uuid={server_id}"))[
        "migrations"
    ]
    after, output = await counts(client, server_id)
    after = after or await counted_past(client, server_id, 1)
    moved = host == dest
    actions = f"/compute/v2.1/servers/{server_id}/os-instance-actions"
    last = (await client.request("GET", actions))["instanceActions"][0]["request_id"]
    action = (await client.request("GET", f"{actions}/{last}"))["instanceAction"]
    return {
        "source": source,
        "dest": dest,
        "host": host,
        "status": after_server["status"],
        "seconds": seconds,
        "record": migrations[0]["status"],
        "last_before": before[-1],
        "first_after": after[0] if moved else None,
        "booted_again": moved and BOOTED in output,
        "addresses": [server["addresses"], after_server["addresses"]],
        "downtime_ms": await asyncio.to_thread(downtime_ms, uris[dest], server_id) if moved else None,
        "action": {"message": action.get("message"), "events": action.get("events", [])},
    }


async def probe(
    url: str, guest: TestGuest, uris: dict[str, str], rounds: int, volume_first: bool
) -> dict[str, Any]:
    report: dict[str, Any] = {"rounds": []}
    async with Client(url) as client:
        await client.login("admin", os.environ["ADMIN_PASSWORD"], "admin")
        ids = await register_test_guest(client, guest)
        body = {
            "name": "counter",
            "imageRef": ids["disk"],
            "flavorRef": "1",
            "user_data": base64.b64encode(COUNTER_SCRIPT.encode()).decode(),
        }
        server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
        await settled(client, server_id)
        await console_match(client, server_id, COUNT)
        if volume_first:
            volume = await client.volumes.create(1, "held")
            await client.servers.attach_volume(server_id, volume.id)
            try:
                await client.servers.live_migrate(server_id, wait=False)
                report["with_volume"] = 202
            except ApiError as exc:
                report["with_volume"] = exc.status
            report["after_refusal"] = (await settled(client, server_id))["status"]
            await client.servers.detach_volume(server_id, volume.id)
            await client.volumes.delete(volume.id)
        for _ in range(rounds):
            report["rounds"].append(await migrate_once(client, server_id, uris))
        await client.server_action(server_id, "delete", wait=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("guest", help="the test guest, as TestGuest.to_json")
    parser.add_argument("uris", help="JSON: host -> its libvirtd's URI (two hosts)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--volume-first", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(
        probe(
            args.url, TestGuest.from_json(args.guest), json.loads(args.uris), args.rounds, args.volume_first
        )
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
