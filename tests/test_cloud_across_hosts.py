"""A cloud spread over the multi-host harness, built by joining: `aiostack up --cluster` on
controller-1 (with the database host's PostgreSQL), controllers 2 and 3 and two compute hosts
each `aiostack join`ed with a token from `aiostack cluster add`: the controllers' nats-servers
form a TLS cluster (the event stream on all three), controllers 2 and 3 run replicas of
identity, conductor, scheduler, image, net, cluster and the gateway, the compute hosts their nodes;
a client runs on a third host.

The client boots through controller-1's gateway; every process of controller-2 (its `aiostack
join`, nats-server and replicas) is SIGKILLed; once a request is answered the client boots
through controller-3's gateway (the replicas there share the database); `aiostack join` starts
again on controller-2 (from its data directory) and the client boots through its gateway: every
boot ends ACTIVE on a compute host, deletes leave nothing, and `aiostack audit` is clean.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from deploy.cluster import cloud_on_hosts

CLIENT = """
import asyncio, json, sys
import aiohttp

import os
url, command = sys.argv[1:3]
password = os.environ["ADMIN_PASSWORD"]
auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": password}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}

async def boot(session, headers, count, name):
    async with session.get(url + "/image/v2/images?name=aiostack-tiny", headers=headers) as response:
        image = (await response.json())["images"][0]["id"]
    statuses, ids = [], []
    for number in range(int(count)):
        body = {"server": {"name": f"{name}-{number}", "imageRef": image, "flavorRef": "1"}}
        async with session.post(url + "/compute/v2.1/servers", json=body, headers=headers) as response:
            statuses.append(response.status)
            if response.status == 202:
                ids.append((await response.json())["server"]["id"])
    hosts = {}
    async with asyncio.timeout(120):
        while len(hosts) < len(ids):
            async with session.get(url + "/compute/v2.1/servers/detail", headers=headers) as response:
                servers = (await response.json())["servers"]
            for server in servers:
                if server["id"] in ids and server["status"] == "ACTIVE":
                    hosts[server["id"]] = server["OS-EXT-SRV-ATTR:host"]
                assert server["status"] != "ERROR", server
            await asyncio.sleep(0.2)
    return {"statuses": statuses, "hosts": hosts}

async def delete_all(session, headers):
    async with session.get(url + "/compute/v2.1/servers", headers=headers) as response:
        ids = [server["id"] for server in (await response.json())["servers"]]
    for server_id in ids:
        async with session.delete(f"{url}/compute/v2.1/servers/{server_id}", headers=headers) as response:
            assert response.status == 204, await response.text()
    async with asyncio.timeout(120):
        while True:
            async with session.get(url + "/compute/v2.1/servers", headers=headers) as response:
                if not (await response.json())["servers"]:
                    return {"deleted": len(ids)}
            await asyncio.sleep(0.2)

async def settle(session, headers):
    failures = 0
    async with asyncio.timeout(60):
        while True:
            async with session.get(url + "/compute/v2.1/servers", headers=headers) as response:
                if response.status == 200:
                    return {"failures": failures}
            failures += 1

async def main():
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/identity/v3/auth/tokens", json=auth) as response:
            assert response.status == 201, await response.text()
            headers = {"X-Auth-Token": response.headers["X-Subject-Token"]}
        if command == "boot":
            report = await boot(session, headers, *sys.argv[3:5])
        elif command == "settle":
            report = await settle(session, headers)
        else:
            report = await delete_all(session, headers)
        print(json.dumps(report))

asyncio.run(main())
"""


def last_json(output: str) -> Any:
    """The last JSON line a probe printed (asyncio's warnings about closed TLS sockets aside)."""
    return json.loads([line for line in output.splitlines() if line.startswith(("{", "["))][-1])


async def test_a_cloud_on_the_cluster_boots_on_compute_hosts_and_outlives_a_controller() -> None:
    async with cloud_on_hosts(computes=2, clients=1) as cloud:
        hosts, controller = cloud.hosts, cloud.controller
        nats, admin = ",".join(hosts.nats_urls), str(cloud.admin)

        async def event_stream() -> dict[str, Any]:
            output = await controller.run(
                sys.executable, "-m", "deploy.cluster", "wait-for-stream", "--nats", nats,
                "--credentials", admin, timeout=90,
            )  # fmt: skip
            return dict(last_json(output))

        stream = await event_stream()
        held = sorted([stream["leader"], *stream["replicas"]])
        assert held == ["controller-1", "controller-2", "controller-3"], stream  # the events are R3
        client = hosts.hosts[cloud.clients[0]]
        env = {**os.environ, "ADMIN_PASSWORD": cloud.admin_password}  # never in a command line

        async def boots(url: str, count: int, name: str) -> dict[str, str]:
            output = await client.run(
                sys.executable, "-c", CLIENT, url, "boot", str(count), name, timeout=180, env=env,
            )  # fmt: skip
            report = last_json(output)
            assert report["statuses"] == [202] * count, report
            return dict(report["hosts"])

        first, second, third = cloud.gateways
        placed = await boots(first, 10, "before")
        await hosts.hosts["controller-2"].kill()
        # a call in flight as the server dies may be lost, and events wait for the stream's new
        # leader (a 504 after the call timeout, for a create that still happens): retrying such
        # calls is not built yet; once the stream has a leader and a request is answered, every
        # later one is
        assert (await event_stream())["leader"] != "controller-2"
        output = await client.run(sys.executable, "-c", CLIENT, first, "settle", timeout=120, env=env)
        assert last_json(output)["failures"] <= 1
        placed |= await boots(third, 10, "after")
        await hosts.hosts["controller-2"].revive()
        await controller.run(sys.executable, "-m", "deploy.cluster", "wait-for-gateways", second, timeout=90)
        placed |= await boots(second, 5, "back")
        assert len(placed) == 25 and set(placed.values()) <= set(cloud.computes), placed
        output = await client.run(sys.executable, "-c", CLIENT, second, "delete", timeout=180, env=env)
        assert last_json(output) == {"deleted": 25}
        assert "clean" in await cloud.audit()
