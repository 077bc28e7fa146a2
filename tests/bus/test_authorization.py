"""The bus is locked down: a real nats-server with the generated users refuses what a process may not do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from api.conductor import ConductorForNodes
from api.identity import IdentityAdmin, Tokens
from bus import Actor, Bus, CallTimeout, EmbeddedNatsServer
from bus.api import ServiceAPI, call
from bus.bus import BusAuthFailed, read_credentials
from deploy.credentials import ADMIN, Credentials, Principal, prepare

PROCESSES = [
    *(Principal(kind, kind) for kind in ("identity", "conductor", "scheduler", "image", "net")),
    Principal("volume", "volume", ("local",)),
    Principal("gateway", "gateway"),
    Principal("node-1", "node", ("node-1",)),
    Principal("node-2", "node", ("node-2",)),
]


@dataclass
class Secured:
    server: EmbeddedNatsServer
    credentials: Credentials
    prefix: str


@dataclass
class Connection:
    """A raw nats-py connection as one user, keeping what the server reported to its error callback."""

    nc: NatsClient
    errors: list[str] = field(default_factory=list)

    async def violation(self, text: str, timeout: float = 5.0) -> str:
        """The permissions violation mentioning ``text``, once the server has reported it."""
        async with asyncio.timeout(timeout):
            while True:
                found = [
                    e
                    for e in self.errors
                    if "permissions violation" in e.lower() and text.lower() in e.lower()
                ]
                if found:
                    return found[0]
                await asyncio.sleep(0.01)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    credentials = prepare(tmp_path, PROCESSES, "aiostack")
    async with EmbeddedNatsServer(tmp_path, authorization=credentials.authorization) as server:
        yield Secured(server, credentials, "aiostack")


@pytest.fixture
async def connect_as(secured: Secured) -> AsyncIterator:
    """``await connect_as("node-1")``: a raw connection with that user's credentials."""
    opened: list[NatsClient] = []

    async def connect(user: str) -> Connection:
        name, password = read_credentials(secured.credentials.file(user))
        connection = Connection(NatsClient())

        async def on_error(exc: Exception) -> None:
            connection.errors.append(str(exc))

        await connection.nc.connect(
            secured.server.url,
            user=name,
            password=password,
            inbox_prefix=f"_INBOX_{name}",
            error_cb=on_error,
            allow_reconnect=False,
        )
        opened.append(connection.nc)
        return connection

    yield connect
    for nc in opened:
        await nc.close()


@pytest.fixture
async def bus_as(secured: Secured) -> AsyncIterator:
    """``await bus_as("node-1")``: a Bus logged in with that user's credentials file."""
    opened: list[Bus] = []

    async def connect(user: str) -> Bus:
        bus = await Bus.connect(
            secured.server.url, prefix=secured.prefix, credentials=secured.credentials.file(user)
        )
        opened.append(bus)
        return bus

    yield connect
    for bus in opened:
        await bus.close()


class FakeIdentityAPI(ServiceAPI, address=Tokens.address):
    """Two of the identity service's methods, as this test calls them."""

    @call
    async def issue(self, *, username: str, password: str) -> str: ...

    @call
    async def create_project(self, *, name: str) -> str: ...


class FakeIdentity(Actor, FakeIdentityAPI):
    """Serves the identity actor's address with the identity user's credentials."""

    name = "identity"

    async def issue(self, *, username: str, password: str) -> str:
        return "issued"

    async def create_project(self, *, name: str) -> str:
        return "created"


def test_credentials_are_private_made_once_and_reused(tmp_path: Path) -> None:
    first = prepare(tmp_path, PROCESSES, "aiostack")
    directory = tmp_path / "credentials"
    assert first.directory == directory
    assert directory.stat().st_mode & 0o777 == 0o700
    files = sorted(directory.iterdir())
    assert {f.name for f in files} == {f"{p.user}.json" for p in PROCESSES} | {
        "admin.json",
        "authorization.conf",
    }
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    passwords = {f.name: f.read_text() for f in files if f.suffix == ".json"}
    assert len({json.loads(text)["password"] for text in passwords.values()}) == len(passwords)
    again = prepare(tmp_path, PROCESSES, "aiostack")
    assert {f.name: f.read_text() for f in directory.iterdir() if f.suffix == ".json"} == passwords
    assert again.authorization == first.authorization


async def test_server_config_holding_passwords_is_private(secured: Secured) -> None:
    config = secured.server.data_dir / "nats-server.conf"
    assert config.stat().st_mode & 0o777 == 0o600
    assert read_credentials(secured.credentials.file(ADMIN))[1] in config.read_text()


