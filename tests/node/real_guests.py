"""Real QEMU guests booted through the whole stack for node tests: the cloud they run in (the
actors in this process, a node on the system libvirtd), and what a failed test leaves removed."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from aiostack.client import Client
from deploy.testguest import TestGuest, register_test_guest
from node.actor import NodeActor
from node.libvirtd import SYSTEM_URI, ensure_libvirtd
from tests.helpers import DEMO_PASSWORD

GUEST_DEADLINE = 120.0


@dataclass
class QemuCloud:
    client: Client
    node: NodeActor
    images: dict[str, str]

    async def console_until(self, server_id: str, pattern: str, *, count: int = 1) -> re.Match[str]:
        """Poll the console log through the API until ``pattern`` has matched ``count`` times."""
        output = ""
        try:
            async with asyncio.timeout(GUEST_DEADLINE):
                while True:
                    output = await self.client.console_output(server_id)
                    matches = list(re.finditer(pattern, output))
                    if len(matches) >= count:
                        return matches[count - 1]
                    await asyncio.sleep(0.5)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} (x{count}) on the console:\n{output[-3000:]}") from None

    async def dhcp_entries(self, network_id: str) -> dict[str, str]:
        return await self.node.networks.dhcp_entries(self.node.hypervisor.connection, network_id)


async def qemu_cloud_of(
    start_actor: Any, config: Any, gateway_url: str, test_guest: TestGuest, **node_options: Any
) -> AsyncIterator[QemuCloud]:
    """Every actor, and a node ``qemu-1`` on the system libvirtd (started if nothing answers), in
    this process; the test guest registered as the demo user's images."""
    await asyncio.to_thread(ensure_libvirtd)
    for actor_class in (IdentityActor, SchedulerActor, ConductorActor, ImageActor, NetActor, VolumeActor):
        await start_actor(actor_class, config, secure=True)
    node = await start_actor(
        NodeActor, config, host="qemu-1", libvirt_uri=SYSTEM_URI, secure=True, **node_options
    )
    assert isinstance(node, NodeActor)
    await node.report_capacity()
    async with Client(gateway_url) as client:
        await client.login("demo", DEMO_PASSWORD, "demo")
        images = await register_test_guest(client, test_guest, name="test-guest")
        try:
            yield QemuCloud(client, node, images)
        finally:
            await remove_guests(node)


async def remove_guests(node: NodeActor) -> None:
    """What a failed test left on the system libvirtd must not run on into the next tests: the
    builds still in the node's hands are waited for first (one that ended after the removal would
    leave its guest running)."""
    if node.hypervisor.conn is None:
        return
    async with asyncio.timeout(GUEST_DEADLINE):
        while any(node.records.working.values()):
            await asyncio.sleep(0.2)
    for uuid in await node.records.uuids():
        await node.builder.remove_domain(uuid)


def qemu_running(instance_uuid: str) -> bool:
    return (
        subprocess.run(["pgrep", "-f", f"guest=instance-{instance_uuid}"], capture_output=True).returncode
        == 0
    )
