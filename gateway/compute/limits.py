"""Nova's limits (``/limits``): the project's compute quotas and what it uses.

The maximums of what compute quotas limit (instances, cores, RAM, server metadata, key pairs)
are the project's quotas; the others are -1 (unlimited): nothing here limits them (see
``gateway.compute.quotas``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.compute.common import BASE, compute
from gateway.http import context_of, json_response
from gateway.routing import Body, Reply, Routes


class AbsoluteLimits(Body):
    """Maximums (-1: unlimited) and what the project uses."""

    maxTotalInstances: int
    maxTotalCores: int
    maxTotalRAMSize: int
    maxServerMeta: int
    maxImageMeta: int
    maxPersonality: int
    maxPersonalitySize: int
    maxTotalKeypairs: int
    maxSecurityGroups: int
    maxSecurityGroupRules: int
    maxServerGroups: int
    maxServerGroupMembers: int
    maxTotalFloatingIps: int
    totalInstancesUsed: int
    totalCoresUsed: int
    totalRAMUsed: int
    totalSecurityGroupsUsed: int
    totalFloatingIpsUsed: int
    totalServerGroupsUsed: int


class Limits(Body):
    rate: list[dict[str, Any]]
    """Rate limits: none."""
    absolute: AbsoluteLimits


class LimitsBody(Body):
    limits: Limits


UNLIMITED = -1
routes = Routes()


@routes.get(
    f"{BASE}/limits", "Show limits and usage", replies=[Reply(200, LimitsBody, "The project's limits.")]
)
async def limits(request: web.Request) -> web.Response:
    conductor = compute(request)
    usage = await conductor.project_usage()
    quotas = await conductor.get_quotas(project_id=context_of(request).project_id or "")
    absolute = AbsoluteLimits(
        maxTotalInstances=quotas["instances"],
        maxTotalCores=quotas["cores"],
        maxTotalRAMSize=quotas["ram"],
        maxServerMeta=quotas["metadata_items"],
        maxImageMeta=UNLIMITED,
        maxPersonality=UNLIMITED,
        maxPersonalitySize=UNLIMITED,
        maxTotalKeypairs=quotas["key_pairs"],
        maxSecurityGroups=UNLIMITED,
        maxSecurityGroupRules=UNLIMITED,
        maxServerGroups=UNLIMITED,
        maxServerGroupMembers=UNLIMITED,
        maxTotalFloatingIps=UNLIMITED,
        totalInstancesUsed=usage["instances"],
        totalCoresUsed=usage["cores"],
        totalRAMUsed=usage["ram"],
        totalSecurityGroupsUsed=0,
        totalFloatingIpsUsed=0,
        totalServerGroupsUsed=0,
    )
    return json_response(LimitsBody(limits=Limits(rate=[], absolute=absolute)))
