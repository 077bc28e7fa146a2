"""Tenant networks across hosts: each aiostack network one VXLAN segment, as Neutron's
linuxbridge agent and DHCP agent make them on every host.

On a node started with an overlay address (``--overlay LOCAL_IP``, Neutron's ``local_ip``),
a network a guest of this host joins gets, on this host:

* a Linux bridge ``brq<network id>`` holding the guests' taps (``<interface type='bridge'>``),
  and a VXLAN device ``vxlan-<VNI>`` (the network's ``provider:segmentation_id``) over the
  interface holding LOCAL_IP: multicast group ``VXLAN_GROUP``, UDP 4789, MAC learning. The
  guests of one network on every host share one L2 segment; guests of different networks
  share nothing, whatever their addresses. The guests' MTU is the uplink's less the 50 bytes
  VXLAN adds (and never above the network's ``mtu``).
* DHCP: the host's DHCP port on the network (``NetForNodes.dhcp_port``) in a network namespace
  of its own (``<this host's namespace>-dhcp-<network id>``, or ``aiostack-dhcp-<network id>``
  on a host's own network): a veth into the bridge with the port's MAC and address, and
  dnsmasq there answering only the MACs of this host's ports (``static``, given on its command
  line: it runs as ``nobody``), each with its fixed IP, so every host that has guests on a
  network serves them and only them; it is started again when they change. The host's own
  network never holds an address of a tenant subnet. What the subnet tells its hosts goes with
  each lease (``dhcp_options``): the MTU, the gateway as router, ``dns_nameservers`` (option 6)
  and, with the route to the metadata service, ``host_routes`` as classless static routes
  (option 121, RFC 3442, which a client takes in
  place of the router option: so the default route through the gateway is one of them). They
  are read afresh at each attach (``dhcp.json``), so a subnet's change reaches a host's DHCP
  when a guest of the network next starts there.
* the metadata service (``node.metadata``): 169.254.169.254/32 on the DHCP port's end in the
  namespace, and a listener there (made by a thread that enters the namespace; served by the
  node's event loop), which finds a request's guest by its source address on the network as on
  a libvirt network's bridge; DHCP routes it through the DHCP port's address (option 121, so
  the default route through the gateway goes with it), as Neutron's isolated metadata does.

Without an overlay address (``local_ip`` None: the LXC node, ``node.lxc``) a network is the
bridge and its DHCP alone, with no VXLAN device: its guests are this host's only, and their MTU is
the network's.

What a network is on this host is kept in ``<state>/overlay/<network id>/`` (``network.json``,
the subnet's DHCP options ``dhcp.json``, the MACs served, dnsmasq's pid): ``restore``, at the
node's start, makes the bridges, VXLAN devices and DHCP of recorded networks again (after the
host rebooted) and restarts their dnsmasq. When the last guest of the host leaves a network,
all of it goes, and the DHCP port is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import libvirt

from api.net import NetForNodes, Network, Port, Subnet
from node.domain import xml_safe
from node.metadata import MetadataService
from node.netns import NETNS_DIR
from node.networks import Attachment, SubnetDhcp, dhcp_option_values
from runtime.processes import ToolFailed, run_tool, running_pid, stop_pid

log = logging.getLogger(__name__)

VXLAN_GROUP = "239.1.1.1"
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
"""Bytes VXLAN adds to each frame (outer Ethernet, IP, UDP and VXLAN headers)."""


def bridge_for(network_id: str) -> str:
    """Linux allows 15 characters for an interface name."""
    return f"brq{network_id.replace('-', '')[:11]}"


def vxlan_for(vni: int) -> str:
    return f"vxlan-{vni}"


@dataclass(frozen=True, slots=True)
class Segment:
    """One network as this host serves it (``network.json``)."""

    network_id: str
    vni: int
    mtu: int
    cidr: str
    gateway: str | None
    dhcp_port_id: str
    dhcp_mac: str
    dhcp_ip: str

    @property
    def dhcp_link(self) -> tuple[str, str]:
        """The DHCP port's veth: its end on the bridge, its end in the DHCP namespace."""
        return f"tap{self.dhcp_port_id[:11]}", f"ns-{self.dhcp_port_id[:11]}"


def dhcp_options(mtu: int, dhcp: SubnetDhcp, metadata_via: str | None = None) -> list[str]:
    """dnsmasq's ``--dhcp-option`` arguments (``node.networks.dhcp_option_values``): the MTU, the
    router, the name servers and the classless static routes (the metadata service through
    ``metadata_via``, the host routes, the default route through the gateway), when there are
    any."""
    return [
        f"--dhcp-option={value}" for value in dhcp_option_values(dhcp, mtu=mtu, metadata_via=metadata_via)
    ]


