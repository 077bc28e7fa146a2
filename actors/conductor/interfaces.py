"""NICs hot-plugged into an instance and taken out again (Nova's os-interface).

The net actor's bindings are the truth the domain follows: an attach binds the port to the
instance first (``InstancePorts.attach_port``: the project's port, or a new one on a network), then
has the instance's node plug it (``Node.attach_interface``); a detach gives the port back first
(``detach_port``: deleted if it was made for the instance, else unbound and kept), then has the node
take the NIC out (``Node.detach_interface``). A node that fails the attach has the port given back
(and the NIC taken out, in case its answer was what got lost).

Each is an instance action (``attach_interface``, ``detach_interface``) started before the first
step, with its steps (``bind_port``, ``plugged``, ``unbind_port``, ``unplugged``, ``reconciled``),
and finished when the domain matches the ports. One the conductor did not see through (it died,
or the node was away) stays unfinished: the watch (``settle_stalled``) makes the domain match the
instance's ports once its host is up (plugs a bound port the domain lacks, takes out a NIC whose
port is gone) and finishes it. So a crash between the steps leaves no port bound to an instance
whose domain lacks it, and no NIC without its port; ``aiostack audit`` reports either.
Each change is published as ``instance.interface_attached`` / ``instance.interface_detached``
with the instance's new ``addresses``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Final

from actors.conductor.core import Core
from actors.conductor.schema import UNFINISHED_ACTIONS, InstanceRow
from actors.conductor.states import Action
from api.conductor import InterfaceAttachment, ServerInterfaces, addresses_of
from api.net import COMPUTE_OWNER, Port, PortInUse
from bus import TRANSIENT_ERRORS, AiostackError, Conflict, InvalidRequest, NotFound, request_scope
from runtime.stamps import stamp, utcnow
from runtime.store import to_json

log = logging.getLogger(__name__)

INTERFACE_ACTIONS: Final = (Action.ATTACH_INTERFACE, Action.DETACH_INTERFACE)


def attachment_of(port: Port) -> InterfaceAttachment:
    return {
        "port_id": port["id"],
        "net_id": port["network_id"],
        "mac_addr": port["mac_address"],
        "port_state": port["status"],
        "fixed_ips": [
            {"subnet_id": fixed["subnet_id"], "ip_address": fixed["ip_address"]}
            for fixed in port["fixed_ips"]
        ],
    }


class Interfaces(ServerInterfaces):
    """Serves ``api.conductor.ServerInterfaces``; ``settle_stalled`` is the watch's part."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.in_hand: Counter[str] = Counter()
        """Instances whose attaches and detaches this conductor is seeing through now (how many)."""
        self._settled_at = 0.0

    async def list_interfaces(self, *, instance_uuid: str) -> list[InterfaceAttachment]:
        await self.core.row(instance_uuid)
        return [attachment_of(port) for port in await self._ports(instance_uuid)]

    async def get_interface(self, *, instance_uuid: str, port_id: str) -> InterfaceAttachment:
        await self.core.row(instance_uuid)
        port = await self.core.net.get_port(port_id=port_id)
        if port["device_id"] != instance_uuid:
            raise NotFound(f"Instance {instance_uuid} does not have a port with id {port_id}")
        return attachment_of(port)

    async def attach_interface(
        self,
        *,
        instance_uuid: str,
        port_id: str | None = None,
        network_id: str | None = None,
        fixed_ip: str | None = None,
    ) -> InterfaceAttachment:
        if port_id is not None and network_id is not None:
            raise InvalidRequest("Must not input both network_id and port_id")
        if fixed_ip is not None and network_id is None:
            raise InvalidRequest("Must input network_id when request IP address")
        row = await self._changeable(instance_uuid, Action.ATTACH_INTERFACE)
        host = row["host"]
        assert host is not None
        self.in_hand[instance_uuid] += 1
        try:
            await self.core.start_action(instance_uuid, Action.ATTACH_INTERFACE)
            try:
                port = await self.core.net.attach_port(
                    instance_uuid=instance_uuid,
                    project_id=row["project_id"],
                    host=host,
                    network_id=network_id,
                    port_id=port_id,
                    fixed_ip=fixed_ip,
                )
            except PortInUse:
                await self._failed(instance_uuid, Action.ATTACH_INTERFACE, f"port {port_id} is in use")
                raise PortInUse(f"Port {port_id} is still in use.") from None
            except BaseException as exc:
                await self._failed(instance_uuid, Action.ATTACH_INTERFACE, f"{type(exc).__name__}: {exc}")
                raise
            await self.core.record_step(
                instance_uuid, Action.ATTACH_INTERFACE, "bind_port", host, "Success", port["id"]
            )
            try:
                await self.core.node(host).attach_interface(instance_uuid=instance_uuid, port=port)
            except BaseException as exc:
                await self._undo_attach(row, port, exc)
                raise
            await self.core.record_step(
                instance_uuid, Action.ATTACH_INTERFACE, "plugged", host, "Success", port["mac_address"]
            )
            await self._announce(instance_uuid, "instance.interface_attached")
            await self.core.finish_action(instance_uuid, Action.ATTACH_INTERFACE, "Success")
        finally:
            self._let_go(instance_uuid)
        return attachment_of(port)

    async def _undo_attach(self, row: InstanceRow, port: Port, error: BaseException) -> None:
        """The node did not say it plugged the port: give the port back, and have the NIC taken out
        in case the node's answer was what got lost. A node that cannot be asked leaves the action
        open for the watch (the port is given back already: the domain follows)."""
        uuid, host = row["uuid"], row["host"]
        assert host is not None
        failure = f"{type(error).__name__}: {error}"
        await self.core.net.detach_port(instance_uuid=uuid, port_id=port["id"])
        await self.core.record_step(uuid, Action.ATTACH_INTERFACE, "unbind_port", host, "Success", failure)
        try:
            await self.core.node(host).detach_interface(instance_uuid=uuid, mac_address=port["mac_address"])
        except AiostackError as exc:
            log.warning(
                "instance %s: NIC %s left for the watch to take out: %s", uuid, port["mac_address"], exc
            )
            return
        await self.core.finish_action(uuid, Action.ATTACH_INTERFACE, "Error", failure)

    async def detach_interface(self, *, instance_uuid: str, port_id: str) -> None:
        row = await self._changeable(instance_uuid, Action.DETACH_INTERFACE)
        host = row["host"]
        assert host is not None
        attached = {port["id"]: port for port in await self._ports(instance_uuid)}
        if port_id not in attached:
            raise NotFound(f"Port id {port_id} could not be found.")
        self.in_hand[instance_uuid] += 1
        try:
            await self.core.start_action(instance_uuid, Action.DETACH_INTERFACE)
            released = await self.core.net.detach_port(instance_uuid=instance_uuid, port_id=port_id)
            if released is None:  # given back meanwhile (a detach at the same time)
                await self.core.finish_action(instance_uuid, Action.DETACH_INTERFACE, "Success")
                return
            await self.core.record_step(
                instance_uuid, Action.DETACH_INTERFACE, "unbind_port", host, "Success", port_id
            )
            await self.core.node(host).detach_interface(
                instance_uuid=instance_uuid, mac_address=released["mac_address"]
            )
            await self.core.record_step(
                instance_uuid, Action.DETACH_INTERFACE, "unplugged", host, "Success", released["mac_address"]
            )
            await self._announce(instance_uuid, "instance.interface_detached")
            await self.core.finish_action(instance_uuid, Action.DETACH_INTERFACE, "Success")
        finally:
            self._let_go(instance_uuid)

    def _let_go(self, instance_uuid: str) -> None:
        self.in_hand[instance_uuid] -= 1
        if not self.in_hand[instance_uuid]:
            del self.in_hand[instance_uuid]

    async def _changeable(self, instance_uuid: str, action: Action) -> InstanceRow:
        """The instance, if it may have a NIC plugged or taken out now.

        :raises Conflict: locked, no host, or not active, paused or stopped with no task.
        """
        row = await self.core.row(instance_uuid)
        self.core.check_lock(row)
        self.core.require(row, action)
        if row["host"] is None:
            raise Conflict(f"Cannot '{action}' instance {instance_uuid}: it has no host")
        return row

    async def _ports(self, instance_uuid: str) -> list[Port]:
        """The instance's ports (those a compute device holds: the build's and the attached)."""
        return [
            port
            for port in await self.core.net.list_ports(device_id=instance_uuid)
            if port["device_owner"] == COMPUTE_OWNER
        ]

    async def _failed(self, instance_uuid: str, action: Action, failure: str) -> None:
        await self.core.record_step(instance_uuid, action, "bind_port", None, "Error", failure)
        await self.core.finish_action(instance_uuid, action, "Error", failure)

    async def _announce(self, instance_uuid: str, event_type: str) -> None:
        """Write the instance's ``addresses`` as its ports are now; publish ``event_type`` with it."""
        ports = await self._ports(instance_uuid)
        names = {}
        for network_id in {port["network_id"] for port in ports}:
            names[network_id] = (await self.core.net.get_network(network_id=network_id))["name"]
        row = await self.core.store.fetchone(
            "UPDATE instances SET addresses = ?, updated_at = ?, version = version + 1"
            " WHERE uuid = ? AND deleted = 0 RETURNING *",
            (to_json(addresses_of(ports, names)), utcnow(), instance_uuid),
            row=InstanceRow,
        )
        if row is not None:
            await self.core.publish(row, event_type)

    # -- the watch's part ---------------------------------------------------------------------

    async def settle_stalled(self) -> None:
        """Start settling the attaches and detaches no conductor is seeing through (it died, or the
        node was away): the instance's domain is made to match its ports once its host is up."""
        now = time.time()
        if now - self._settled_at < self.core.ack_timeout:
            return
        self._settled_at = now
        started_before = stamp(datetime.fromtimestamp(now - self.core.ack_timeout, UTC))
        rows = await self.core.store.fetchall(UNFINISHED_ACTIONS, (*INTERFACE_ACTIONS, started_before))
        for stalled in rows:
            uuid = stalled["instance_uuid"]
            if not self.in_hand[uuid]:
                self.in_hand[uuid] += 1
                self.core.spawn(
                    self._settle_logged(uuid, Action(stalled["action"])), name=f"settle-nic-{uuid}"
                )

    async def _settle_logged(self, instance_uuid: str, action: Action) -> None:
        """``_settle``, a failure logged (the next round tries again)."""
        try:
            with request_scope():
                await self._settle(instance_uuid, action)
        except TRANSIENT_ERRORS as exc:
            log.info("instance %s: its %s waits: %s", instance_uuid, action, exc)
        except AiostackError as exc:
            log.warning("instance %s: its %s could not be settled yet: %s", instance_uuid, action, exc)
        finally:
            self._let_go(instance_uuid)

    async def _settle(self, instance_uuid: str, action: Action) -> None:
        row = await self.core.fresh(instance_uuid)
        if row is None or row["host"] is None:
            await self.core.finish_action(instance_uuid, action, "Error", "the instance is gone")
            return
        host = row["host"]
        if row["task_state"] is not None or not self.core.hosts_alive.get(host):
            return  # its task, or its host's return, comes first
        node = self.core.node(host)
        ports = {port["mac_address"]: port for port in await self._ports(instance_uuid)}
        try:
            macs = set(await node.list_interfaces(instance_uuid=instance_uuid))
        except NotFound:
            await self.core.finish_action(
                instance_uuid, action, "Error", f"the instance has no domain on {host}"
            )
            return
        plugged, unplugged = sorted(set(ports) - macs), sorted(macs - set(ports))
        for mac in plugged:
            await node.attach_interface(instance_uuid=instance_uuid, port=ports[mac])
        for mac in unplugged:
            await node.detach_interface(instance_uuid=instance_uuid, mac_address=mac)
        done = f"plugged {plugged}, unplugged {unplugged}"
        await self.core.record_step(instance_uuid, action, "reconciled", host, "Success", done)
        if action is Action.ATTACH_INTERFACE:
            bound = await self._step_detail(instance_uuid, action, "bind_port")
            given_back = await self._step_detail(instance_uuid, action, "unbind_port")
            attached = bool(plugged) or (bound is not None and given_back is None)
            outcome = "a port was attached" if attached else "no port was attached"
            await self._announce(instance_uuid, "instance.interface_attached")
        else:
            attached = (
                bool(unplugged) or await self._step_detail(instance_uuid, action, "unbind_port") is not None
            )
            outcome = "the port was detached" if attached else "no port was detached"
            await self._announce(instance_uuid, "instance.interface_detached")
        result = "Success" if attached else "Error"
        await self.core.finish_action(
            instance_uuid, action, result, f"finished by the conductor's watch: {outcome}"
        )
        log.info("instance %s: %s settled (%s): %s", instance_uuid, action, outcome, done)

    async def _step_detail(self, instance_uuid: str, action: Action, event: str) -> str | None:
        """The details of a step of the instance's latest ``action`` (None: no such step)."""
        row = await self.core.store.fetchone(
            "SELECT e.details FROM instance_action_events e WHERE e.event = ? AND e.action_id ="
            " (SELECT MAX(id) FROM instance_actions WHERE instance_uuid = ? AND action = ?)",
            (event, instance_uuid, action),
        )
        return None if row is None else str(row["details"])
