"""`aiostack audit`: check the invariants that span actors, print what is wrong, exit 1 if anything is.

Read over the bus as the operator (the admin credentials of the data directory):

* instances in a task state past the conductor's task timeout, or in ERROR without a fault;
* claims (scheduler) for no live instance, or on another host than the instance's (an evacuate
  that left its claim behind); a resize's second claim (the old flavor's, held until
  it is confirmed or reverted) for an instance that is not resizing, or on another host than
  the instance's (or, during a cold or live migration, than the host it leaves or goes to);
* ports bound to no live instance, and so the IPs they hold (net); a host's DHCP port on a
  network none of its instances has a port on any more;
* volumes reserved, attached or detaching to no live instance, or arriving (a live migration's
  destination's attachment) for an instance that is not migrating (volume);
* a shelved-offloaded instance (with no task) that is recorded on a host, holds a claim, or has a
  port bound to a host: what an offload left behind;
* libvirt domains with no record on their host, and records with no domain (every node
  that is up; a node that is down is reported as not checked);
* domains whose power state is not what the conductor records for their instance (a running
  domain of a SHUTOFF or SUSPENDED instance, a stopped one of an ACTIVE instance, ...), for
  instances with no task under way: what a node reporting a false power state, or a domain
  changed behind the conductor's back, leaves;
* sizes that disagree, for instances with no task under way: a claim of other vCPUs or RAM than
  the instance's record says it has, or a running domain of another size than that (what a live
  change of vCPUs and RAM that ended badly, or a change behind the conductor's back, leaves).
* a port bound to an instance with no task under way whose domain lacks its NIC, and a NIC whose
  port is not the instance's (an interface attach or detach left half done).

The holders are read before the instances, so a resource made meanwhile belongs to a
live instance; a problem is reported only if a second pass a moment later still sees it,
so work in flight (a delete releasing its ports) is not mistaken for a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from api.conductor import AuditedInstance, ConductorOperator
from api.net import COMPUTE_OWNER, DHCP_OWNER, Net, Port
from api.node import DomainView, Node
from api.scheduler import HostView, SchedulerReader
from api.volume import VolumeAttachments
from bus import AiostackError, Bus
from runtime.states import RESIZE_TASKS, VmState

SETTLED_STATES = ("active", "stopped", "paused", "suspended", "resized", "shelved")
RUNNING = 1
"""libvirt's ``VIR_DOMAIN_RUNNING``."""
RECHECK_AFTER = 2.0

DOMAIN_STATES = {
    0: "no state",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutting down",
    5: "shut off",
    6: "crashed",
    7: "suspended by the guest",
}
"""libvirt's ``VIR_DOMAIN_*`` states, in words."""
EXPECTED_DOMAIN_STATES: dict[str, frozenset[int]] = {
    "active": frozenset({1, 2, 7}),
    "paused": frozenset({3}),
    "stopped": frozenset({4, 5, 6}),
    "suspended": frozenset({5}),
    "shelved": frozenset({5}),
}
"""The domain states that agree with an instance's vm_state, when no task is under way (a
suspended instance's domain is saved to disk: shut off; a shelved one's is powered off)."""


@dataclass
class AuditReport:
    problems: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _size_differs(row: AuditedInstance, vcpus: int | None, memory_mb: int | None) -> bool:
    """Whether an instance with no task under way has another size than ``vcpus`` and
    ``memory_mb`` (what is not known does not differ)."""
    if row["task_state"] is not None or "vcpus" not in row or vcpus is None or memory_mb is None:
        return False
    return (row["vcpus"], row.get("memory_mb")) != (vcpus, memory_mb)


def _resizing(row: AuditedInstance) -> bool:
    """Whether the instance is in a resize (one that may hold two claims)."""
    return row["vm_state"] == VmState.RESIZED or row["task_state"] in RESIZE_TASKS


def _migration_hosts(row: AuditedInstance) -> tuple[str | None, ...]:
    """The hosts the instance's claims may be on: its own and, during a cold or live migration,
    the host it leaves or goes to."""
    return (row["host"], row.get("other_host"))


def _claim_host_wrong(row: AuditedInstance, host: str) -> bool:
    """Whether the instance's (not held) claim on ``host`` is on a host it has nothing to do with."""
    return row["host"] is not None and host not in _migration_hosts(row)


async def _domains_by_host(
    bus: Bus, hosts: list[HostView], report: AuditReport
) -> dict[str, dict[str, DomainView]]:
    """Each live host's instance domains, by uuid."""
    domains: dict[str, dict[str, DomainView]] = {}
    for host in hosts:
        name = host["host"]
        if not host["alive"]:
            report.notes.append(f"node {name} is down: its domains were not checked")
            continue
        try:
            listed = await Node.client(bus, host=name, timeout=10).list_domains()
        except AiostackError as exc:
            report.notes.append(f"node {name} did not answer ({exc}): its domains were not checked")
            continue
        domains[name] = {d["uuid"]: d for d in listed if d["name"].startswith("instance-")}
    return domains


