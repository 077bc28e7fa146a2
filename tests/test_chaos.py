"""SIGKILL each process of a real `aiostack up` in turn during boots: nothing stuck, nothing leaked.

CI-sized: 120 boots a round (`bench/chaos.py` runs 300). Four test-driver nodes, 32 boots in
flight; the victims in turn: the conductor, the scheduler, one node process, the net actor, and
nats-server (which `aiostack up` restarts after 2 s).
After each: within 60 s every instance is ACTIVE or ERROR with a fault, `aiostack audit` is
clean, and deleting everything leaves no port, claim, volume attachment or domain.
"""

from __future__ import annotations

import sys

from aiostack.client import Client
from bus import Bus
from deploy.chaos import VICTIMS, run_round
from deploy.launch import aiostack_up
from tests.helpers import aiostack_audit

PASSWORD = "chaos-secret"
BOOTS = 120


async def test_killing_any_process_during_boots_leaves_nothing_stuck_or_leaked(tmp_path) -> None:
    args = ("--nodes", "4", "--task-timeout", "10")
    async with (
        aiostack_up(tmp_path, *args, env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD}) as cloud,
        Client(cloud.gateway_url) as client,
        await Bus.connect(cloud.nats_url, name="chaos-test", credentials=cloud.admin_credentials) as bus,
    ):
        await client.login("admin", PASSWORD, "admin")
        for victim in VICTIMS:
            result = await run_round(client, bus, tmp_path, victim, boots=BOOTS)
            print(result, file=sys.stderr)
            assert result.boots == BOOTS
            assert result.seconds_to_consistent is not None, result
            assert result.stuck == 0 and result.audit_problems == [], result
            assert result.leaked == {"ports": 0, "claims": 0, "volume_attachments": 0, "domains": 0}, result
            assert result.active + result.errors >= BOOTS  # a create whose answer was lost, asked again
        assert (await aiostack_audit(tmp_path))[0] == 0
        ghost = "00000000-0000-4000-8000-0000000000aa"
        await bus.call(
            "scheduler.select_destinations",
            {"instance_uuid": ghost, "vcpus": 1, "memory_mb": 64, "disk_gb": 0},
        )
        code, output = await aiostack_audit(tmp_path)
        assert code == 1 and "PROBLEM: claim on node-" in output and ghost in output, output
