"""Live migration of a real guest between two compute hosts of the harness, each a network
namespace with a libvirtd of its own (``deploy.cluster.start_host_libvirtd``), through the whole
cloud: three controllers, PostgreSQL, the nodes joined with `aiostack join`, a client on a third
host running ``deploy.migration_probe``.

The guest prints a counter on its console once a second. With a volume attached its live
migration is refused (400, the guest running on); without, it
moves to the other host and back, each time running on: the counter goes on where it was, no
second boot, the same addresses, libvirt's measured downtime under a second; the audit is clean.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from deploy.cluster import cloud_on_hosts
from deploy.testguest import TestGuest


@pytest.mark.full_size
@pytest.mark.timeout(900)
async def test_a_real_guest_live_migrates_between_harness_hosts_and_back_running_on(
    test_guest: TestGuest,
) -> None:
    async with cloud_on_hosts(computes=2, clients=1, guests=2) as cloud:
        client = cloud.hosts.hosts[cloud.clients[0]]
        env = {**os.environ, "ADMIN_PASSWORD": cloud.admin_password}
        output = await client.run(
            sys.executable, "-m", "deploy.migration_probe", cloud.url, test_guest.to_json(),
            json.dumps(cloud.libvirt_uris), "--rounds", "2", "--volume-first", timeout=900, env=env,
        )  # fmt: skip
        report = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
        assert (report["with_volume"], report["after_refusal"]) == (400, "ACTIVE"), report
        for moved in report["rounds"]:
            assert (moved["host"], moved["status"], moved["record"]) == (moved["dest"], "ACTIVE", "completed")
            assert moved["first_after"] >= moved["last_before"] - 1, moved  # counting on, not from 1
            assert not moved["booted_again"], moved
            assert moved["addresses"][0] == moved["addresses"][1], moved
            assert 0 < moved["downtime_ms"] < 1000, moved
        assert report["rounds"][0]["dest"] == report["rounds"][1]["source"]
        await cloud.audit()