async def audit_once(bus: Bus) -> AuditReport:
    report = AuditReport()
    scheduler = SchedulerReader.client(bus)
    claims = await scheduler.list_allocations()
    ports = await Net.client(bus).list_ports(device_owner=COMPUTE_OWNER)
    dhcp_ports = await Net.client(bus).list_ports(device_owner=DHCP_OWNER)
    attachments = await VolumeAttachments.client(bus).list_attachments()
    hosts = await scheduler.list_hosts()
    domains = await _domains_by_host(bus, hosts, report)
    answer = await ConductorOperator.client(bus).audit_instances()
    instances = {row["uuid"]: row for row in answer["instances"]}
    report.counts = {
        "instances": len(instances),
        "claims": len(claims),
        "ports": len(ports),
        "attachments": len(attachments),
        "domains": sum(map(len, domains.values())),
        "hosts": len(hosts),
    }
    problems = report.problems
    for uuid, row in instances.items():
        if row["task_state"] and row["idle_s"] > answer["task_timeout"]:
            problems[f"stuck:{uuid}"] = (
                f"instance {uuid} has been {row['task_state']} for {row['idle_s']:.0f} s"
                f" (timeout {answer['task_timeout']:.0f} s) on host {row['host']}"
            )
        if row["vm_state"] == "error" and not row["fault"]:
            problems[f"fault:{uuid}"] = f"instance {uuid} is in ERROR with no fault"
        if row["vm_state"] == VmState.SHELVED_OFFLOADED and row["host"] is not None:
            problems[f"offloaded:{uuid}"] = f"instance {uuid} is offloaded but recorded on {row['host']}"
    for claim in claims:
        uuid = claim["instance_uuid"]
        if uuid not in instances:
            problems[f"claim:{uuid}"] = f"claim on {claim['host']} for instance {uuid}, which does not exist"
        elif instances[uuid]["vm_state"] == VmState.SHELVED_OFFLOADED and not instances[uuid]["task_state"]:
            problems[f"offloaded-claim:{uuid}"] = (
                f"instance {uuid} is offloaded but holds a claim on {claim['host']}"
            )
        elif claim.get("resize_held") and not _resizing(instances[uuid]):
            row = instances[uuid]
            problems[f"resize-claim:{uuid}"] = (
                f"instance {uuid} ({row['vm_state']}, task {row['task_state']}) holds a resize's second"
                f" claim on {claim['host']} but is not resizing"
            )
        elif not claim.get("resize_held") and _claim_host_wrong(instances[uuid], claim["host"]):
            problems[f"claim-host:{uuid}"] = (
                f"instance {uuid} is on {instances[uuid]['host']} but its claim is on {claim['host']}"
            )
        elif not claim.get("resize_held") and _size_differs(
            instances[uuid], claim["vcpus"], claim["memory_mb"]
        ):
            row = instances[uuid]
            problems[f"claim-size:{uuid}"] = (
                f"instance {uuid} has {row.get('vcpus')} vCPUs, {row.get('memory_mb')} MB but its claim on"
                f" {claim['host']} is {claim['vcpus']} vCPUs, {claim['memory_mb']} MB"
            )
        elif claim.get("resize_held") and claim["host"] not in _migration_hosts(instances[uuid]):
            problems[f"resize-claim:{uuid}"] = (
                f"the resize of instance {uuid} on {instances[uuid]['host']} holds a claim on {claim['host']}"
            )
    for port in ports:
        owner = instances.get(port["device_id"])
        offloaded = owner is not None and owner["vm_state"] == VmState.SHELVED_OFFLOADED
        if offloaded and not owner["task_state"] and port["binding:host_id"]:
            problems[f"offloaded-port:{port['id']}"] = (
                f"port {port['id']} of offloaded instance {port['device_id']} is bound to"
                f" {port['binding:host_id']}"
            )
        if port["device_id"] not in instances:
            ips = ", ".join(ip["ip_address"] for ip in port["fixed_ips"]) or "no IP"
            problems[f"port:{port['id']}"] = (
                f"port {port['id']} ({ips}) is bound to instance {port['device_id']}, which does not exist"
            )
    served = {
        (port["binding:host_id"], port["network_id"]) for port in ports if port["device_id"] in instances
    }
    for port in dhcp_ports:
        if (port["binding:host_id"], port["network_id"]) not in served:
            problems[f"dhcp:{port['id']}"] = (
                f"DHCP port {port['id']} of {port['binding:host_id']} on network {port['network_id']}:"
                " no instance of that host is on the network"
            )
    for attachment in attachments:
        if attachment["server_id"] not in instances:
            problems[f"volume:{attachment['volume_id']}"] = (
                f"volume {attachment['volume_id']} is {attachment['attach_status']} to instance"
                f" {attachment['server_id']}, which does not exist"
            )
        elif (
            attachment["attach_status"] == "arriving"
            and instances[attachment["server_id"]]["task_state"] is None
        ):
            problems[f"volume:{attachment['volume_id']}:arriving"] = (
                f"volume {attachment['volume_id']} has an attachment arriving at {attachment['host_name']}"
                f" for instance {attachment['server_id']}, which is not migrating"
            )
    for host, uuids in domains.items():
        for uuid, domain in uuids.items():
            state = domain["state"]
            if uuid not in instances or host not in _migration_hosts(instances[uuid]):
                problems[f"domain:{host}:{uuid}"] = (
                    f"domain instance-{uuid} on {host} has no instance record there"
                )
                continue
            row = instances[uuid]
            if host != row["host"]:  # a migration's other host: its copy stays until the migration ends
                continue
            expected = EXPECTED_DOMAIN_STATES.get(row["vm_state"])
            if row["task_state"] is None and expected is not None and state not in expected:
                problems[f"power:{uuid}"] = (
                    f"instance {uuid} is {row['vm_state']} but its domain on {host} is"
                    f" {DOMAIN_STATES.get(state, f'in state {state}')}"
                )
            if state == RUNNING and _size_differs(row, domain.get("vcpus"), domain.get("memory_mb")):
                problems[f"size:{uuid}"] = (
                    f"instance {uuid} has {row.get('vcpus')} vCPUs, {row.get('memory_mb')} MB but its running"
                    f" domain on {host} has {domain.get('vcpus')} vCPUs, {domain.get('memory_mb')} MB"
                )
        _check_nics(problems, host, uuids, instances, ports)
        for uuid, row in instances.items():
            if row["host"] == host and row["vm_state"] in SETTLED_STATES and uuid not in uuids:
                problems[f"nodomain:{uuid}"] = f"instance {uuid} ({row['vm_state']}) has no domain on {host}"
    return report


