"""Cluster benchmark (issue 14): the cloud on one machine and across the multi-host harness.

Runs, each with real processes:

* **one machine**: `aiostack up --nodes 3` (embedded nats-server, sqlite);
* **the harness** (`deploy.cluster.cloud_on_hosts`), built by joining: PostgreSQL on a database
  host, `up --cluster` on controller-1, controllers 2 and 3 joined (their nats-servers routed to
  it, TLS; replicas of identity, conductor, scheduler, image, net, volume, cluster and the gateway), 3 compute
  hosts joined with a node each; a client host;

and measures from a client (on the client host for the harness): boot p50 (POST to the
``instance.active`` event, ``--sequential`` boots one after another) and boots/s
(``--boots``, 64 in flight). Then, on the harness, the **loss of a controller**: 16 lanes boot
(each waits for its instance's ``instance.active`` before the next) for ``--duration`` seconds
through controller-1's gateway, and every process of controller-2 (its nats-server and its
replicas) is SIGKILLed ``--kill-after`` seconds in. Reported: requests that failed, events lost
(instances ACTIVE by the API whose ``instance.active`` never reached the client's websocket
within 60 s), instances not ACTIVE in the end, and the recovery: seconds from the kill until
the end of the last request that failed or took over a second. Goals: recovery ≤ 3 s, 0 events
lost, 0 requests failed (and every instance ACTIVE, the audit clean).

controller-1 is not the one killed: the client reaches the cloud through its gateway.

Then ``--failure-boots`` (300) boots from the client host through ``deploy.failures``' sequence
(controller-3 cut off, controller-2 killed and started again, controller-1's nats-server killed
and started again, compute-2 killed and started again), whose requests failed, events lost and
instances not ACTIVE count too.

    python bench/cluster.py [--sequential 20] [--boots 300] [--duration 10] [--kill-after 3]
                            [--failure-boots 300]
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
import time
from pathlib import Path
from typing import Any

from bench.boot import PASSWORD, Cloud, boot_many
from deploy.cluster import cloud_on_hosts
from deploy.failures import boots_through_failures
from deploy.launch import aiostack_up

LANES = 16
SLOW = 1.0
"""A request slower than this (seconds) counts as not yet recovered."""


async def measure(url: str, password: str, args: argparse.Namespace, loss: Path | None) -> dict[str, Any]:
    """The client's side: boot latency, boots/s and (with ``loss``) the loss of a controller, which
    the harness's side kills ``--kill-after`` seconds after this writes the time into ``loss``."""
    cloud = Cloud(url)
    await cloud.start("instance", password=password)
    try:
        latencies = []
        for number in range(args.sequential):
            server_id, sent, _ = await cloud.boot(f"seq-{number}")
            arrived, _ = await cloud.wait(server_id, "instance.active")
            latencies.append(arrived - sent)
        elapsed = await boot_many(cloud, args.boots, "many")
        report: dict[str, Any] = {
            "p50_ms": statistics.median(latencies) * 1000,
            "boots_per_s": args.boots / elapsed,
        }
        if loss is not None:
            report |= await controller_loss(cloud, args, loss)
        return report
    finally:
        await cloud.close()


async def controller_loss(cloud: Cloud, args: argparse.Namespace, loss: Path) -> dict[str, Any]:
    outcomes: list[tuple[float, float, bool]] = []
    accepted: list[str] = []
    began = time.time()
    loss.write_text(f"{began}\n")

    async def lane(number: int) -> None:
        count = 0
        while time.time() - began < args.duration:
            sent = time.time()
            try:
                server_id, _, done = await cloud.boot(f"loss-{number}-{count}")
                outcomes.append((sent, done, True))
                accepted.append(server_id)
                await became_active(cloud, server_id, 30)  # or not: counted below
            except Exception:
                outcomes.append((sent, time.time(), False))
                await asyncio.sleep(0.05)
            count += 1

    await asyncio.gather(*(lane(number) for number in range(LANES)))
    killed_at = float((loss.parent / "killed").read_text())
    lost, stuck = 0, 0
    deadline = time.time() + 60
    for server_id in accepted:
        if not await became_active(cloud, server_id, deadline - time.time()):
            async with cloud.session.get(
                f"{cloud.url}/compute/v2.1/servers/{server_id}", headers=cloud.headers
            ) as response:
                status = (await response.json())["server"]["status"]
            lost += status == "ACTIVE"
            stuck += status != "ACTIVE"
    troubled = [done for sent, done, ok in outcomes if done >= killed_at and (not ok or done - sent > SLOW)]
    return {
        "requests": len(outcomes),
        "failed": sum(not ok for _, _, ok in outcomes),
        "events_lost": lost,
        "not_active": stuck,
        "recovery_s": max(troubled) - killed_at if troubled else 0.0,
    }


async def became_active(cloud: Cloud, server_id: str, timeout: float) -> bool:
    """Whether the instance's ``instance.active`` event reaches the client within ``timeout`` s."""
    end = time.time() + timeout
    while (server_id, "instance.active") not in cloud.seen:
        if time.time() >= end:
            return False
        await asyncio.sleep(0.05)
    return True


