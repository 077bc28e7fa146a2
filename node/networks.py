"""Guest networking on a QEMU node: one libvirt network per aiostack network.

Each aiostack network a guest joins becomes a persistent libvirt network on this host: an
isolated bridge (no forwarding: guest traffic never leaves the host) that holds the subnet's
gateway address, with dnsmasq serving DHCP only to the MACs of its ports, each with its
port's fixed IP (``networkUpdate`` adds and removes one host entry per port). So the address
the API lists is the address the guest gets. Where the bridge cannot be made (no privileges,
the subnet already routed on this host, no dnsmasq), the guest gets user-mode networking
instead and the port's binding says so.

While a network has guests of this node, its bridge also holds the metadata service
(``node.metadata``), and DHCP hands the guests a route to it through the gateway (option 121,
as Neutron's DHCP agent does on an isolated network: libvirt gives guests of an isolated
network no default route).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import libvirt

from api.net import Network, Port, Subnet
from node.domain import xml_safe
from node.metadata import METADATA_ADDRESS, MetadataService

log = logging.getLogger(__name__)

# libvirt drops an empty <dhcp> (and dnsmasq's static range with it) when its last host entry
# goes: this entry, the gateway's own address on a MAC no port has, keeps it.
KEEPER_MAC = "02:00:00:00:00:00"
UPDATE_FLAGS = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"
ET.register_namespace("dnsmasq", DNSMASQ_NS)


@dataclass(frozen=True, slots=True)
class Attachment:
    """How one port reaches its guest: a libvirt network, an overlay bridge (``node.overlay``),
    or user-mode networking and why."""

    network: str | None
    vif_type: Literal["bridge", "user"]
    fallback_reason: str | None = None
    bridge: str | None = None
    mtu: int | None = None
    segmentation_id: int | None = None

    @property
    def details(self) -> dict[str, Any]:
        """The port binding's ``vif_details``."""
        if self.bridge is not None:
            return {"bridge_name": self.bridge, "segmentation_id": self.segmentation_id}
        return {"libvirt_network": self.network, "fallback_reason": self.fallback_reason}


class Networking(Protocol):
    """How a node plugs guests into networks: libvirt networks on one host (``GuestNetworks``),
    or VXLAN segments across hosts (``node.overlay.OverlayNetworks``)."""

    async def attach(
        self,
        conn: libvirt.virConnect,
        network: Network,
        subnet: Subnet | None,
        port: Port,
        instance_uuid: str,
    ) -> Attachment: ...

    async def release(self, conn: libvirt.virConnect, xml: str) -> None: ...

    async def dhcp_entries(self, conn: libvirt.virConnect, network_id: str) -> dict[str, str]: ...

    async def restore(self) -> None: ...


NETWORK_PREFIX = "aiostack-"


def libvirt_network_name(network_id: str) -> str:
    return f"{NETWORK_PREFIX}{network_id}"


def network_id_of(name: str) -> str | None:
    """The aiostack network a libvirt network stands for (None: it is not one of aiostack's)."""
    return name.removeprefix(NETWORK_PREFIX) if name.startswith(NETWORK_PREFIX) else None


def bridge_name(network_id: str) -> str:
    """Linux allows 15 characters for an interface name."""
    return f"aio-{network_id.replace('-', '')[:10]}"


def network_xml(network_id: str, subnet: Subnet) -> str:
    cidr = ipaddress.ip_network(subnet["cidr"])
    gateway = subnet.get("gateway_ip") or str(next(cidr.hosts()))
    network = ET.Element("network")
    ET.SubElement(network, "name").text = libvirt_network_name(network_id)
    ET.SubElement(network, "bridge", name=bridge_name(network_id), stp="off", delay="0")
    ip = ET.SubElement(network, "ip", address=gateway, prefix=str(cidr.prefixlen))
    ET.SubElement(ET.SubElement(ip, "dhcp"), "host", mac=KEEPER_MAC, ip=gateway)
    options = ET.SubElement(network, f"{{{DNSMASQ_NS}}}options")
    route = f"dhcp-option=option:classless-static-route,{METADATA_ADDRESS}/32,{gateway}"
    ET.SubElement(options, f"{{{DNSMASQ_NS}}}option", value=route)
    return ET.tostring(network, encoding="unicode")


