"""A node whose libvirt connection drops reconnects, re-registers its callbacks and catches up.

A private libvirtd (its own socket directory and /run/libvirt) serves libvirt's test driver over
``test+unix://``; the tests drop the node's connection with virt-admin, or kill libvirtd,
and change domains behind the node's back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from api.node import Node
from bus import Bus, decode
from node.actor import NodeActor


class Libvirtd:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: asyncio.subprocess.Process | None = None
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "libvirtd.conf"
        config.write_text(
            f'unix_sock_dir = "{directory}"\nunix_sock_rw_perms = "0700"\nauth_unix_rw = "none"\n'
            f'auth_unix_ro = "none"\nlog_outputs = "3:file:{directory}/libvirtd.log"\n'
        )

    @property
    def socket(self) -> Path:
        return self.directory / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"test+unix:///default?socket={self.socket}"

    async def start(self) -> None:
        # Its own /run/libvirt (a mount namespace), so its drivers do not meet the system
        # libvirtd's pid files when one runs too (the QEMU tests start one).
        self.process = await asyncio.create_subprocess_exec(
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mkdir -p /run/libvirt && mount -t tmpfs aiostack-test /run/libvirt && exec libvirtd "$@"',
            "libvirtd",
            "--config",
            str(self.directory / "libvirtd.conf"),
            "--pid-file",
            str(self.directory / "libvirtd.pid"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(30):
            while await virsh(self.uri, "version") != 0:
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def _admin(self, *args: str) -> str:
        admin = f"libvirtd:///system?socket={self.directory}/libvirt-admin-sock"
        process = await asyncio.create_subprocess_exec(
            "virt-admin", "-c", admin, *args, stdout=asyncio.subprocess.PIPE
        )
        output, _ = await process.communicate()
        return output.decode()

    async def disconnect_clients_of(self, pid: int) -> None:
        """Drop the daemon's clients in process ``pid`` (virt-admin client-disconnect)."""
        for line in (await self._admin("srv-clients-list", "libvirtd")).splitlines()[2:]:
            if not line.split():
                continue
            client = line.split()[0]
            info = " ".join((await self._admin("client-info", "libvirtd", client)).split())
            if f"unix_process_id: {pid}" in info:
                await self._admin("client-disconnect", "libvirtd", client)


async def virsh(uri: str, *args: str) -> int:
    process = await asyncio.create_subprocess_exec(
        "virsh", "-c", uri, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, errors = await process.communicate()
    if process.returncode:
        print("virsh", *args, "failed:", errors.decode().strip())
    return process.returncode


@pytest.fixture
async def libvirtd(tmp_path) -> AsyncIterator[Libvirtd]:
    """A private libvirtd, with a second client holding test:///default open (the test driver
    forgets its domains when its last client leaves)."""
    daemon = Libvirtd(tmp_path / "libvirtd")
    await daemon.start()
    keeper = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"import libvirt, sys; c = libvirt.open({daemon.uri!r}); print('ok', flush=True); sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert (await keeper.stdout.readline()).strip() == b"ok"
    yield daemon
    keeper.kill()
    await keeper.wait()
    if daemon.process is not None and daemon.process.returncode is None:
        await daemon.kill()


@pytest.fixture
async def node_on_libvirtd(start_actor, config, libvirtd: Libvirtd) -> NodeActor:
    for actor in (IdentityActor, SchedulerActor, ConductorActor, ImageActor, NetActor, VolumeActor):
        await start_actor(actor, config)
    node = await start_actor(NodeActor, config, host="remote-1", libvirt_uri=libvirtd.uri)
    await node.report_capacity()
    return node


async def boot_and_wait_active(api, events: list[dict]) -> str:
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    status, body = await api.post(
        "/compute/v2.1/servers",
        {"server": {"name": "survivor", "imageRef": images["images"][0]["id"], "flavorRef": "1"}},
    )
    assert status == 202, body
    server_id = body["server"]["id"]
    await wait_for(events, lambda e: e["id"] == server_id and e["type"] == "instance.active")
    return server_id


async def wait_for(events: list[dict], predicate, timeout: float = 30) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            for event in events:
                if predicate(event):
                    return event
            await asyncio.sleep(0.02)


async def record_events(bus: Bus) -> list[dict]:
    events: list[dict] = []

    async def on_event(msg) -> None:
        events.append(decode(msg.data).body)

    await bus.subscribe(bus.subject("evt.>"), on_event)
    await bus.flush()
    return events


async def test_a_change_missed_while_disconnected_is_published(
    api, gateway_url, node_on_libvirtd: NodeActor, libvirtd: Libvirtd, bus: Bus
) -> None:
    events = await record_events(bus)
    await api.login()
    server_id = await boot_and_wait_active(api, events)
    hidden = libvirtd.socket.with_name("libvirt-sock.hidden")
    os.rename(libvirtd.socket, hidden)  # the node cannot come back until the socket is back
    try:
        await libvirtd.disconnect_clients_of(os.getpid())
        async with asyncio.timeout(10):
            while node_on_libvirtd.hypervisor.conn is not None:
                await asyncio.sleep(0.02)
        assert await virsh(f"test+unix:///default?socket={hidden}", "destroy", server_id) == 0
    finally:
        os.rename(hidden, libvirtd.socket)
    reconciled = await wait_for(events, lambda e: e["id"] == server_id and e["type"] == "domain.reconciled")
    assert reconciled["state"]["event"] == "STOPPED"
    shutoff = await wait_for(events, lambda e: e["id"] == server_id and e["type"] == "instance.shutoff")
    assert shutoff["state"]["status"] == "SHUTOFF"
    assert (await api.get(f"/compute/v2.1/servers/{server_id}"))[1]["server"]["status"] == "SHUTOFF"
    assert (await api.post(f"/compute/v2.1/servers/{server_id}/action", {"os-start": None}))[0] == 202
    await wait_for(
        events,
        lambda e: (
            e["id"] == server_id
            and e["type"] == "instance.active"
            and e["state"]["cause"]["domain_event"] == "STARTED"
            and e is not shutoff
            and events.index(e) > events.index(shutoff)
        ),
    )


async def test_a_restarted_libvirtd_gets_the_domains_back_and_events_flow_again(
    api, gateway_url, node_on_libvirtd: NodeActor, libvirtd: Libvirtd, bus: Bus
) -> None:
    events = await record_events(bus)
    await api.login()
    server_id = await boot_and_wait_active(api, events)
    seen_before = len(events)
    await libvirtd.kill()
    await libvirtd.start()
    restarted = await wait_for(
        events,
        lambda e: (
            e["id"] == server_id
            and e["type"] == "domain.lifecycle"
            and e["state"]["event"] == "STARTED"
            and events.index(e) >= seen_before
        ),
    )
    assert restarted["state"]["host"] == "remote-1"
    domains = await Node.client(bus, host="remote-1").list_domains()
    assert {d["uuid"]: d["state"] for d in domains}[server_id] == 1
    assert (await api.get(f"/compute/v2.1/servers/{server_id}"))[1]["server"]["status"] == "ACTIVE"
    assert (await api.post(f"/compute/v2.1/servers/{server_id}/action", {"os-stop": None}))[0] == 202
    await wait_for(events, lambda e: e["id"] == server_id and e["type"] == "instance.shutoff")