async def one_machine(args: argparse.Namespace) -> dict[str, Any]:
    env = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD, "AIOSTACK_DEMO_PASSWORD": PASSWORD}
    with tempfile.TemporaryDirectory() as data_dir:
        async with aiostack_up(data_dir, "--nodes", "3", "--log-level", "WARNING", env=env) as cloud:
            return await measure(cloud.gateway_url, PASSWORD, args, None)


async def harness(args: argparse.Namespace) -> dict[str, Any]:
    async with cloud_on_hosts(computes=3, clients=1, node_vcpus=256) as cloud:
        client = cloud.hosts.hosts[cloud.clients[0]]
        loss = cloud.hosts.root / "loss" / "began"
        loss.parent.mkdir()
        measuring = asyncio.ensure_future(
            client.run(
                sys.executable,
                os.path.abspath(__file__),
                "--client",
                cloud.url,
                "--loss",
                str(loss),
                "--sequential",
                str(args.sequential),
                "--boots",
                str(args.boots),
                "--duration",
                str(args.duration),
                "--kill-after",
                str(args.kill_after),
                timeout=900,
                env={**os.environ, "AIOSTACK_BENCH_PASSWORD": cloud.admin_password},
            )
        )
        while not loss.exists() and not measuring.done():
            await asyncio.sleep(0.05)
        if loss.exists():
            await asyncio.sleep(args.kill_after)
            (loss.parent / "killed").write_text(f"{time.time()}\n")
            await cloud.hosts.hosts["controller-2"].kill()
        output = await measuring
        report: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
        await cloud.hosts.hosts["controller-2"].revive()
        report["audit_clean"] = "clean" in await cloud.audit()
        if args.failure_boots:
            _, report["failures"] = await boots_through_failures(cloud, args.failure_boots, LANES)
            report["audit_clean"] = report["audit_clean"] and "clean" in await cloud.audit()
        return report


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--boots", type=int, default=300)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--kill-after", type=float, default=3.0)
    parser.add_argument(
        "--failure-boots", type=int, default=300, help="boots during the failure sequence (0: none)"
    )
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--loss", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        password = os.environ["AIOSTACK_BENCH_PASSWORD"]
        print(json.dumps(await measure(args.client, password, args, args.loss)))
        return
    alone = await one_machine(args)
    spread = await harness(args)
    print(
        f"one machine (aiostack up --nodes 3): boot p50 {alone['p50_ms']:.1f} ms, "
        f"{alone['boots_per_s']:.0f} boots/s"
    )
    print(
        f"harness (3 controllers, TLS NATS cluster, PostgreSQL, 3 compute hosts): boot p50 "
        f"{spread['p50_ms']:.1f} ms, {spread['boots_per_s']:.0f} boots/s"
    )
    print(
        f"controller-2 killed (nats-server and replicas) during {spread['requests']} boots: "
        f"{spread['failed']} failed, {spread['events_lost']} events lost, {spread['not_active']} not ACTIVE,"
        f" recovered in {spread['recovery_s']:.2f} s;"
        f" audit {'clean' if spread['audit_clean'] else 'NOT clean'}"
    )
    failures = spread.get("failures") or {"requests": 0, "failed": 0, "events_lost": 0, "not_active": 0}
    failures.setdefault("slowest_s", 0.0)
    if args.failure_boots:
        print(
            f"failure sequence (controller-3 cut off 8 s, controller-2 killed and started again,"
            f" controller-1's nats-server killed and started again, compute-2 killed and started again)"
            f" during {failures['requests']} boots:"
            f" {failures['failed']} failed, {failures['events_lost']} events lost,"
            f" {failures['not_active']} not ACTIVE, slowest request {failures['slowest_s']:.2f} s"
        )
    met = (
        spread["recovery_s"] <= 3.0
        and spread["events_lost"] + failures["events_lost"] == 0
        and spread["failed"] + failures["failed"] == 0
        and spread["not_active"] + failures["not_active"] == 0
        and spread["audit_clean"]
    )
    print(
        f"RESULT boots_per_s_cluster={spread['boots_per_s']:.0f} p50_ms_cluster={spread['p50_ms']:.1f} "
        f"boots_per_s_one_machine={alone['boots_per_s']:.0f} p50_ms_one_machine={alone['p50_ms']:.1f} "
        f"controller_loss_recovery_s={spread['recovery_s']:.2f} events_lost={spread['events_lost']} "
        f"requests_failed={spread['failed']} not_active={spread['not_active']} "
        f"failure_sequence_boots={failures['requests']} failure_sequence_failed={failures['failed']} "
        f"failure_sequence_events_lost={failures['events_lost']} "
        f"failure_sequence_not_active={failures['not_active']} "
        f"audit_clean={'yes' if spread['audit_clean'] else 'no'} goal_met={'yes' if met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