def dhcp_host_xml(mac: str, ip: str) -> str:
    return f"<host mac='{mac}' ip='{ip}'/>"


class GuestNetworks:
    """The libvirt networks of one node and their DHCP host entries."""

    def __init__(
        self,
        run: Callable[..., Awaitable[Any]],
        *,
        metadata: MetadataService | None = None,
        connection: Callable[[], libvirt.virConnect] | None = None,
    ) -> None:
        """``run``: how a libvirt call is made (``Hypervisor.virt``: off the loop where it may
        block); ``metadata``: served on each network's bridge while it has guests;
        ``connection``: the open connection, for ``restore``."""
        self._run = run
        self._metadata = metadata
        self._connection = connection
        self._locks: dict[str, asyncio.Lock] = {}

    async def attach(
        self,
        conn: libvirt.virConnect,
        network: Network,
        subnet: Subnet | None,
        port: Port,
        instance_uuid: str,
    ) -> Attachment:
        """Make sure the network exists and is running, then give the port's MAC its fixed IP."""
        network_id = network["id"]
        if subnet is None:
            return Attachment(None, "user", "the network has no IPv4 subnet to serve over DHCP")
        lock = self._locks.setdefault(network_id, asyncio.Lock())
        async with lock:
            try:
                libvirt_network = await self._ensure(conn, network_id, subnet)
            except libvirt.libvirtError as exc:
                reason = f"no bridge for network {network_id}: {exc.get_error_message()}"
                log.warning("%s; guest falls back to user-mode networking", reason)
                return Attachment(None, "user", reason)
            for fixed_ip in port["fixed_ips"]:
                if fixed_ip["subnet_id"] == subnet["id"]:
                    await self._set_host(libvirt_network, port["mac_address"], fixed_ip["ip_address"])
            await self._serve_metadata(network_id)
        return Attachment(libvirt_network_name(network_id), "bridge")

    async def _serve_metadata(self, network_id: str) -> None:
        """The metadata service on the network's bridge; a guest boots without it if it fails."""
        if self._metadata is None:
            return
        try:
            await self._metadata.serve(network_id, bridge_name(network_id))
        except OSError as exc:
            log.warning("no metadata service on network %s: %s", network_id, exc)

    async def release(self, conn: libvirt.virConnect, xml: str) -> None:
        """Remove the DHCP host entries of a (stopped) domain's NICs, given its XML, from their
        networks; a network left with no guest goes too.

        The XML may be one libvirt refused (a node before ``domain.xml_safe`` stored names with
        characters XML 1.0 cannot carry): those are dropped before it is read, as libvirt would
        never have had them.

        :raises xml.etree.ElementTree.ParseError: the XML is not XML even then.
        """
        for interface in ET.fromstring(xml_safe(xml)).iter("interface"):
            source, mac = interface.find("source"), interface.find("mac")
            if interface.get("type") != "network" or source is None or mac is None:
                continue
            name = source.get("network", "")
            async with self._locks.setdefault(network_id_of(name) or name, asyncio.Lock()):
                try:
                    network = await self._run(conn.networkLookupByName, name)
                except libvirt.libvirtError:
                    continue
                await self._remove_host(network, mac.get("address", ""))
                await self._remove_if_unused(network)

    async def _unused(self, network: Any) -> bool:
        """No guest holds a DHCP entry on the network, and no running domain is plugged into it."""
        if set(await self._dhcp_hosts(network)) - {KEEPER_MAC}:
            return False
        return not (await self._run(network.isActive) and await self._run(network.listAllPorts, 0))

    async def _remove_if_unused(self, network: Any) -> None:
        if not await self._unused(network):
            return
        name = await self._run(network.name)
        network_id = network_id_of(name)
        if self._metadata is not None and network_id is not None:
            await self._metadata.stop(network_id)
        if await self._run(network.isActive):
            await self._run(network.destroy)
        await self._run(network.undefine)
        log.info("removed libvirt network %s: no guest uses it any more", name)

    async def _reclaim_bridge_of(self, conn: libvirt.virConnect, error: libvirt.libvirtError) -> bool:
        """If ``error`` says the subnet is taken by a stale aiostack network (left by a crashed or
        removed deployment: no guest on it, no DHCP entry), remove that network; True if done."""
        match = re.search(r"in use by interface (\S+)", error.get_error_message() or "")
        if match is None:
            return False
        for network in await self._run(conn.listAllNetworks, 0):
            name = await self._run(network.name)
            if network_id_of(name) is None or await self._run(network.bridgeName) != match[1]:
                continue
            hosts = set(await self._dhcp_hosts(network)) - {KEEPER_MAC}
            if await self._run(network.listAllPorts, 0):
                return False
            log.warning(
                "taking the subnet of stale network %s over (%d stale DHCP entries)", name, len(hosts)
            )
            await self._run(network.destroy)
            await self._run(network.undefine)
            return True
        return False

    async def _ensure(self, conn: libvirt.virConnect, network_id: str, subnet: Subnet) -> Any:
        name = libvirt_network_name(network_id)
        try:
            network = await self._run(conn.networkLookupByName, name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise
            network = await self._run(conn.networkDefineXML, network_xml(network_id, subnet))
            log.info("defined libvirt network %s for %s", name, subnet["cidr"])
        if not await self._run(network.isActive):
            try:
                await self._run(network.create)
            except libvirt.libvirtError as exc:
                if not await self._reclaim_bridge_of(conn, exc):
                    await self._run(network.undefine)
                    raise
                await self._run(network.create)
            await self._run(network.setAutostart, 1)
        return network

    async def _dhcp_hosts(self, network: Any) -> dict[str, str]:
        """``{mac: ip}`` of the running network's DHCP host entries."""
        root = ET.fromstring(await self._run(network.XMLDesc, 0))
        return {
            host.get("mac", "").lower(): host.get("ip", "") for host in root.iter("host") if host.get("mac")
        }

    async def _set_host(self, network: Any, mac: str, ip: str) -> None:
        hosts = await self._dhcp_hosts(network)
        if hosts.get(mac.lower()) == ip:
            return
        if mac.lower() in hosts:
            await self._remove_host(network, mac)
        for stale_mac, stale_ip in hosts.items():
            if stale_ip == ip and stale_mac != mac.lower():
                await self._remove_host(network, stale_mac)
        await self._run(
            network.update,
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            dhcp_host_xml(mac, ip),
            UPDATE_FLAGS,
        )

    async def _remove_host(self, network: Any, mac: str) -> None:
        hosts = await self._dhcp_hosts(network)
        if mac.lower() not in hosts or mac.lower() == KEEPER_MAC:
            return
        await self._run(
            network.update,
            libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
            libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            dhcp_host_xml(mac.lower(), hosts[mac.lower()]),
            UPDATE_FLAGS,
        )

    async def restore(self) -> None:
        """The metadata service on every running aiostack network that has guests (libvirt starts
        the persistent networks themselves: autostart)."""
        if self._metadata is None or self._connection is None:
            return
        try:
            networks = await self._run(self._connection().listAllNetworks, 0)
        except libvirt.libvirtError as exc:
            log.warning("no metadata service restored: the networks could not be listed: %s", exc)
            return
        for network in networks:
            network_id = network_id_of(await self._run(network.name))
            if network_id is None or not await self._run(network.isActive):
                continue
            if not await self._unused(network):
                await self._serve_metadata(network_id)

    async def dhcp_entries(self, conn: libvirt.virConnect, network_id: str) -> dict[str, str]:
        """``{mac: ip}`` served on an aiostack network's libvirt network ({} when there is none)."""
        try:
            network = await self._run(conn.networkLookupByName, libvirt_network_name(network_id))
        except libvirt.libvirtError:
            return {}
        return {mac: ip for mac, ip in (await self._dhcp_hosts(network)).items() if mac != KEEPER_MAC}
