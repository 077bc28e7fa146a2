"""Guest networking on a QEMU node: one libvirt network per aiostack network.

Each aiostack network a guest joins becomes a persistent libvirt network on this host: an
isolated bridge (nothing routed into or out of it: guest traffic never leaves the host; a
libvirt ``open`` network, isolated by the node's nftables table ``firewall.ISOLATION_TABLE``,
since libvirt rewrites all its iptables rules of an isolated network on every DHCP host change,
a quarter of a second here) that holds the address of
the host's DHCP port on the network (``NetForNodes.dhcp_port``, Neutron's ``network:dhcp`` port,
taken when the network's first guest comes and given back when the network goes), with dnsmasq
there serving DHCP only to the MACs of its ports, each with its port's fixed IP
(``networkUpdate`` adds and removes one host entry per port). So the address the API lists is
the address the guest gets, and the subnet's gateway stays free for a router's interface. Where
the bridge cannot be made (no privileges, the subnet already routed on this host, no dnsmasq,
no DHCP port to be had), the guest gets user-mode networking instead and the port's binding
says so. A subnet without DHCP (``enable_dhcp`` false) takes no DHCP port: the bridge holds its
gateway address, as before.

What DHCP tells the guests besides their address (``dhcp_option_values``, shared with the overlay
of ``node.overlay``) goes as classless static routes (option 121, RFC 3442, which a client takes
in place of the router option): the metadata service through the DHCP port's address (Neutron's
isolated-metadata route: the service stays on this host's bridge, ``node.metadata``), the
subnet's ``host_routes``, and the default route through the gateway; and the subnet's
``dns_nameservers``. A network defined by an earlier version (the bridge holding the gateway) is
defined again with the DHCP port's address when a guest next joins it or the node starts: at
once where no running guest is plugged into it, else for its next start (its live bridge keeps
the gateway until then).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import libvirt

from api.net import NetForNodes, Network, Port, Subnet
from bus import AiostackError, NotFound
from node import firewall
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


@dataclass(frozen=True, slots=True)
class SubnetDhcp:
    """What a subnet tells its hosts over DHCP besides their address."""

    gateway: str | None
    dns_nameservers: list[str]
    host_routes: list[tuple[str, str]]
    """``(destination, nexthop)`` pairs."""

    @classmethod
    def of(cls, subnet: Subnet) -> SubnetDhcp:
        return cls(
            gateway=subnet.get("gateway_ip") or None,
            dns_nameservers=list(subnet["dns_nameservers"]),
            host_routes=[(route["destination"], route["nexthop"]) for route in subnet["host_routes"]],
        )


def dhcp_option_values(
    dhcp: SubnetDhcp, *, mtu: int | None = None, metadata_via: str | None = None
) -> list[str]:
    """dnsmasq's ``dhcp-option`` values: the MTU (option 26), the router (3: the gateway, or
    none where the subnet has no gateway, as Neutron's DHCP agent says it; else dnsmasq would name
    itself), the name servers (6) and the classless static routes (121): the metadata service
    through ``metadata_via``, the host routes, and the default route through the gateway among them
    (RFC 3442 has a client that takes option 121 ignore option 3; Neutron's DHCP agent adds it so,
    unless a host route is itself the default)."""
    options = [f"option:mtu,{mtu}"] if mtu else []
    options.append(f"option:router,{dhcp.gateway}" if dhcp.gateway else "option:router")
    if dhcp.dns_nameservers:
        options.append(f"option:dns-server,{','.join(dhcp.dns_nameservers)}")
    routes = [(f"{METADATA_ADDRESS}/32", metadata_via)] if metadata_via else []
    routes += dhcp.host_routes
    if routes:
        if dhcp.gateway and all(destination != "0.0.0.0/0" for destination, _ in routes):
            routes.append(("0.0.0.0/0", dhcp.gateway))
        pairs = ",".join(f"{destination},{nexthop}" for destination, nexthop in routes)
        options.append(f"option:classless-static-route,{pairs}")
    return options


def network_xml(
    network_id: str,
    subnet: Subnet,
    address: str,
    hosts: dict[str, str] | None = None,
    uuid: str | None = None,
) -> str:
    """The libvirt network of an aiostack network: its bridge holding ``address`` (the host's DHCP
    port's, or the gateway's where the subnet has no DHCP), DHCP for ``hosts`` (``{mac: ip}``) with
    the subnet's options; ``uuid``: the libvirt network's own, when it is defined anew."""
    cidr = ipaddress.ip_network(subnet["cidr"])
    network = ET.Element("network")
    ET.SubElement(network, "name").text = libvirt_network_name(network_id)
    if uuid is not None:
        ET.SubElement(network, "uuid").text = uuid
    ET.SubElement(network, "forward", mode="open")
    ET.SubElement(network, "bridge", name=bridge_name(network_id), stp="off", delay="0")
    ip = ET.SubElement(network, "ip", address=address, prefix=str(cidr.prefixlen))
    dhcp = ET.SubElement(ip, "dhcp")
    for mac, host_ip in {KEEPER_MAC: address, **(hosts or {})}.items():
        ET.SubElement(dhcp, "host", mac=mac, ip=host_ip)
    options = ET.SubElement(network, f"{{{DNSMASQ_NS}}}options")
    values = dhcp_option_values(SubnetDhcp.of(subnet), metadata_via=address)
    for value in values:
        ET.SubElement(options, f"{{{DNSMASQ_NS}}}option", value=f"dhcp-option={value}")
    return ET.tostring(network, encoding="unicode")


def network_address(xml: str) -> str | None:
    """The address a libvirt network's bridge holds, given the network's XML."""
    ip = ET.fromstring(xml).find("ip")
    return None if ip is None else ip.get("address")


def defined_as_wanted(xml: str, address: str) -> bool:
    """A libvirt network's XML has its bridge at ``address`` and is ``open`` (an earlier version's
    were at the gateway, or isolated by libvirt's own iptables rules)."""
    forward = ET.fromstring(xml).find("forward")
    return network_address(xml) == address and forward is not None and forward.get("mode") == "open"


