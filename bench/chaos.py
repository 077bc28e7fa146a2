"""Chaos benchmark: SIGKILL each process of a real `aiostack up` in turn during 300 boots.

`aiostack up --nodes 4` (test-driver hosts, default timeouts: task 60 s, ack 5 s); for each
victim in turn -- the conductor, the scheduler, one node process, the net actor, nats-server
(restarted by `aiostack up` after 2 s) -- boot 300 servers with 32 requests in flight, kill
the victim once 48 are accepted, then print: seconds from the kill until every instance is
ACTIVE or ERROR with a fault and `aiostack audit` is clean, instances rescheduled, instances
in ERROR (and why), the audit result, and what deleting everything left behind. Goal: each
consistent again within 30 s of its kill, 0 stuck, 0 leaked. Ends with one RESULT line.

    python bench/chaos.py [--boots 300] [--in-flight 32]
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
from pathlib import Path

from aiostack.client import Client
from bus import Bus
from deploy.chaos import VICTIMS, run_round
from deploy.launch import aiostack_up

PASSWORD = "bench-secret"
GOAL_SECONDS = 30.0


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--boots", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-chaos-") as directory:
        data_dir = Path(directory)
        async with (
            aiostack_up(data_dir, "--nodes", "4", env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD}) as cloud,
            Client(cloud.gateway_url) as client,
            await Bus.connect(cloud.nats_url, name="bench-chaos", credentials=cloud.admin_credentials) as bus,
        ):
            await client.login("admin", PASSWORD, "admin")
            for victim in VICTIMS:
                result = await run_round(
                    client, bus, data_dir, victim, boots=args.boots, in_flight=args.in_flight, deadline=120.0
                )
                results.append(result)
                took = (
                    "never"
                    if result.seconds_to_consistent is None
                    else f"{result.seconds_to_consistent:.1f} s"
                )
                print(
                    f"{victim:<12} consistent after {took:>8}; {result.boots} boots accepted,"
                    f" {result.active} ACTIVE, {result.errors} ERROR, {result.stuck} stuck,"
                    f" {result.rescheduled} rescheduled; audit"
                    f" {'clean' if not result.audit_problems else f'{len(result.audit_problems)} problems'};"
                    f" left after deleting all: {result.leaked}",
                    flush=True,
                )
                for reason, count in result.error_reasons.items():
                    print(f"{'':<12} ERROR x{count}: {reason}")
    worst = max((r.seconds_to_consistent or float("inf")) for r in results)
    stuck = sum(r.stuck for r in results)
    leaked = sum(sum(r.leaked.values()) for r in results)
    errors = sum(r.errors for r in results)
    rescheduled = sum(r.rescheduled for r in results)
    audit_clean = all(not r.audit_problems for r in results)
    per_victim = " ".join(
        f"{r.victim.replace('-', '_')}_s="
        + ("never" if r.seconds_to_consistent is None else f"{r.seconds_to_consistent:.1f}")
        for r in results
    )
    goal_met = worst <= GOAL_SECONDS and stuck == 0 and leaked == 0 and audit_clean
    print(
        f"RESULT {per_victim} worst_s={worst:.1f} stuck={stuck} leaked={leaked} errors={errors}"
        f" rescheduled={rescheduled} audit_clean={'yes' if audit_clean else 'no'}"
        f" goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
