"""NICs hot-plugged into a domain and taken out again (Nova's interface attach and detach).

The conductor has the net actor bind the port to the instance first (on this host), then asks
the node to plug it: the NIC goes into the domain with the XML a build gives it
(``domain.interface_element``), through the same plumbing (a real guest's port joins its network's
bridge with a DHCP entry, ``Builder.guest_nic``; its tap is filtered before it is plugged: the node
stores the domain's definition with the NIC and refreshes its security groups first). A detach
takes the NIC out live and waits until the guest has released it (libvirt's ``DEVICE_REMOVED``,
the live definition checked again each second), then removes its DHCP entry and its filter.

Both are idempotent: a NIC already plugged (or already gone) is left as it is. Drivers without
device hot-plug (libvirt's test driver) get the persistent definition changed (``node.devices``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET

import libvirt

from api.net import Port
from bus import Conflict
from node.build import Builder
from node.devices import change_device
from node.domain import Nic, interface_macs, interface_xml
from node.hypervisor import Hypervisor
from node.networks import Networking
from node.records import Records
from node.security import SecurityGroups

log = logging.getLogger(__name__)

DETACH_TIMEOUT = 30.0
"""How long a detach waits for the guest to release a NIC (Nova's libvirt driver waits as long)."""


def _same_mac(element: ET.Element, device: ET.Element) -> bool:
    mine, theirs = element.find("mac"), device.find("mac")
    return mine is not None and theirs is not None and mine.get("address") == theirs.get("address")


def _interface_with_mac(xml: str, mac: str) -> str | None:
    """The domain's ``<interface>`` with this MAC, as XML (None: it has none)."""
    for interface in ET.fromstring(xml).iter("interface"):
        found = interface.find("mac")
        if found is not None and found.get("address", "").lower() == mac.lower():
            return ET.tostring(interface, encoding="unicode")
    return None


class Interfaces:
    """Hot-plug of this node's domains' NICs (see the module's docstring)."""

    def __init__(
        self,
        *,
        hypervisor: Hypervisor,
        records: Records,
        builder: Builder,
        networks: Networking,
        security: SecurityGroups,
    ) -> None:
        self.hypervisor = hypervisor
        self.records = records
        self.builder = builder
        self.networks = networks
        self.security = security

    async def list_interfaces(self, instance_uuid: str) -> list[str]:
        """The MACs of the domain's NICs (its persistent definition). :raises NotFound: no domain."""
        return await self.domain_macs(await self.hypervisor.existing(instance_uuid))

    async def domain_macs(self, domain: libvirt.virDomain) -> list[str]:
        return interface_macs(await self.hypervisor.persistent_xml(domain))

    async def attach_interface(self, instance_uuid: str, port: Port) -> None:
        """Plug the (bound) port in; nothing if the domain has its MAC already.

        :raises NotFound: the instance has no domain here.
        """
        async with self.records.lock(instance_uuid):
            domain = await self.hypervisor.existing(instance_uuid)
            self.records.note_request(instance_uuid)
            before = await self.hypervisor.persistent_xml(domain)
            if port["mac_address"] in interface_macs(before):
                return
            device = interface_xml(Nic(port["mac_address"], port["id"]))
            try:
                if self.hypervisor.real_guests:
                    device = interface_xml(await self.builder.guest_nic(port, instance_uuid))
                await self._filter_first(instance_uuid, before, device)
                await change_device(self.hypervisor, domain, device, attach=True, same=_same_mac)
            except BaseException:
                await self._forget(instance_uuid, device)
                raise
            await self.records.set_xml(instance_uuid, await self.hypervisor.persistent_xml(domain))
            log.info("instance %s: NIC %s (port %s) plugged", instance_uuid, port["mac_address"], port["id"])

    async def detach_interface(self, instance_uuid: str, mac: str) -> None:
        """Take the NIC with this MAC out, waiting for the guest to release it; nothing if the domain
        has none (any more).

        :raises NotFound: the instance has no domain here.
        :raises Conflict: the guest did not release the NIC within ``DETACH_TIMEOUT`` (it is gone
            from the persistent definition: the guest loses it at its next start).
        """
        async with self.records.lock(instance_uuid):
            domain = await self.hypervisor.existing(instance_uuid)
            self.records.note_request(instance_uuid)
            device = _interface_with_mac(await self.hypervisor.persistent_xml(domain), mac)
            if device is None:
                return
            if not await self.hypervisor.is_running(domain):
                await change_device(self.hypervisor, domain, device, attach=False, same=_same_mac)
            else:
                await self._detach_live(domain, device, mac)
            await self._forget(instance_uuid, device)
            log.info("instance %s: NIC %s unplugged", instance_uuid, mac)

    async def _detach_live(self, domain: libvirt.virDomain, device: str, mac: str) -> None:
        """Detach from the running domain and its definition, and wait until the guest released it."""
        removed = asyncio.Event()
        callback = await self.hypervisor.virt(
            self.hypervisor.connection.domainEventRegisterAny,
            domain,
            libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
            lambda _conn, _domain, _alias, _opaque: removed.set(),
            None,
        )
        try:
            if await change_device(self.hypervisor, domain, device, attach=False, same=_same_mac):
                await self._until_released(domain, mac, removed)
        finally:
            await self.hypervisor.virt(self.hypervisor.connection.domainEventDeregisterAny, callback)

    async def _until_released(self, domain: libvirt.virDomain, mac: str, removed: asyncio.Event) -> None:
        """Wait for ``DEVICE_REMOVED``, checking the live definition each second (a guest that
        released the NIC before the callback was there sends no second event)."""
        deadline = time.monotonic() + DETACH_TIMEOUT
        while mac.lower() in (
            m.lower() for m in interface_macs(await self.hypervisor.virt(domain.XMLDesc, 0))
        ):
            if time.monotonic() > deadline:
                raise Conflict(f"the guest did not release its NIC {mac} within {DETACH_TIMEOUT:.0f} s")
            removed.clear()
            try:
                await asyncio.wait_for(removed.wait(), 1.0)
            except TimeoutError:
                continue

    async def _filter_first(self, instance_uuid: str, xml: str, device: str) -> None:
        """Store the definition with the NIC and refresh the security groups: the tap is filtered
        before its first frame."""
        root = ET.fromstring(xml)
        devices = root.find("devices")
        assert devices is not None
        devices.append(ET.fromstring(device))
        await self.records.set_xml(instance_uuid, ET.tostring(root, encoding="unicode"))
        await self.security.refresh()

    async def _forget(self, instance_uuid: str, device: str) -> None:
        """What this host kept for a NIC the domain no longer has: its DHCP entry (its network too
        when no guest is left on it), its filter."""
        domain = await self.hypervisor.domain(instance_uuid)
        if domain is not None:
            await self.records.set_xml(instance_uuid, await self.hypervisor.persistent_xml(domain))
        if self.hypervisor.conn is not None:
            await self.networks.release(self.hypervisor.conn, device)
        await self.security.refresh_logged(f"a NIC of {instance_uuid} went")
