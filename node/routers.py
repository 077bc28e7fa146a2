"""Routers on a node, as Neutron's L3 agent makes them: each router a network namespace of its own,
with SNAT for what its tenant networks send out and floating IPs reached through it.

The net actor gives each host serving routers their plans (``NetForNodes.routers_for_host``:
``RouterPlan``, all of them each time) and tells it when one changes (``ROUTERS_CHANGED``). A
``RouterAgent`` makes this host match them, converging from whatever it finds (a router half made
before a crash, a plan that changed), and removes the routers it made that are no longer planned.
A router whose ``admin_state_up`` is false is not served (Neutron's agent removes it too).

A router is, on this host:

* a namespace ``qrouter-<router id>`` (``<this host's namespace>-qrouter-<router id>`` on a host
  that runs in a network namespace of its own, as ``node/overlay.py`` names its DHCP namespaces),
  with ``ip_forward`` on;
* per interface, a veth ``qr-<port id[:11]>`` in it with the port's MAC, ``ip_address/prefix``
  and MTU; its peer ``tqr<port id[:11]>`` joins the tenant network's bridge on the host
  (``bridge_name(network id)``) when that bridge exists: tenant bridges are the node's networking's
  (libvirt networks or the overlay), never made here, and a refresh plugs the peer in once one is;
* the external gateway, a veth ``qg-<port id[:11]>`` whose peer ``tqg<port id[:11]>`` joins the
  external (flat) network's bridge, which is made here when absent (a plain bridge, no address)
  and removed once no router of this host uses it and nothing else is plugged into it (only if
  it was made here); the router's default route goes through the external subnet's
  ``gateway_ip`` when it has one, and each floating IP is an address (/32) of ``qg-``, so the
  namespace answers ARP for it; an address newly added is announced (a gratuitous ARP, busybox's
  ``arping -U``), so a floating IP moved from another router is reached here at once;
* one nftables table (``NAT_TABLE``), replaced whole in one ``nft -f`` transaction as
  ``node/firewall.py`` does: DNAT of each floating IP to its fixed IP (prerouting, and output for
  the router itself), SNAT of each fixed IP with a floating IP back to it, then, when
  ``enable_snat``, SNAT of the interfaces' subnets to the gateway's address, all only for what
  leaves through ``qg-``: traffic between two interfaces of the router is routed without NAT.
  Its forward chain drops what still flows through a NAT the plan no longer has (a connection
  to a floating IP since disassociated), since conntrack keeps a flow's NAT while it lasts.

What the agent made is recorded in ``<state>/routers/``: a file per router (written before its
namespace is made, so a crash leaves nothing untracked) and one per external bridge it made. Only
recorded namespaces are ever removed, so namespaces of other hosts or tools are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from api.net import FloatingIpPlan, HostRouters, RouterPlan, RouterPort
from node.netns import NETNS_DIR
from node.overlay import own_namespace_name
from runtime.processes import ToolFailed, run_tool

log = logging.getLogger(__name__)

NAT_TABLE = "aiostack_router"
"""The nftables table (family ``ip``) in each router's namespace."""
RESYNC_INTERVAL = 60.0
"""Seconds between two refreshes nobody asked for (a missed notice, a router broken by hand)."""
INSIDE_PREFIXES = ("qr-", "qg-")


def interface_names(kind: str, port_id: str) -> tuple[str, str]:
    """A router port's veth: its end in the router's namespace (``qr-…``, or ``qg-…`` for the
    gateway) and its end on the host's bridge (``tqr…``, ``tqg…``), 14 characters each."""
    return f"{kind}-{port_id[:11]}", f"t{kind}{port_id[:11]}"


def address_of(port: RouterPort) -> str:
    """The port's address with its subnet's prefix length (``10.0.0.1/24``)."""
    return f"{port['ip_address']}/{ipaddress.ip_network(port['cidr'], strict=False).prefixlen}"


def served_floating_ips(plan: RouterPlan) -> list[FloatingIpPlan]:
    """The floating IPs the router makes (none without an external gateway to reach them by)."""
    return list(plan["floating_ips"]) if plan["gateway"] is not None else []


