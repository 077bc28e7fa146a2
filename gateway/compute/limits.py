"""Nova's limits (``/limits``): no quotas are enforced, so every maximum is -1 (unlimited); usage is real."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.compute.common import BASE, compute
from gateway.http import json_response
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
    usage = await compute(request).project_usage()
    absolute = AbsoluteLimits(
        maxTotalInstances=UNLIMITED,
        maxTotalCores=UNLIMITED,
        maxTotalRAMSize=UNLIMITED,
        maxServerMeta=UNLIMITED,
        maxImageMeta=UNLIMITED,
        maxPersonality=UNLIMITED,
        maxPersonalitySize=UNLIMITED,
        maxTotalKeypairs=UNLIMITED,
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