async def test_node_publishes_domain_events_only_as_its_own_host(connect_as) -> None:
    admin = await connect_as(ADMIN)
    seen: list[str] = []

    async def on_event(msg: Msg) -> None:
        seen.append(msg.subject)

    await admin.nc.subscribe("aiostack.evt.>", cb=on_event)
    await admin.nc.flush()
    node = await connect_as("node-1")
    forged = (
        "aiostack.evt.instance.x.y",  # another kind's event
        "aiostack.evt.domain.x.y",  # a domain event that names no host
        "aiostack.evt.domain.x.y.node-2",  # another host's domain event
    )
    for subject in forged:
        await node.nc.publish(subject, b"forged")
        assert f'publish to "{subject}"' in await node.violation(subject)
    await node.nc.publish("aiostack.evt.domain.x.y.node-1", b"allowed")
    await node.nc.flush()
    async with asyncio.timeout(5):
        while not seen:
            await asyncio.sleep(0.01)
    await admin.nc.flush()
    assert seen == ["aiostack.evt.domain.x.y.node-1"]  # same publisher: a refused one would have come first


async def test_node_cannot_listen_to_another_node_or_its_replies(connect_as) -> None:
    node = await connect_as("node-1")
    received: list[str] = []

    async def on_message(msg: Msg) -> None:
        received.append(msg.subject)

    await node.nc.subscribe("aiostack.rpc.node.node-2.>", cb=on_message)
    await node.nc.subscribe("_INBOX_conductor.>", cb=on_message)
    await node.nc.subscribe("aiostack.rpc.node.node-1.*", queue="node.node-1", cb=on_message)
    await node.violation("aiostack.rpc.node.node-2.>")
    await node.violation("_INBOX_conductor.>")
    admin = await connect_as(ADMIN)
    for subject in (
        "aiostack.rpc.node.node-2.ping",
        "_INBOX_conductor.abc.1",
        "aiostack.rpc.node.node-1.ping",
    ):
        await admin.nc.publish(subject, b"x")
    await admin.nc.flush()
    async with asyncio.timeout(5):
        while not received:
            await asyncio.sleep(0.01)
    await node.nc.flush()
    assert received == ["aiostack.rpc.node.node-1.ping"]


async def test_a_served_subject_needs_its_queue_group(connect_as) -> None:
    conductor = await connect_as("conductor")
    await conductor.nc.subscribe("aiostack.rpc.conductor.*")
    plain = await conductor.violation('subscription to "aiostack.rpc.conductor.*"')
    assert "queue" not in plain
    await conductor.nc.subscribe("aiostack.rpc.conductor.*", queue="intruders")
    await conductor.violation('using queue "intruders"')
    await conductor.nc.subscribe("aiostack.rpc.conductor.*", queue="conductor")
    await conductor.nc.flush()
    assert len(conductor.errors) == 2


async def test_node_cannot_call_identity_but_the_gateway_can(connect_as, bus_as) -> None:
    identity = FakeIdentity(await bus_as("identity"))
    await identity.start()
    try:
        node = await connect_as("node-1")
        for method in ("issue", "create_project"):
            subject = f"aiostack.rpc.{Tokens.address}.{method}"
            await node.nc.publish(subject, b"", reply="_INBOX_node-1.x.1")
            await node.violation(subject)
        node_bus = await bus_as("node-1")
        with pytest.raises(CallTimeout):
            await Tokens.client(node_bus, timeout=0.5).issue(username="demo", password="x")
        gateway = await bus_as("gateway")
        assert await Tokens.client(gateway).issue(username="demo", password="x") == "issued"
        assert await IdentityAdmin.client(gateway).create_project(name="p") == "created"
    finally:
        await identity.stop()


class Greetings(ServiceAPI, address="conductor.host.{host}", caller="host"):
    """A facet served per calling host, where the conductor's node facets are."""

    @call
    async def hello(self) -> str: ...


async def test_processes_answer_each_other_through_their_own_inboxes(bus_as) -> None:
    class Conductor(Actor, Greetings):
        name = "conductor"

        async def hello(self, *, host: str) -> str:
            return host

    conductor = Conductor(await bus_as("conductor"))
    await conductor.start()
    try:
        node = await bus_as("node-1")
        assert node._inbox_prefix.startswith("_INBOX_node-1.")
        assert (await ConductorForNodes.client(node, host="node-1").ping())["address"] == "conductor"
        assert await node.publish_event("evt.domain.p.i.node-1", {"event": "STARTED"}) == 1
        assert await conductor.bus.publish_event("evt.instance.p.i", {"status": "ACTIVE"}) == 2
        with pytest.raises(CallTimeout):
            await conductor.bus.publish_event("evt.port.p.i", {"forged": True}, timeout=0.5)
    finally:
        await conductor.stop()


async def test_gateway_reads_the_event_stream_but_cannot_drive_nodes(connect_as, bus_as) -> None:
    """The gateway reaches a node's console facet only (``NodeConsole``), never its builds or power."""
    node_bus = await bus_as("node-1")
    for number in range(3):
        await node_bus.publish_event(f"evt.domain.p.i{number}.node-1", {"n": number})
    gateway = await connect_as("gateway")
    subscription = await gateway.nc.jetstream().subscribe("aiostack.evt.>", ordered_consumer=True)
    subjects = [(await subscription.next_msg(timeout=5)).subject for _ in range(3)]
    assert subjects == [f"aiostack.evt.domain.p.i{n}.node-1" for n in range(3)]
    assert (await subscription.consumer_info()).num_pending == 0
    await subscription.unsubscribe()
    for method in ("terminate_instance", "build_and_run_instance", "change_power"):
        await gateway.nc.publish(f"aiostack.rpc.node.node-1.{method}", b"")
        await gateway.violation(f"aiostack.rpc.node.node-1.{method}")
    assert not [e for e in gateway.errors if "$JS" in e]