def dnsmasq_command(segment: Segment, dhcp: SubnetDhcp, hosts: dict[str, str], pid_file: Path) -> list[str]:
    """The dnsmasq serving a network's DHCP on this host (run in its namespace): only ``hosts``
    (``{mac: ip}``), each its address, with the subnet's options and the route to the metadata
    service in the namespace."""
    cidr = ipaddress.ip_network(segment.cidr)
    return [
        "dnsmasq", "--conf-file=/dev/null", "--no-hosts", "--no-resolv", "--port=0", "--leasefile-ro",
        "--bind-interfaces", f"--interface={segment.dhcp_link[1]}", "--except-interface=lo",
        f"--dhcp-range={cidr.network_address},static,{cidr.netmask},86400s", f"--pid-file={pid_file}",
        *dhcp_options(segment.mtu, dhcp, segment.dhcp_ip),
        *(f"--dhcp-host={mac},{ip}" for mac, ip in sorted(hosts.items())),
    ]  # fmt: skip


class OverlayError(ToolFailed):
    """A command that builds the overlay failed (its output says why)."""


_run = functools.partial(run_tool, error=OverlayError)
"""A tool run to its end: :raises OverlayError: it failed."""


async def _link_exists(name: str, namespace: str | None = None) -> bool:
    argv = ("ip", *(("-n", namespace) if namespace else ()), "link", "show", "dev", name)
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait() == 0


def own_namespace_name() -> str | None:
    """The name (under /run/netns) of the network namespace this process runs in, if it has one."""
    own = os.stat("/proc/self/ns/net").st_ino
    with contextlib.suppress(OSError):
        for entry in NETNS_DIR.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_ino == own:
                    return entry.name
    return None


async def uplink_of(local_ip: str) -> tuple[str, int]:
    """The interface holding ``local_ip`` and its MTU."""
    for link in json.loads(await _run("ip", "-j", "addr", "show")):
        if any(info.get("local") == local_ip for info in link.get("addr_info", [])):
            return link["ifname"], int(link.get("mtu", 1500))
    raise OverlayError(f"no interface of this host holds the overlay address {local_ip}")