def dhcp_host_xml(mac: str, ip: str) -> str:
    return f"<host mac='{mac}' ip='{ip}'/>"


class GuestNetworks:
    """The libvirt networks of one node and their DHCP host entries."""

    def __init__(
        self,
        run: Callable[..., Awaitable[Any]],
        net: NetForNodes,
        *,
        metadata: MetadataService | None = None,
        connection: Callable[[], libvirt.virConnect] | None = None,
    ) -> None:
        """``run``: how a libvirt call is made (``Hypervisor.virt``: off the loop where it may
        block); ``net``: the net actor, as this node (it gives the host's DHCP port on a network);
        ``metadata``: served on each network's bridge while it has guests; ``connection``: the
        open connection, for ``restore``."""
        self._run = run
        self.net = net
        self._metadata = metadata
        self._connection = connection
        self._locks: dict[str, asyncio.Lock] = {}
        self._isolated: frozenset[str] | None = None
        """The bridges the isolation table holds (None: not known yet)."""
        self._isolation_lock = asyncio.Lock()

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
                address = await self._address(network_id, subnet, instance_uuid)
                libvirt_network = await self._ensure(conn, network_id, subnet, address)
            except AiostackError as exc:
                reason = f"no DHCP port on network {network_id}: {exc}"
                log.warning("%s; guest falls back to user-mode networking", reason)
                return Attachment(None, "user", reason)
            except libvirt.libvirtError as exc:
                reason = f"no bridge for network {network_id}: {exc.get_error_message()}"
                log.warning("%s; guest falls back to user-mode networking", reason)
                await self._give_back_unbridged(conn, network_id)
                return Attachment(None, "user", reason)
            for fixed_ip in port["fixed_ips"]:
                if fixed_ip["subnet_id"] == subnet["id"]:
                    await self._set_host(libvirt_network, port["mac_address"], fixed_ip["ip_address"])
            await self._serve_metadata(network_id)
        return Attachment(libvirt_network_name(network_id), "bridge")

    async def _address(self, network_id: str, subnet: Subnet, instance_uuid: str) -> str:
        """The address the network's bridge holds: the host's DHCP port's on the subnet (taken on
        first use), or the gateway's where the subnet has no DHCP.

        :raises AiostackError: the net actor gave no DHCP port (or has no address of the subnet on it).
        """
        if not subnet["enable_dhcp"]:
            return subnet.get("gateway_ip") or str(next(ipaddress.ip_network(subnet["cidr"]).hosts()))
        port = await self.net.dhcp_port(network_id=network_id, instance_uuid=instance_uuid)
        for fixed_ip in port["fixed_ips"]:
            if fixed_ip["subnet_id"] == subnet["id"]:
                return fixed_ip["ip_address"]
        raise NotFound(f"the DHCP port {port['id']} holds no address of subnet {subnet['id']}")

    async def _give_back_unbridged(self, conn: libvirt.virConnect, network_id: str) -> None:
        """Give the DHCP port back if the network has no libvirt network here (none could be made);
        the error that said so is the one to tell, not this one's."""
        try:
            await self._run(conn.networkLookupByName, libvirt_network_name(network_id))
        except libvirt.libvirtError:
            with contextlib.suppress(AiostackError):
                await self.net.release_dhcp_port(network_id=network_id)

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
                await self._remove_if_unused(conn, network)

    async def _unused(self, network: Any) -> bool:
        """No guest holds a DHCP entry on the network, and no running domain is plugged into it."""
        if set(await self._dhcp_hosts(network)) - {KEEPER_MAC}:
            return False
        return not (await self._run(network.isActive) and await self._run(network.listAllPorts, 0))

    async def _remove_if_unused(self, conn: libvirt.virConnect, network: Any) -> None:
        if not await self._unused(network):
            return
        name = await self._run(network.name)
        network_id = network_id_of(name)
        if network_id is not None:
            # first: a network whose port the net actor did not take back stays, unused, and the
            # node's next start gives the port back and removes it (``restore``)
            await self.net.release_dhcp_port(network_id=network_id)
        if self._metadata is not None and network_id is not None:
            await self._metadata.stop(network_id)
        if await self._run(network.isActive):
            await self._run(network.destroy)
        await self._run(network.undefine)
        log.info("removed libvirt network %s: no guest uses it any more", name)
        await self._isolate(conn)

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
            with contextlib.suppress(AiostackError):  # a network of another deployment: none here
                await self.net.release_dhcp_port(network_id=network_id_of(name) or "")
            return True
        return False

    async def _ensure(self, conn: libvirt.virConnect, network_id: str, subnet: Subnet, address: str) -> Any:
        """The network defined (again, if its bridge holds another address) and running."""
        name = libvirt_network_name(network_id)
        try:
            network = await self._run(conn.networkLookupByName, name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise
            network = await self._run(conn.networkDefineXML, network_xml(network_id, subnet, address))
            log.info("defined libvirt network %s for %s at %s", name, subnet["cidr"], address)
        network = await self._readdress(conn, network, network_id, subnet, address)
        if not await self._run(network.isActive):
            try:
                await self._run(network.create)
            except libvirt.libvirtError as exc:
                if not await self._reclaim_bridge_of(conn, exc):
                    await self._run(network.undefine)
                    raise
                await self._run(network.create)
            await self._run(network.setAutostart, 1)
        if bridge_name(network_id) not in (self._isolated or ()):  # not on every guest's way in
            await self._isolate(conn)
        return network

    async def _isolate(self, conn: libvirt.virConnect) -> None:
        """Isolate the bridges of the aiostack networks running here (``firewall.isolate``), when
        they are not the ones isolated last.

        :raises firewall.FirewallError: nft refused.
        """
        async with self._isolation_lock:
            running = await self._run(conn.listAllNetworks, libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)
            names = [await self._run(network.name) for network in running]
            ids = [network_id for name in names if (network_id := network_id_of(name)) is not None]
            bridges = frozenset(bridge_name(network_id) for network_id in ids)
            if bridges != self._isolated:
                await firewall.isolate(bridges)
                self._isolated = bridges

    async def _readdress(
        self, conn: libvirt.virConnect, network: Any, network_id: str, subnet: Subnet, address: str
    ) -> Any:
        """Define the network anew with its bridge at ``address``, ``open``, its DHCP entries kept,
        if its definition is otherwise (an earlier version's: at the gateway, or isolated). No
        running guest plugged in: at once (started again if it ran); else the definition waits
        for the network's next start."""
        defined = await self._run(network.XMLDesc, libvirt.VIR_NETWORK_XML_INACTIVE)
        if defined_as_wanted(defined, address):
            return network
        hosts = {mac: ip for mac, ip in (await self._dhcp_hosts(network)).items() if mac != KEEPER_MAC}
        xml = network_xml(network_id, subnet, address, hosts, uuid=await self._run(network.UUIDString))
        active = await self._run(network.isActive)
        if active and await self._run(network.listAllPorts, 0):
            await self._run(conn.networkDefineXML, xml)
            log.warning(
                "libvirt network %s is defined again (open, at %s); its running bridge stays as it"
                " was (at %s) until it next starts",
                libvirt_network_name(network_id),
                address,
                network_address(defined),
            )
            return network
        if active:
            await self._run(network.destroy)
        log.info(
            "libvirt network %s is defined again (open), from %s to %s",
            libvirt_network_name(network_id),
            network_address(defined),
            address,
        )
        network = await self._run(conn.networkDefineXML, xml)
        if active:
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
        """At the node's start: an aiostack network no guest uses whose DHCP port this host still
        holds goes, and the port is given back; one an earlier version defined at another address
        is defined anew; the metadata service
        on every running one that has guests (libvirt starts the persistent networks themselves:
        autostart)."""
        if self._connection is None:
            return
        conn = self._connection()
        try:
            networks = await self._run(conn.listAllNetworks, 0)
        except libvirt.libvirtError as exc:
            log.warning("no network restored: the networks could not be listed: %s", exc)
            return
        for network in networks:
            network_id = network_id_of(await self._run(network.name))
            if network_id is None:
                continue
            async with self._locks.setdefault(network_id, asyncio.Lock()):
                try:
                    if await self._unused(network):
                        # one whose DHCP port was not given back (the net actor did not answer
                        # then); any other may be another deployment's, on its way to its guests
                        if await self.net.release_dhcp_port(network_id=network_id):
                            await self._remove_if_unused(conn, network)
                        continue
                    network = await self._restore_address(conn, network, network_id)
                except (AiostackError, libvirt.libvirtError, firewall.FirewallError) as exc:
                    log.warning("libvirt network of %s kept as it is: %s", network_id, exc)
            if await self._run(network.isActive):
                await self._serve_metadata(network_id)
        try:
            await self._isolate(conn)
        except (libvirt.libvirtError, firewall.FirewallError) as exc:
            log.error("the bridges of this host's networks are not isolated: %s", exc)

    async def _restore_address(self, conn: libvirt.virConnect, network: Any, network_id: str) -> Any:
        """The network at the address its subnet wants, found through one of its guests' ports
        (the net actor answers this host only about its own instances)."""
        hosts = {mac: ip for mac, ip in (await self._dhcp_hosts(network)).items() if mac != KEEPER_MAC and ip}
        if not hosts:
            return network
        guest_ip = next(iter(hosts.values()))
        port = (await self.net.instance_ports_at(network_id=network_id, ip_address=guest_ip))[0]
        subnet_id = next(f["subnet_id"] for f in port["fixed_ips"] if f["ip_address"] == guest_ip)
        subnet = await self.net.get_subnet(subnet_id=subnet_id, instance_uuid=port["device_id"])
        address = await self._address(network_id, subnet, port["device_id"])
        return await self._readdress(conn, network, network_id, subnet, address)

    async def dhcp_entries(self, conn: libvirt.virConnect, network_id: str) -> dict[str, str]:
        """``{mac: ip}`` served on an aiostack network's libvirt network ({} when there is none)."""
        try:
            network = await self._run(conn.networkLookupByName, libvirt_network_name(network_id))
        except libvirt.libvirtError:
            return {}
        return {mac: ip for mac, ip in (await self._dhcp_hosts(network)).items() if mac != KEEPER_MAC}
