"""Security groups on a node's guests: what the net actor says this host enforces, applied with
``node.firewall``'s nftables tables.

A node with real guests (QEMU: its NICs are taps on bridges) keeps its tables in line with the
net actor's answer to ``NetForNodes.security_for_host``:

* at start, before the reconciler starts guests again (after a host reboot there are no tables):
  asked again until the net actor answers (``until_applied``), as the reconciler waits for the
  conductor;
* on a notice on ``SECURITY_CHANGED`` (``net.secgroups.<host>``, which only this host's user may
  hear), coalesced: one refresh runs, and the notices arriving meanwhile make one more;
* synchronously in the build path, after the ports are allocated and plugged and before the
  domain starts (a new port's chains exist before its first frame), and after a delete;
* when a live migration's destination prepares: the arriving instance's ports are enforced here
  (``arriving``) while still bound to the source, before the guest can resume here;
* after a NATS reconnect and every ``resync_interval`` (core NATS delivers a notice at most once).

The taps and bridges come from the domain definitions the node stores: each bridged NIC is named
``domain.tap_name(port id)`` and sits on its overlay bridge or its libvirt network's bridge
(``networks.bridge_name``), so the ruleset names a guest's tap before the guest starts. A host left
with no filtered port has no tables; a node that stops keeps them (its guests run on, filtered).

br_netfilter hands bridged IPv4/IPv6 to the ``inet`` hooks only with
``net.bridge.bridge-nf-call-iptables``/``-ip6tables`` = 1 (per network namespace): set at start.
A test-driver node has no taps and never touches nft.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from api.net import SECURITY_CHANGED, NetForNodes
from bus import AiostackError, BadMessage, Bus, InvalidRequest
from node import firewall
from node.domain import tap_name, xml_safe
from node.networks import bridge_name, network_id_of
from node.records import Records

log = logging.getLogger(__name__)

BRIDGE_NF_SYSCTLS = (
    Path("/proc/sys/net/bridge/bridge-nf-call-iptables"),
    Path("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
)
RECONNECT_CHECK_INTERVAL = 1.0
"""How often the node looks whether its NATS connection came back (a notice may have been lost)."""


def plugged_taps(xmls: Iterable[str]) -> dict[str, str]:
    """``{tap: bridge}`` of the bridged NICs in these domain definitions (those with a tap name)."""
    taps = {}
    for xml in xmls:
        for interface in ET.fromstring(xml_safe(xml)).iter("interface"):
            source, target = interface.find("source"), interface.find("target")
            if source is None or target is None or not target.get("dev"):
                continue
            network_id = network_id_of(source.get("network", ""))
            bridge = bridge_name(network_id) if network_id else source.get("bridge")
            if bridge:
                taps[target.get("dev", "")] = bridge
    return taps


def enable_bridge_netfilter() -> None:
    """Bridged traffic through the inet hooks (loads ``br_netfilter`` if its sysctls are missing).

    :raises firewall.FirewallError: it cannot be enabled.
    """
    if not BRIDGE_NF_SYSCTLS[0].exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    try:
        for path in BRIDGE_NF_SYSCTLS:
            if path.read_text().strip() != "1":
                path.write_text("1\n")
    except OSError as exc:
        raise firewall.FirewallError(f"bridged traffic cannot be filtered: {exc}") from exc


class SecurityGroups:
    """The node's part that enforces security groups (see the module's docstring)."""

    def __init__(
        self,
        bus: Bus,
        host: str,
        *,
        net: NetForNodes,
        records: Records,
        spawn: Callable[[Coroutine[Any, Any, Any], str], object],
        resync_interval: float = 60.0,
    ) -> None:
        self.bus = bus
        self.host = host
        self.net = net
        self.records = records
        self.spawn = spawn
        self.resync_interval = resync_interval
        self.enforcing = False
        """Whether this node filters (it has real guests, and started)."""
        self._lock = asyncio.Lock()
        self._asked = 0
        self._applied = 0
        self._notice_waiting = False
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Enable bridge netfilter, listen for notices, resync from now on (``until_applied``: the
        first refresh).

        :raises firewall.FirewallError: bridged traffic cannot be filtered here.
        """
        await asyncio.to_thread(enable_bridge_netfilter)
        self.enforcing = True
        subject = self.bus.subject(SECURITY_CHANGED.subject(host=self.host))
        self._subscription = await self.bus.subscribe(subject, self._on_notice)
        self.spawn(self._resync_forever(), "security-groups")

    async def until_applied(self) -> None:
        """Refresh until one succeeds, asking again while the net actor is away: what the node's
        guests wait for before they are started again (after a host reboot there are no tables)."""
        for attempt in itertools.count():
            if not self.enforcing:
                return
            try:
                await self.refresh()
                return
            except (AiostackError, firewall.FirewallError) as exc:
                log.warning("node %s: security groups not applied yet (asking again): %s", self.host, exc)
                await asyncio.sleep(min(0.5 * 2**attempt, 10.0))

    async def stop(self) -> None:
        """Stop hearing notices; the tables stay (the guests run on, filtered)."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        self.enforcing = False

    async def refresh(self) -> None:
        """Make the tables what the net actor says now; returns once a refresh begun after this call
        is done (concurrent callers share one). No-op on a node that does not filter.

        :raises AiostackError: the net actor did not answer. :raises firewall.FirewallError: nft refused.
        """
        if self.enforcing:
            await self._refresh(self._ask())

    def _ask(self) -> int:
        """A new request for a refresh: its number (a refresh covers every one asked before it began)."""
        self._asked += 1
        return self._asked

    async def _refresh(self, asked: int) -> None:
        async with self._lock:
            if self._applied >= asked:
                return
            covers = self._asked
            self._notice_waiting = False  # a notice from now on needs a refresh after this one
            await self._apply()
            self._applied = covers

    async def refresh_logged(self, why: str) -> None:
        """``refresh``, a failure logged (the next notice or resync tries again)."""
        try:
            await self.refresh()
        except (AiostackError, firewall.FirewallError) as exc:
            log.warning("node %s: security groups not refreshed after %s: %s", self.host, why, exc)

    async def _apply(self) -> None:
        security = await self.net.security_for_host(arriving=sorted(self.records.arriving))
        taps = plugged_taps(row["xml"] for row in await self.records.rows())
        nics = {
            port["port_id"]: (taps[tap], tap)
            for port in security["ports"]
            if (tap := tap_name(port["port_id"])) in taps
        }
        ruleset = firewall.ruleset_of(security, nics)
        if any(port.port_security_enabled for port in ruleset.ports):
            await firewall.apply(self.host, ruleset)
        else:
            await firewall.remove(self.host)

    async def _on_notice(self, msg: Msg) -> None:
        try:
            SECURITY_CHANGED.parse(msg.data, self.bus.max_bytes)
        except (BadMessage, InvalidRequest) as exc:
            log.warning("node %s: ignoring a malformed security group notice: %s", self.host, exc)
            return
        if not self._notice_waiting:  # else a refresh yet to begin covers this notice too
            self._notice_waiting = True
            self.spawn(self._refresh_for_notice(self._ask()), "security-notice")

    async def _refresh_for_notice(self, asked: int) -> None:
        try:
            await self._refresh(asked)
        except (AiostackError, firewall.FirewallError) as exc:
            log.warning("node %s: security groups not refreshed after a notice: %s", self.host, exc)

    async def _resync_forever(self) -> None:
        """Every ``resync_interval``, and as soon as NATS reconnects: refresh."""
        loop = asyncio.get_running_loop()
        reconnects = self.bus.nc.stats["reconnects"]
        due = loop.time() + self.resync_interval
        while True:
            await asyncio.sleep(RECONNECT_CHECK_INTERVAL)
            reconnected = self.bus.nc.stats["reconnects"] != reconnects
            if reconnected or loop.time() >= due:
                reconnects = self.bus.nc.stats["reconnects"]
                due = loop.time() + self.resync_interval
                await self.refresh_logged("a NATS reconnect" if reconnected else "the periodic resync")