def render(plan: RouterPlan) -> str:
    """The ``nft -f`` script that makes the router's NAT table exactly ``plan``, in one transaction."""
    lines = [f"table ip {NAT_TABLE}", f"delete table ip {NAT_TABLE}", f"table ip {NAT_TABLE} {{"]
    dnat, snat, stale = [], [], []
    gateway = plan["gateway"]
    if gateway is not None:
        qg = interface_names("qg", gateway["port_id"])[0]
        out = f'oifname "{qg}"'
        fips = []
        for floating in sorted(served_floating_ips(plan), key=lambda f: f["floating_ip_address"]):
            fip, fixed = floating["floating_ip_address"], floating["fixed_ip_address"]
            dnat.append(f"ip daddr {fip} dnat to {fixed}")
            snat.append(f"{out} ip saddr {fixed} snat to {fip}")
            fips.append(fip)
        stale = _stale_flows(qg, fips, [*fips, gateway["ip_address"]] if plan["enable_snat"] else fips)
        subnets = sorted(
            {
                str(ipaddress.ip_network(port["cidr"], strict=False))
                for port in plan["interfaces"]
                if ipaddress.ip_network(port["cidr"], strict=False).version == 4
            }
        )
        if plan["enable_snat"] and subnets:
            snat.append(f"{out} ip saddr {{ {', '.join(subnets)} }} snat to {gateway['ip_address']}")
    for chain, hook, priority, statements in (
        ("prerouting", "prerouting", "dstnat", dnat),
        ("output", "output", "-100", dnat),
        ("postrouting", "postrouting", "srcnat", snat),
    ):
        lines.append(f"  chain {chain} {{ type nat hook {hook} priority {priority}; policy accept;")
        lines += [f"    {statement}" for statement in statements]
        lines.append("  }")
    lines.append("  chain forward { type filter hook forward priority filter; policy accept;")
    lines += [f"    {statement}" for statement in stale]
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _stale_flows(qg: str, fips: list[str], snat_addresses: list[str]) -> list[str]:
    """The forward chain's statements dropping what still flows through a NAT the plan no longer
    has (connections to a floating IP since disassociated, or leaving as it): conntrack keeps a
    flow's NAT until the flow ends, where Neutron's agent deletes the entries (``conntrack -D``)."""

    def none_of(match: str, addresses: list[str]) -> str:
        return f"{match} != {{ {', '.join(addresses)} }} " if addresses else ""

    statements = [f"ct status dnat {none_of('ct original ip daddr', fips)}drop"]
    for device in ("iifname", "oifname"):
        nat = none_of("ct reply ip daddr", snat_addresses)
        statements.append(f'{device} "{qg}" ct status snat {nat}drop')
    return statements


class RouterError(ToolFailed):
    """A command that makes a router failed (its output says why)."""


_run = functools.partial(run_tool, error=RouterError)
"""A tool run to its end: :raises RouterError: it failed."""


async def _announce(namespace: str, device: str, address: str) -> None:
    """A gratuitous ARP for an IPv4 address just added (a floating IP that moved here from another
    router: the neighbours' caches point at the old one's MAC), as Neutron's L3 agent sends;
    best effort."""
    if ipaddress.ip_address(address).version != 4:
        return
    try:
        await _run(
            "ip", "netns", "exec", namespace,
            "busybox", "arping", "-U", "-c", "1", "-I", device, "-s", address, address,
        )  # fmt: skip
    except (RouterError, OSError) as exc:
        log.warning("routers: no gratuitous ARP for %s on %s: %s", address, device, exc)


