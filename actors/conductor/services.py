"""The compute hosts as an operator sees them (Nova's os-services and os-hypervisors): the
scheduler's view of each host, and enabling or disabling one there (``ComputeServices``)."""

from __future__ import annotations

from actors.conductor.core import Core
from actors.conductor.instances import stamp_of
from api.conductor import ComputeService, ComputeServices
from api.scheduler import HostView


def compute_service(host: HostView) -> ComputeService:
    return {
        "host": host["host"],
        "hypervisor_type": host["hypervisor_type"],
        "enabled": host["enabled"],
        "disabled_reason": host["disabled_reason"],
        "alive": host["alive"],
        "last_seen": stamp_of(host["last_seen"]) if host["last_seen"] else None,
        "instances": host["instances"],
        "vcpus": host["vcpus"],
        "vcpus_used": host["vcpus_used"],
        "memory_mb": host["memory_mb"],
        "memory_mb_used": host["memory_mb_used"],
        "disk_gb": host["disk_gb"],
        "disk_gb_used": host["disk_gb_used"],
    }


class HostServices(ComputeServices):
    """Serves ``ComputeServices`` (the policy keeps it to admins)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def list_compute_services(self) -> list[ComputeService]:
        return [compute_service(host) for host in await self.core.hosts.list_hosts()]

    async def set_compute_service(
        self, *, host: str, enabled: bool, disabled_reason: str | None = None
    ) -> ComputeService:
        view = await self.core.hosts.set_host_enabled(
            host=host, enabled=enabled, disabled_reason=disabled_reason
        )
        return compute_service(view)
