"""A cloud on the harness (3 controllers with replicas, PostgreSQL, 2 compute hosts) keeps booting
while its controllers fail, one failure after another, each brought back
(``deploy.failures``): every process of controller-2 is SIGKILLed (its nats-server and
replicas), then started again; controller-1's nats-server is SIGKILLed, then started again.

A client on another host boots in lanes through controller-1's gateway, with no retry of its
own (``deploy.boot_load``). Every request succeeds, no ``instance.active`` event is lost, every
instance is ACTIVE, then deleted; ``aiostack audit`` is clean (no domain without its record on
its host: no double build; no claim of no live instance), the event stream is current on all
three servers again, and every controller's gateway answers. The CI-sized run boots 90.

Not here: the sequence's cut link (controller-3 partitioned for 8 s). It still fails one to
three requests (a 503 or 504 just after the link comes back) in about a third of the runs, so it
runs in ``bench/cluster.py`` (300 boots, goal_met=no when it does) until that is mended
(issue 14).
"""

from __future__ import annotations

import json
import sys

import pytest

from deploy.cluster import cloud_on_hosts
from deploy.failures import boots_through_failures

BOOTS = 90
LANES = 8


@pytest.mark.timeout(600)
async def test_boots_succeed_through_a_controllers_loss_and_a_nats_servers_loss() -> None:
    async with cloud_on_hosts(computes=2, clients=1) as cloud:
        times, report = await boots_through_failures(cloud, BOOTS, LANES, timeout=500, partition=False)
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