def _check_nics(
    problems: dict[str, str],
    host: str,
    domains: dict[str, DomainView],
    instances: dict[str, AuditedInstance],
    ports: list[Port],
) -> None:
    """A port bound to an instance of ``host`` with no task under way whose domain lacks its NIC, and
    a NIC whose port is not the instance's (an interface attach or detach left half done)."""
    settled = {
        uuid
        for uuid, domain in domains.items()
        if uuid in instances and instances[uuid]["host"] == host and instances[uuid]["task_state"] is None
    }
    bound: dict[str, set[str]] = {uuid: set() for uuid in settled}
    for port in ports:
        if port["device_id"] in settled:
            bound[port["device_id"]].add(port["mac_address"])
            if port["mac_address"] not in domains[port["device_id"]]["macs"]:
                problems[f"nic:{port['id']}"] = (
                    f"port {port['id']} is bound to instance {port['device_id']}, whose domain on {host}"
                    f" has no NIC {port['mac_address']}"
                )
    for uuid in settled:
        for mac in set(domains[uuid]["macs"]) - bound[uuid]:
            problems[f"nic:{uuid}:{mac}"] = (
                f"the domain of instance {uuid} on {host} has a NIC {mac} whose port is not the instance's"
            )


async def audit(bus: Bus, recheck_after: float = RECHECK_AFTER) -> AuditReport:
    """Problems seen twice, ``recheck_after`` seconds apart (work in flight is not a problem)."""
    first = await audit_once(bus)
    if not first.problems:
        return first
    await asyncio.sleep(recheck_after)
    second = await audit_once(bus)
    second.problems = {key: text for key, text in second.problems.items() if key in first.problems}
    return second


def print_report(report: AuditReport, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps({"problems": sorted(report.problems.values()), "notes": report.notes, **report.counts})
        )
        return
    checked = ", ".join(f"{count} {name}" for name, count in report.counts.items())
    print(f"aiostack audit: checked {checked}")
    for note in report.notes:
        print(f"  note: {note}")
    for text in sorted(report.problems.values()):
        print(f"  PROBLEM: {text}")
    print("  clean" if not report.problems else f"  {len(report.problems)} problem(s)")


async def run_audit(args: argparse.Namespace, nats_url: str, credentials: Any) -> int:
    async with await Bus.connect(
        nats_url, prefix=args.prefix, name="aiostack-audit", credentials=credentials
    ) as bus:
        try:
            report = await audit(bus)
        except AiostackError as exc:
            print(f"aiostack audit: could not ask every actor: {exc.code}: {exc}")
            return 2
    print_report(report, args.json)
    return 1 if report.problems else 0