class RouterAgent:
    """The routers of one host (Neutron's L3 agent): ``refresh()`` makes them what the net actor
    plans, ``notice()`` asks for that from a ``ROUTERS_CHANGED``, ``run()`` does it on notices and
    every ``RESYNC_INTERVAL``."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[HostRouters]],
        bridge_name: Callable[[str], str],
        state_dir: Path,
        *,
        host_namespace: str | None = None,
    ) -> None:
        """``fetch``: the host's plans (``NetForNodes.routers_for_host``); ``bridge_name``: a network's
        bridge on this host; ``state_dir``: the node's; ``host_namespace``: the network namespace the
        host's bridges are in (None: the one this process runs in), whose name prefixes the routers'."""
        self._fetch = fetch
        self._bridge_name = bridge_name
        self.dir = state_dir / "routers"
        own = host_namespace or own_namespace_name()
        self.namespace_prefix = f"{own}-qrouter-" if own else "qrouter-"
        self._host_ip = ("ip", "-n", host_namespace) if host_namespace else ("ip",)
        self._lock = asyncio.Lock()
        self._asked = 0
        self._served = 0
        # invariant: _served <= _asked; every refresh() asked at or before _served has been served
        # by a convergence that began after it was asked
        self._noticed = asyncio.Event()

    def namespace_for(self, router_id: str) -> str:
        return f"{self.namespace_prefix}{router_id}"

    # -- when to converge ---------------------------------------------------------------------

    async def refresh(self) -> None:
        """Fetch the plans and make every router of this host match them; returns once a
        convergence begun after the call has finished (concurrent calls share one: one runs, at
        most one waits).

        :raises RouterError: some router could not be made or removed (the others were).
        :raises: what ``fetch`` raises (the net actor unreachable): nothing was changed.
        """
        self._asked += 1
        asked = self._asked
        async with self._lock:
            if self._served >= asked:
                return
            serving = self._asked
            await self._converge(await self._fetch())
            self._served = serving

    def notice(self) -> None:
        """A ``ROUTERS_CHANGED`` for this host arrived: ``run()`` refreshes."""
        self._noticed.set()

    async def run(self, resync: float = RESYNC_INTERVAL) -> None:
        """Refresh now, then on each notice and every ``resync`` seconds, until cancelled; a failed
        refresh is logged and tried again at the next."""
        while True:
            self._noticed.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("routers: refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._noticed.wait(), resync)

    # -- converging ---------------------------------------------------------------------------

    async def _converge(self, host: HostRouters) -> None:
        wanted = {plan["router_id"]: plan for plan in host["routers"] if plan["admin_state_up"]}
        failures = []
        for router_id, plan in wanted.items():
            try:
                await self._realize(plan)
            except RouterError as exc:
                log.error("routers: router %s not made: %s", router_id, exc)
                failures.append(f"router {router_id}: {exc}")
        for router_id in self._recorded() - wanted.keys():
            try:
                await self._remove(router_id)
            except RouterError as exc:
                log.error("routers: router %s not removed: %s", router_id, exc)
                failures.append(f"router {router_id}: {exc}")
        used = {
            self._bridge_name(plan["gateway"]["network_id"])
            for plan in wanted.values()
            if plan["gateway"] is not None
        }
        for bridge in self._made_bridges() - used:
            try:
                await self._remove_external_bridge(bridge)
            except RouterError as exc:
                failures.append(f"bridge {bridge}: {exc}")
        if failures:
            raise RouterError("; ".join(failures))

    async def _realize(self, plan: RouterPlan) -> None:
        """Make one router what ``plan`` says, whatever is there already."""
        router_id = plan["router_id"]
        namespace = self.namespace_for(router_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{router_id}.json").write_text(json.dumps({"namespace": namespace}))
        if not (NETNS_DIR / namespace).exists():
            await _run("ip", "netns", "add", namespace)
            log.info("routers: router %s is namespace %s", router_id, namespace)
        router_ip = ("ip", "-n", namespace)
        await _run(*router_ip, "link", "set", "lo", "up")
        await _run("ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ports = {
            interface_names("qr", port["port_id"]): (port, [address_of(port)]) for port in plan["interfaces"]
        }
        gateway = plan["gateway"]
        if gateway is not None:
            floating = [f"{f['floating_ip_address']}/32" for f in served_floating_ips(plan)]
            ports[interface_names("qg", gateway["port_id"])] = (gateway, [address_of(gateway), *floating])
            await self._ensure_external_bridge(self._bridge_name(gateway["network_id"]))
        links = {link["ifname"]: link for link in json.loads(await _run(*router_ip, "-j", "addr", "show"))}
        planned = {inside for inside, _ in ports}
        for name in links:
            if name.startswith(INSIDE_PREFIXES) and name not in planned:
                await _run(*router_ip, "link", "del", name)
        for (inside, outside), (port, addresses) in ports.items():
            await self._plug(namespace, (inside, outside), port, addresses, links.get(inside))
        await self._route(namespace, gateway)
        await _run("ip", "netns", "exec", namespace, "nft", "-f", "-", stdin=render(plan))

    async def _plug(
        self,
        namespace: str,
        veth: tuple[str, str],
        port: RouterPort,
        addresses: list[str],
        link: dict[str, Any] | None,
    ) -> None:
        """One port's veth (its inside and outside ends): made if missing, its MAC, MTU and
        addresses as planned (``link``: the inside end as found), its host end on the network's
        bridge if the bridge exists."""
        router_ip = ("ip", "-n", namespace)
        inside, outside = veth
        mtu = str(port["mtu"])
        if link is None:
            if await self._link(self._host_ip, outside) is not None:
                await _run(*self._host_ip, "link", "del", outside)
            await _run(
                *self._host_ip,
                "link",
                "add",
                outside,
                "type",
                "veth",
                "peer",
                "name",
                inside,
                "netns",
                namespace,
            )
            link = {"address": "", "addr_info": []}
        mac = port["mac_address"].lower()
        if link["address"].lower() != mac:
            await _run(*router_ip, "link", "set", inside, "down")
            await _run(*router_ip, "link", "set", inside, "address", mac)
        await _run(*router_ip, "link", "set", inside, "mtu", mtu, "up")
        await _run(*self._host_ip, "link", "set", outside, "mtu", mtu, "up")
        bridge = self._bridge_name(port["network_id"])
        host_end = await self._link(self._host_ip, outside)
        if host_end is not None and host_end.get("master") != bridge:
            if await self._link(self._host_ip, bridge) is not None:
                await _run(*self._host_ip, "link", "set", outside, "master", bridge)
            else:
                log.info("routers: bridge %s of network %s not here yet", bridge, port["network_id"])
        have = {
            f"{info['local']}/{info['prefixlen']}"
            for info in link["addr_info"]
            if info.get("scope") != "link" and "local" in info
        }
        for address in have - set(addresses):
            await _run(*router_ip, "addr", "del", address, "dev", inside)
        for address in addresses:
            if address not in have:
                await _run(*router_ip, "addr", "add", address, "dev", inside)
                await _announce(namespace, inside, address.split("/")[0])

    async def _route(self, namespace: str, gateway: RouterPort | None) -> None:
        """The default route through the external subnet's gateway (none without one)."""
        router_ip = ("ip", "-n", namespace)
        if gateway is not None and gateway["gateway_ip"]:
            qg = interface_names("qg", gateway["port_id"])[0]
            await _run(*router_ip, "route", "replace", "default", "via", gateway["gateway_ip"], "dev", qg)
        elif json.loads(await _run(*router_ip, "-j", "-4", "route", "show", "default")):
            await _run(*router_ip, "-4", "route", "del", "default")

    async def _ensure_external_bridge(self, bridge: str) -> None:
        """The external network's bridge: made (and recorded as made here) if absent."""
        if await self._link(self._host_ip, bridge) is None:
            (self.dir / "bridges").mkdir(parents=True, exist_ok=True)
            (self.dir / "bridges" / bridge).touch()
            await _run(
                *self._host_ip,
                "link",
                "add",
                bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            )
            log.info("routers: external bridge %s made", bridge)
        await _run(*self._host_ip, "link", "set", bridge, "up")

    async def _remove_external_bridge(self, bridge: str) -> None:
        """An external bridge made here that no router of this host uses goes, unless something
        else is plugged into it (a guest's tap, a VXLAN device): it goes once nothing is."""
        if await self._link(self._host_ip, bridge) is not None:
            if json.loads(await _run(*self._host_ip, "-j", "link", "show", "master", bridge)):
                return
            await _run(*self._host_ip, "link", "del", bridge)
        (self.dir / "bridges" / bridge).unlink(missing_ok=True)
        log.info("routers: external bridge %s removed (no router of this host uses it)", bridge)

    async def _remove(self, router_id: str) -> None:
        """A router this host made goes: its veths, then its namespace (and its table with it)."""
        record = self.dir / f"{router_id}.json"
        try:
            namespace = json.loads(record.read_text())["namespace"]
        except (OSError, ValueError, KeyError):
            namespace = self.namespace_for(router_id)
        if (NETNS_DIR / namespace).exists():
            router_ip = ("ip", "-n", namespace)
            for link in json.loads(await _run(*router_ip, "-j", "link", "show")):
                if link["ifname"].startswith(INSIDE_PREFIXES):
                    await _run(*router_ip, "link", "del", link["ifname"])
            await _run("ip", "netns", "del", namespace)
        record.unlink(missing_ok=True)
        log.info("routers: router %s removed from this host", router_id)

    # -- what is here -------------------------------------------------------------------------

    def _recorded(self) -> set[str]:
        return {path.stem for path in self.dir.glob("*.json")}

    def _made_bridges(self) -> set[str]:
        return {path.name for path in (self.dir / "bridges").glob("*")}

    @staticmethod
    async def _link(ip: Sequence[str], name: str) -> dict[str, Any] | None:
        """The link ``name`` as ``ip -j link show`` gives it (None: there is none)."""
        try:
            found = json.loads(await _run(*ip, "-j", "link", "show", "dev", name))
        except RouterError:
            return None
        return found[0] if found else None
