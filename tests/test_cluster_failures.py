"""A cloud on the harness (3 controllers joined into a cluster, PostgreSQL, 2 compute hosts) keeps
booting while its controllers fail, one failure after another, each brought back
(``deploy.failures``): controller-3's link is cut for 8 s (a partition: its processes run on,
unreachable, and must not act on stale state); every process of controller-2 is SIGKILLed (its
`aiostack join`, nats-server and replicas), then `aiostack join` starts again and the host
rejoins from its data directory; controller-1's nats-server is SIGKILLed and its `aiostack up`
starts it again; every process of compute-2 is SIGKILLed (the host loses power) and its `aiostack
join` started again.

A client on another host boots in lanes through controller-1's gateway, with no retry of its
own (``deploy.boot_load``). Every request succeeds, no ``instance.active`` event is lost, every
instance is ACTIVE, then deleted; ``aiostack audit`` is clean (no domain without its record on
its host: no double build; no claim of no live instance), the event stream is current on all
three servers again, and every controller's gateway answers. The CI-sized run boots 90;
``bench/cluster.py`` runs the sequence during 300.
"""

from __future__ import annotations

import json
import sys

import pytest

from deploy.cluster import cloud_on_hosts
from deploy.failures import boots_through_failures

BOOTS = 90
LANES = 8


@pytest.mark.full_size
@pytest.mark.timeout(600)
async def test_boots_succeed_through_a_controllers_loss_and_a_nats_servers_loss() -> None:
    async with cloud_on_hosts(computes=2, clients=1) as cloud:
        times, report = await boots_through_failures(cloud, BOOTS, LANES, timeout=500, partition=True)
        print(json.dumps({"times": times, "report": report}, indent=1))  # shown when an assertion fails
        assert report["failed"] == 0, report["failures"]
        assert report["events_lost"] == 0 and report["not_active"] == 0, report
        assert report["accepted"] >= BOOTS and report["left"] == 0, report
        assert "clean" in await cloud.audit()
        nats, admin = ",".join(cloud.hosts.nats_urls), str(cloud.admin)
        await cloud.controller.run(
            sys.executable, "-m", "deploy.cluster", "wait-for-stream", "--current", "--nats", nats,
            "--credentials", admin, timeout=90,
        )  # fmt: skip
        await cloud.controller.run(
            sys.executable, "-m", "deploy.cluster", "wait-for-gateways", *cloud.gateways, timeout=60
        )
