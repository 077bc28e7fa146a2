"""The kill sequence of the crash-proofing test and bench/chaos.py, against a running `aiostack up`.

One round: boot ``boots`` servers with ``in_flight`` requests at a time; once a few dozen are
accepted, SIGKILL the victim process (an actor, a node process, or nats-server itself, which
`aiostack up` restarts); finish the boots (retrying requests the outage refused); then time
how long until the cloud is consistent again: every instance ACTIVE, or ERROR with a fault,
none in a task state, and `aiostack audit` clean. Then delete everything and check that
nothing is left: no port, claim, volume attachment or domain.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from aiostack import ApiError, Client
from api.conductor import ConductorOperator
from api.net import COMPUTE_OWNER, Net
from api.node import Node
from api.scheduler import SchedulerReader
from api.volume import VolumeAttachments
from bus import AiostackError, Bus
from deploy.audit import audit

VICTIMS = ("conductor", "scheduler", "node-2", "net", "nats-server")


@dataclass
class RoundResult:
    victim: str
    boots: int
    seconds_to_consistent: float | None
    active: int
    errors: int
    stuck: int
    rescheduled: int
    audit_problems: list[str]
    leaked: dict[str, int]
    error_reasons: dict[str, int]

    @property
    def ok(self) -> bool:
        return (
            self.seconds_to_consistent is not None
            and self.stuck == 0
            and not self.audit_problems
            and not any(self.leaked.values())
        )


def victim_pid(data_dir: Path, victim: str) -> int:
    """The pid of `aiostack up`'s process for ``victim`` (an actor, a node process, nats-server)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if victim == "nats-server":
            if cmdline and cmdline[0].endswith("nats-server") and str(data_dir) in " ".join(cmdline):
                return process.pid
            continue
        if "deploy.child" not in cmdline or str(data_dir) not in cmdline:
            continue
        args = cmdline[cmdline.index("deploy.child") + 1 :]
        if args[0] == victim or (args[0] == "node" and victim in args):
            return process.pid
    raise LookupError(f"no process for {victim} of {data_dir}")


async def _retrying(request: Any, deadline: float = 60.0) -> Any:
    """A request the outage may refuse (5xx, no connection): ask again until it is answered."""
    stop = time.monotonic() + deadline
    while True:
        try:
            return await request()
        except (TimeoutError, ApiError, AiostackError, OSError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500 and exc.status != 409:
                raise
            if time.monotonic() > stop:
                raise
            await asyncio.sleep(0.2)


async def _all_servers(client: Client) -> list[dict[str, Any]]:
    return (await client.request("GET", "/compute/v2.1/servers/detail?all_tenants=1"))["servers"]


async def _boot_all(client: Client, image_id: str, boots: int, in_flight: int, accepted: list[str]) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def boot(number: int) -> None:
        body = {"server": {"name": f"chaos-{number}", "imageRef": image_id, "flavorRef": "1"}}
        async with gate:
            answer = await _retrying(lambda: client.request("POST", "/compute/v2.1/servers", body))
            accepted.append(answer["server"]["id"])

    await asyncio.gather(*(boot(number) for number in range(boots)))


def _settled(server: dict[str, Any]) -> bool:
    if server["OS-EXT-STS:task_state"]:
        return False
    return server["status"] == "ACTIVE" or (server["status"] == "ERROR" and bool(server.get("fault")))


async def run_round(
    client: Client,
    bus: Bus,
    data_dir: Path,
    victim: str,
    *,
    boots: int = 300,
    in_flight: int = 32,
    kill_after: int = 48,
    deadline: float = 60.0,
) -> RoundResult:
    image_id = (await client.request("GET", "/image/v2/images?name=aiostack-tiny"))["images"][0]["id"]
    accepted: list[str] = []
    booting = asyncio.ensure_future(_boot_all(client, image_id, boots, in_flight, accepted))
    while len(accepted) < kill_after and not booting.done():
        await asyncio.sleep(0.005)
    os.kill(victim_pid(data_dir, victim), signal.SIGKILL)
    killed_at = time.monotonic()
    await booting
    consistent_at = None
    servers: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    while time.monotonic() - killed_at < deadline:
        try:
            servers = await _all_servers(client)
            if all(_settled(server) for server in servers):
                problems = (await audit(bus, recheck_after=0.5)).problems
                if not problems:
                    consistent_at = time.monotonic()
                    break
        except Exception:  # the cloud, or this client's own NATS connection, is still coming back
            pass
        await asyncio.sleep(0.5)
    rescheduled = 0
    operator = ConductorOperator.client(bus)
    for server in servers:
        steps = await _retrying(lambda s=server: operator.list_action_events(instance_uuid=s["id"]))
        rescheduled += any(step["event"] == "reschedule" for step in steps)
    result = RoundResult(
        victim=victim,
        boots=len(accepted),
        seconds_to_consistent=None if consistent_at is None else consistent_at - killed_at,
        active=sum(server["status"] == "ACTIVE" for server in servers),
        errors=sum(server["status"] == "ERROR" for server in servers),
        stuck=sum(not _settled(server) for server in servers),
        rescheduled=rescheduled,
        audit_problems=sorted(problems.values()),
        leaked={},
        error_reasons=dict(
            Counter(
                (server.get("fault") or {}).get("message", "")[:120]
                for server in servers
                if server["status"] == "ERROR"
            )
        ),
    )
    result.leaked = await delete_everything(client, bus)
    return result


async def delete_everything(client: Client, bus: Bus, deadline: float = 60.0) -> dict[str, int]:
    """Delete every server; what is left behind once they are gone (all zero when nothing leaks)."""
    for server in await _all_servers(client):
        await _retrying(lambda s=server: client.request("DELETE", f"/compute/v2.1/servers/{s['id']}"))
    async with asyncio.timeout(deadline):
        while await _all_servers(client):
            await asyncio.sleep(0.2)
    scheduler = SchedulerReader.client(bus)
    hosts = await _retrying(scheduler.list_hosts)
    domains = 0
    for host in hosts:
        listed = await _retrying(Node.client(bus, host=host["host"]).list_domains)
        domains += sum(domain["name"].startswith("instance-") for domain in listed)
    ports = await _retrying(lambda: Net.client(bus).list_ports(device_owner=COMPUTE_OWNER))
    return {
        "ports": len(ports),
        "claims": len(await _retrying(scheduler.list_allocations)),
        "volume_attachments": len(await _retrying(VolumeAttachments.client(bus).list_attachments)),
        "domains": domains,
    }