def test_a_node_may_call_the_node_facets_only_as_its_own_host(secured: Secured) -> None:
    """Every facet a node calls is served per calling host; node-1's user may send as node-1 only."""
    (node_1,) = [u for u in secured.credentials.authorization["users"] if u["user"] == "node-1"]
    allowed = node_1["permissions"]["publish"]["allow"]
    rpc = sorted(subject for subject in allowed if subject.startswith("aiostack.rpc."))
    services = {subject.split(".")[2] for subject in rpc} - {"identity"}  # token validation
    assert services == {"conductor", "image", "net", "volume"}
    for subject in rpc:
        if not subject.startswith("aiostack.rpc.identity."):
            assert subject.split(".")[3:5] == ["host", "node-1"], subject
    assert "aiostack.rpc.conductor.host.node-1.sync_power_state" in rpc
    assert "aiostack.rpc.conductor.host.node-1.list_host_instances" in rpc
    for kind in ("conductor", "image", "net", "volume"):
        (served,) = [u for u in secured.credentials.authorization["users"] if u["user"] == kind]
        assert f"aiostack.rpc.{kind}.host.*.* {kind}" in served["permissions"]["subscribe"]["allow"]


async def test_a_node_cannot_send_as_another_host(connect_as) -> None:
    node = await connect_as("node-1")
    for subject in (
        "aiostack.rpc.conductor.host.node-2.sync_power_state",
        "aiostack.rpc.conductor.host.node-2.list_host_instances",
        "aiostack.rpc.image.host.node-2.read_chunk",
        "aiostack.rpc.net.host.node-2.get_network",
        "aiostack.rpc.volume.host.node-2.reserve",
        "aiostack.rpc.conductor.sync_power_state",  # the old, host-less subjects are gone
        "aiostack.rpc.image.read_chunk",
        "aiostack.rpc.net.get_network",
    ):
        await node.nc.publish(subject, b"", reply="_INBOX_node-1.x.1")
        await node.violation(subject)


async def test_wrong_password_or_none_is_refused_at_connect(secured: Secured, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"user": "node-1", "password": "not-the-password"}))
    async with asyncio.timeout(10):
        with pytest.raises(BusAuthFailed, match="refused the credentials"):
            await Bus.connect(secured.server.url, credentials=wrong)
        with pytest.raises(BusAuthFailed):
            await Bus.connect(secured.server.url)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(secured.server.url, user="node-1", password="nope", allow_reconnect=False)


async def test_a_node_sends_only_its_own_heartbeats(connect_as, bus_as, tmp_path: Path) -> None:
    from actors.scheduler import SchedulerActor
    from runtime.config import Config

    scheduler_bus = await bus_as("scheduler")
    scheduler = SchedulerActor(scheduler_bus, Config(data_dir=tmp_path / "data", nats_url="unused"))
    await scheduler.start()
    try:
        node = await bus_as("node-1")
        capacity = {"vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "hypervisor_type": "test"}
        assert (await node.request("hb.node-1", capacity))["host"] == "node-1"
        impostor = await connect_as("node-1")
        await impostor.nc.publish("aiostack.hb.node-2", b"forged")
        await impostor.violation("aiostack.hb.node-2")
        admin = await bus_as(ADMIN)
        assert [h["host"] for h in await admin.call("scheduler.list_hosts")] == ["node-1"]
    finally:
        await scheduler.stop()


async def test_a_node_hears_only_its_own_hosts_security_group_notices(connect_as) -> None:
    node = await connect_as("node-1")
    heard: list[str] = []

    async def on_notice(msg: Msg) -> None:
        heard.append(msg.subject)

    await node.nc.subscribe("aiostack.net.secgroups.node-2", cb=on_notice)
    await node.violation("aiostack.net.secgroups.node-2")
    await node.nc.subscribe("aiostack.net.secgroups.*", cb=on_notice)
    await node.violation("aiostack.net.secgroups.*")
    await node.nc.subscribe("aiostack.net.secgroups.node-1", cb=on_notice)
    await node.nc.flush()
    net = await connect_as("net")
    for host in ("node-2", "node-1"):
        await net.nc.publish(f"aiostack.net.secgroups.{host}", b"{}")
    await net.nc.flush()
    async with asyncio.timeout(5):
        while not heard:
            await asyncio.sleep(0.01)
    await node.nc.flush()
    assert heard == ["aiostack.net.secgroups.node-1"]  # node-2's came first: it would have been heard first
    assert not net.errors