class OverlayNetworks:
    """The VXLAN segments, bridges and DHCP servers of one node's networks."""

    def __init__(
        self,
        net: NetForNodes,
        state_dir: Path,
        local_ip: str | None,
        group: str = VXLAN_GROUP,
        *,
        metadata: MetadataService | None = None,
    ) -> None:
        self.net = net
        """The net actor, as this node (it gives the host's DHCP port on a network)."""
        self.metadata = metadata
        """Served in each network's DHCP namespace while it has guests here."""
        self.local_ip = local_ip
        self.group = group
        self.dir = state_dir / "overlay"
        own = own_namespace_name()
        self.namespace_prefix = f"{own}-dhcp-" if own else "aiostack-dhcp-"
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, network_id: str) -> asyncio.Lock:
        return self._locks.setdefault(network_id, asyncio.Lock())

    def namespace_for(self, network_id: str) -> str:
        return f"{self.namespace_prefix}{network_id}"

    async def attach(
        self,
        conn: libvirt.virConnect | None,
        network: Network,
        subnet: Subnet | None,
        port: Port,
        instance_uuid: str,
    ) -> Attachment:
        """Make the network's segment and DHCP on this host (once), then serve the port's MAC its IP."""
        if subnet is None:
            return Attachment(None, "user", "the network has no IPv4 subnet to serve over DHCP")
        async with self._lock(network["id"]):
            segment = await self._segment(network, subnet, instance_uuid)
            self._record_dhcp(network["id"], SubnetDhcp.of(subnet))
            await self._ensure(segment)
            ips = [f["ip_address"] for f in port["fixed_ips"] if f["subnet_id"] == subnet["id"]]
            hosts = self._hosts(network["id"])
            hosts[port["mac_address"].lower()] = ips[0] if ips else ""
            await self._write_hosts(segment, {mac: ip for mac, ip in hosts.items() if ip})
            await self._serve_metadata(segment)
        return Attachment(
            None, "bridge", bridge=bridge_for(network["id"]), mtu=segment.mtu, segmentation_id=segment.vni
        )

    async def release(self, conn: libvirt.virConnect | None, xml: str) -> None:
        """Stop serving the NICs of a (stopped) domain, given its XML; a network no guest of this
        host uses any more goes from this host, and its DHCP port is given back."""
        bridges = {bridge_for(path.name): path.name for path in self._recorded()}
        for interface in ET.fromstring(xml_safe(xml)).iter("interface"):
            source, mac = interface.find("source"), interface.find("mac")
            if interface.get("type") != "bridge" or source is None or mac is None:
                continue
            network_id = bridges.get(source.get("bridge", ""))
            if network_id is None:
                continue
            async with self._lock(network_id):
                segment = self._load(network_id)
                hosts = self._hosts(network_id)
                hosts.pop(mac.get("address", "").lower(), None)
                if hosts or segment is None:
                    if segment is not None:
                        await self._write_hosts(segment, hosts)
                    continue
                await self._remove(network_id, segment)

    async def dhcp_entries(self, conn: libvirt.virConnect, network_id: str) -> dict[str, str]:
        """``{mac: ip}`` this host serves on a network ({} when it serves none)."""
        return self._hosts(network_id)

    async def restore(self) -> None:
        """Make the bridges, VXLAN devices and DHCP of every recorded network again (a host that
        rebooted has none; on a running host this changes nothing)."""
        for path in self._recorded():
            segment = self._load(path.name)
            if segment is None:
                continue
            async with self._lock(segment.network_id):
                try:
                    await self._ensure(segment)
                    await self._write_hosts(segment, self._hosts(segment.network_id))
                except OverlayError as exc:
                    log.error("overlay: network %s not restored: %s", segment.network_id, exc)
                    continue
                await self._serve_metadata(segment)

    # -- the segment on this host -------------------------------------------------------------

    def _recorded(self) -> list[Path]:
        return sorted(path for path in self.dir.glob("*") if (path / "network.json").exists())

    def _load(self, network_id: str) -> Segment | None:
        try:
            return Segment(**json.loads((self.dir / network_id / "network.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _record_dhcp(self, network_id: str, dhcp: SubnetDhcp) -> None:
        (self.dir / network_id / "dhcp.json").write_text(json.dumps(asdict(dhcp)))

    def _dhcp(self, segment: Segment) -> SubnetDhcp:
        """The subnet's DHCP options as last recorded (a network recorded before they were: its
        gateway only)."""
        try:
            recorded = json.loads((self.dir / segment.network_id / "dhcp.json").read_text())
            return SubnetDhcp(
                gateway=recorded["gateway"],
                dns_nameservers=recorded["dns_nameservers"],
                host_routes=[(destination, nexthop) for destination, nexthop in recorded["host_routes"]],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return SubnetDhcp(gateway=segment.gateway, dns_nameservers=[], host_routes=[])

    def _hosts(self, network_id: str) -> dict[str, str]:
        try:
            text = (self.dir / network_id / "hosts").read_text()
        except OSError:
            return {}
        return dict(line.split(",", 1) for line in text.splitlines() if "," in line)

    async def _segment(self, network: Network, subnet: Subnet, instance_uuid: str) -> Segment:
        """What the network is on this host: recorded, or made now with the host's DHCP port."""
        known = self._load(network["id"])
        if known is not None:
            return known
        mtu = network["mtu"]
        if self.local_ip is not None:
            _, uplink_mtu = await uplink_of(self.local_ip)
            mtu = min(mtu, uplink_mtu - VXLAN_OVERHEAD)
        port = await self.net.dhcp_port(network_id=network["id"], instance_uuid=instance_uuid)
        address = next(f["ip_address"] for f in port["fixed_ips"] if f["subnet_id"] == subnet["id"])
        segment = Segment(
            network_id=network["id"],
            vni=network["provider:segmentation_id"],
            mtu=mtu,
            cidr=subnet["cidr"],
            gateway=subnet.get("gateway_ip") or None,
            dhcp_port_id=port["id"],
            dhcp_mac=port["mac_address"],
            dhcp_ip=address,
        )
        directory = self.dir / network["id"]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "network.json").write_text(json.dumps(asdict(segment)))
        return segment

    async def _ensure(self, segment: Segment) -> None:
        """The bridge and its VXLAN device, the DHCP namespace and its dnsmasq (each made only if missing)."""
        bridge, vxlan = bridge_for(segment.network_id), vxlan_for(segment.vni)
        if not await _link_exists(bridge):
            await _run("ip", "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            await _run("ip", "link", "set", bridge, "mtu", str(segment.mtu), "up")
        if self.local_ip is not None and not await _link_exists(vxlan):
            uplink, _ = await uplink_of(self.local_ip)
            await _run(
                "ip", "link", "add", vxlan, "type", "vxlan", "id", str(segment.vni),
                "group", self.group, "dev", uplink, "local", self.local_ip, "dstport", str(VXLAN_PORT),
            )  # fmt: skip
            await _run("ip", "link", "set", vxlan, "mtu", str(segment.mtu), "master", bridge, "up")
            log.info("overlay: network %s is VNI %d on %s", segment.network_id, segment.vni, bridge)
        namespace = self.namespace_for(segment.network_id)
        if not (NETNS_DIR / namespace).exists():
            await _run("ip", "netns", "add", namespace)
            await _run("ip", "-n", namespace, "link", "set", "lo", "up")
        outside, inside = segment.dhcp_link
        if not await _link_exists(inside, namespace):
            if await _link_exists(outside):
                await _run("ip", "link", "del", outside)
            await _run(
                "ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace
            )
            prefix = ipaddress.ip_network(segment.cidr).prefixlen
            await _run(
                "ip",
                "-n",
                namespace,
                "link",
                "set",
                inside,
                "address",
                segment.dhcp_mac,
                "mtu",
                str(segment.mtu),
            )
            await _run("ip", "-n", namespace, "addr", "add", f"{segment.dhcp_ip}/{prefix}", "dev", inside)
            await _run("ip", "-n", namespace, "link", "set", inside, "up")
            await _run("ip", "link", "set", outside, "mtu", str(segment.mtu), "master", bridge, "up")

    async def _serve_metadata(self, segment: Segment) -> None:
        """The metadata service in the network's DHCP namespace; a guest boots without it if it fails."""
        if self.metadata is None:
            return
        namespace = self.namespace_for(segment.network_id)
        try:
            await self.metadata.serve_in_namespace(segment.network_id, namespace, segment.dhcp_link[1])
        except OSError as exc:
            log.warning("overlay: no metadata service on network %s: %s", segment.network_id, exc)

    def _dnsmasq_pid(self, network_id: str) -> int | None:
        """The pid of the network's running dnsmasq, if it runs."""
        return running_pid(self.dir / network_id / "dnsmasq.pid", b"dnsmasq", network_id.encode())

    async def _write_hosts(self, segment: Segment, hosts: dict[str, str]) -> None:
        """Record the MACs this host serves (``hosts``: ``mac,ip`` per line, the node's own), then
        run dnsmasq anew with them. It gets them on its command line, not from the file: it drops
        to ``nobody``, which cannot read the node's owner-only directory. A client asking during
        the restart asks again (udhcpc: every 2 s)."""
        directory = self.dir / segment.network_id
        partial = directory / "hosts.new"
        partial.write_text("".join(f"{mac},{ip}\n" for mac, ip in sorted(hosts.items())))
        partial.replace(directory / "hosts")
        await self._stop_dnsmasq(segment.network_id)
        namespace = self.namespace_for(segment.network_id)
        command = dnsmasq_command(segment, self._dhcp(segment), hosts, directory / "dnsmasq.pid")
        await _run("ip", "netns", "exec", namespace, *command)
        log.info(
            "overlay: DHCP for network %s at %s serves %d guests",
            segment.network_id,
            segment.dhcp_ip,
            len(hosts),
        )

    async def _stop_dnsmasq(self, network_id: str) -> None:
        pid = self._dnsmasq_pid(network_id)
        if pid is not None:
            await stop_pid(pid)

    async def _remove(self, network_id: str, segment: Segment) -> None:
        """The network leaves this host: dnsmasq, the metadata service, the namespace, the VXLAN
        device, the bridge and the DHCP port."""
        await self._stop_dnsmasq(network_id)
        if self.metadata is not None:
            await self.metadata.stop(network_id)
        namespace = self.namespace_for(network_id)
        if (NETNS_DIR / namespace).exists():
            await _run("ip", "netns", "del", namespace)  # its veth end goes, and the peer with it
        links = (vxlan_for(segment.vni),) if self.local_ip is not None else ()
        for link in (*links, bridge_for(network_id)):
            if await _link_exists(link):
                await _run("ip", "link", "del", link)
        await self.net.release_dhcp_port(network_id=network_id)
        shutil.rmtree(self.dir / network_id, ignore_errors=True)
        log.info("overlay: network %s left this host (no guest of it here any more)", network_id)
