"""SIGKILL each process of a real `aiostack up` in turn during boots: nothing stuck, nothing leaked.

CI-sized: 64 boots a round (`--full` and `bench/chaos.py` run 300). Four test-driver nodes, 32 boots in
flight; the victims in turn: the conductor, the scheduler, one node process, the net actor, and
nats-server (which `aiostack up` restarts after 2 s).
After each: within 60 s every instance is ACTIVE or ERROR with a fault, `aiostack audit` is
clean, and deleting everything leaves no port, claim, volume attachment or domain.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiostack.client import Client
from bus import Bus
from deploy.chaos import VICTIMS, run_round
from deploy.launch import aiostack_up
from tests.helpers import aiostack_audit

PASSWORD = "chaos-secret"
CI_BOOTS = 64
FULL_BOOTS = 300


@pytest.mark.timeout(600)
async def test_killing_any_process_during_boots_leaves_nothing_stuck_or_leaked(
    tmp_path: Path, full_size: bool
) -> None:
    boots = FULL_BOOTS if full_size else CI_BOOTS
    args = ("--nodes", "4", "--task-timeout", "10")
    async with (
        aiostack_up(tmp_path, *args, env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD}) as cloud,
        Client(cloud.gateway_url) as client,
        await Bus.connect(cloud.nats_url, name="chaos-test", credentials=cloud.admin_credentials) as bus,
    ):
        await client.login("admin", PASSWORD, "admin")
        for victim in VICTIMS:
            result = await run_round(client, bus, tmp_path, victim, boots=boots)
            print(result, file=sys.stderr)
            assert result.boots == boots
            assert result.seconds_to_consistent is not None, result
            assert result.stuck == 0 and result.audit_problems == [], result
            assert result.leaked == {"ports": 0, "claims": 0, "volume_attachments": 0, "domains": 0}, result
            assert result.active + result.errors >= boots  # a create whose answer was lost, asked again
        assert (await aiostack_audit(tmp_path))[0] == 0
        ghost = "00000000-0000-4000-8000-0000000000aa"
        await bus.call(
            "scheduler.select_destinations",
            {"instance_uuid": ghost, "vcpus": 1, "memory_mb": 64, "disk_gb": 0},
        )
        code, output = await aiostack_audit(tmp_path)
        assert code == 1 and "PROBLEM: claim on node-" in output and ghost in output, output
