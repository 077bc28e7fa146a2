"""A node's teardowns on a test-driver node, through the real actors: a delete finishes from every
state (a suspended guest's managed-save image included), any server name is carried into the domain
XML, and an undo that fails is logged, never fatal: the build still ends in ERROR with a fault, and
nothing is left behind (domain, record, port, claim)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import pytest

from api.conductor import Compute, Instance
from api.identity import Tokens
from api.net import Net
from api.node import Node
from api.scheduler import SchedulerReader
from bus import ActorState, Bus, Context, request_scope
from deploy.audit import audit
from node.actor import NodeActor
from node.domain import METADATA_NS, NOT_IN_XML, Disk, DomainSpec, domain_xml
from node.testnode import write_test_node_file
from tests.helpers import DEMO_PASSWORD, Api


def the_node(cloud: list[Any]) -> NodeActor:
    (node,) = [actor for actor in cloud if isinstance(actor, NodeActor)]
    return node


async def image_id(api: Api) -> str:
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    return images["images"][0]["id"]


async def status_of(api: Api, server_id: str) -> str:
    return (await api.get(f"/compute/v2.1/servers/{server_id}"))[1]["server"]["status"]


async def until_status(api: Api, server_id: str, status: str) -> None:
    async with asyncio.timeout(30):
        while await status_of(api, server_id) != status:
            await asyncio.sleep(0.05)


async def boot_active(api: Api, name: str = "vm") -> str:
    await api.login()
    status, body = await api.post(
        "/compute/v2.1/servers", {"server": {"name": name, "imageRef": await image_id(api), "flavorRef": "1"}}
    )
    assert status == 202, body
    await until_status(api, body["server"]["id"], "ACTIVE")
    return body["server"]["id"]


async def assert_nothing_left(bus: Bus, node: NodeActor, server_id: str) -> None:
    """No domain, no record on the node, no port, no claim: nothing the audit would see either."""
    assert [d for d in await Node.client(bus, host=node.host).list_domains() if d["uuid"] == server_id] == []
    assert server_id not in await node.records.uuids()
    assert not node.records.working
    assert await Net.client(bus).list_ports(device_id=server_id) == []
    assert await SchedulerReader.client(bus).list_allocations() == []
    assert (await audit(bus, recheck_after=0.2)).problems == {}


ON_THE_WAY_TO = {
    "ACTIVE": [],
    "PAUSED": [("pause", "PAUSED")],
    "SUSPENDED": [("suspend", "SUSPENDED")],  # libvirt's managed save: the domain is off, its memory saved
    "SHUTOFF": [("os-stop", "SHUTOFF")],
    "SUSPENDED_THEN_SHUTOFF": [("suspend", "SUSPENDED"), ("os-stop", "SHUTOFF")],  # the saved image stays
}
"""The state a server is deleted from -> the actions (and the status each ends in) that bring it there."""


@pytest.mark.parametrize("state", sorted(ON_THE_WAY_TO))
async def test_a_delete_finishes_from_every_state_and_leaves_nothing(
    cloud, api: Api, bus: Bus, state: str
) -> None:
    node = the_node(cloud)
    server_id = await boot_active(api)
    for action, status in ON_THE_WAY_TO[state]:
        assert (await api.post(f"/compute/v2.1/servers/{server_id}/action", {action: None}))[0] == 202
        await until_status(api, server_id, status)
    domain = await node.hypervisor.existing(server_id)
    assert bool(domain.hasManagedSaveImage(0)) == state.startswith("SUSPENDED")
    assert (await api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    async with asyncio.timeout(10):
        while (await api.get(f"/compute/v2.1/servers/{server_id}"))[0] != 404:
            await asyncio.sleep(0.05)
    await assert_nothing_left(bus, node, server_id)


def refused(message: str, code: int) -> libvirt.libvirtError:
    """A ``libvirtError`` as libvirt raises it, with its error code."""
    libvirt.virResetLastError()
    error = libvirt.libvirtError(message)
    error.err = (code, 0, message, 0, None, None, None, 0, 0)
    return error


async def test_undefine_falls_back_for_a_driver_that_refuses_a_flag(cloud, api: Api) -> None:
    """The test driver refuses ``VIR_DOMAIN_UNDEFINE_NVRAM`` and ``_CHECKPOINTS_METADATA``; a
    driver that refused every flag still loses the managed-save image and the definition."""
    node = the_node(cloud)
    server_id = await boot_active(api)
    domain = await node.hypervisor.existing(server_id)
    await node.hypervisor.virt(domain.managedSave, 0)
    asked: list[int] = []

    class RefusesFlags:
        """The domain as a driver that knows no undefine flag at all would show it."""

        def __getattr__(self, name: str) -> Any:
            return getattr(domain, name)

        def undefineFlags(self, flags: int) -> None:
            asked.append(flags)
            raise refused(f"unsupported flags ({flags:#x})", libvirt.VIR_ERR_INVALID_ARG)

    await node.hypervisor.undefine(RefusesFlags())  # type: ignore[arg-type]
    assert asked and asked[-1] == libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    assert await node.hypervisor.domain(server_id) is None


# Characters XML 1.0 cannot carry (NUL, other C0 controls, U+FFFE), an escape sequence, DEL (which
# XML carries) and XML's own metacharacters.
UNSAFE_NAME = "vm\x00\x01\x08\x0b\x1b[31m\x7f\ufffe<&>'\" ]]> end"


def test_the_domain_xml_drops_what_xml_cannot_carry_and_libvirt_takes_it(tmp_path) -> None:
    """Every class of character XML 1.0 refuses, a lone surrogate included (JSON cannot bring one
    over the bus, but the XML builder does not rely on that), in every field that reaches the XML."""
    refused_by_xml = "\x00\x01\x08\x0b\x0c\x1b\x1f\ud800\udfff\ufffe\uffff"
    spec = DomainSpec(
        uuid="00000000-0000-4000-8000-0000000000a1",
        name=f"vm{refused_by_xml}<&>'\"\x7f\u00e9\U0001f600",
        project_id=f"p{refused_by_xml}",
        flavor_name=f"f{refused_by_xml}",
        vcpus=1,
        memory_mb=64,
        disks=(Disk(f"/var/lib/x{refused_by_xml}/disk", "vda"),),
        kernel="/boot/vmlinuz",
        cmdline=f"console=ttyS0{refused_by_xml} quiet",
    )
    xml = domain_xml(spec)
    assert not NOT_IN_XML.search(xml)
    root = ET.fromstring(xml)
    names = root.find(f"metadata/{{{METADATA_NS}}}instance")
    assert names is not None
    assert [child.text for child in names] == ["vm<&>'\"\x7f\u00e9\U0001f600", "p", "f"]
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet"
    conn = libvirt.open(write_test_node_file(tmp_path / "testnode.xml", vcpus=1, memory_mb=1024))
    try:
        assert conn.defineXML(xml).UUIDString() == spec.uuid
    finally:
        conn.close()


async def create_through_the_conductor(bus: Bus, api: Api, name: str) -> Instance:
    """As a caller of the conductor's API that does not go through the gateway (which refuses such names)."""
    await api.login()
    issued = await Tokens.client(bus).issue(username="demo", password=DEMO_PASSWORD, project_name="demo")
    roles = tuple(role["name"] for role in issued["roles"])
    context = Context(issued["user"]["id"], issued["project"]["id"], roles, issued["token"])
    with request_scope(context=context):
        return await Compute.client(bus).create_instance(
            name=name, flavor_ref="1", image_ref=await image_id(api)
        )


async def test_any_server_name_is_carried_safely_into_the_domain_xml(cloud, api: Api, bus: Bus) -> None:
    node = the_node(cloud)
    server = await create_through_the_conductor(bus, api, UNSAFE_NAME)
    await until_status(api, server["id"], "ACTIVE")
    domain = await node.hypervisor.existing(server["id"])
    for xml in (await node.hypervisor.persistent_xml(domain), await node.records.stored_xml(server["id"])):
        assert xml is not None
        carried = ET.fromstring(xml).find(f"metadata/{{{METADATA_NS}}}instance/{{{METADATA_NS}}}name")
        assert carried is not None and carried.text == "vm[31m\x7f<&>'\" ]]> end"
    assert node.state is ActorState.RUNNING
    assert (await api.delete(f"/compute/v2.1/servers/{server['id']}"))[0] == 204
    async with asyncio.timeout(10):
        while (await api.get(f"/compute/v2.1/servers/{server['id']}"))[0] != 404:
            await asyncio.sleep(0.05)
    await assert_nothing_left(bus, node, server["id"])


async def test_a_failing_undo_is_logged_and_the_build_still_ends_in_error_with_nothing_left(
    cloud, api: Api, bus: Bus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """defineXML fails, and so does a step of the undo (the DHCP entries' release, where an
    unparsable stored XML once raised ``ParseError`` and the node died): the other steps still
    run, the conductor hears of the failure, the node lives on and keeps its record of what is
    left here, which its next orphan sweep removes."""
    node = the_node(cloud)
    release = node.networks.release
    releases: list[str] = []

    async def define_fails(_xml: str) -> libvirt.virDomain:
        raise refused("XML error: this definition cannot be parsed", libvirt.VIR_ERR_XML_ERROR)

    async def release_fails_once(conn: libvirt.virConnect, xml: str) -> None:
        releases.append(xml)
        if len(releases) == 1:
            raise ET.ParseError("not well-formed (invalid token): line 1, column 99")
        await release(conn, xml)

    monkeypatch.setattr(node.hypervisor, "define", define_fails)
    monkeypatch.setattr(node.networks, "release", release_fails_once)
    server = await create_through_the_conductor(bus, api, "vm")
    await until_status(api, server["id"], "ERROR")
    body = (await api.get(f"/compute/v2.1/servers/{server['id']}"))[1]["server"]
    assert "this definition cannot be parsed" in body["fault"]["message"]
    assert "undo of the failed build" in caplog.text and "ParseError" in caplog.text
    assert node.state is ActorState.RUNNING
    assert await Net.client(bus).list_ports(device_id=server["id"]) == []
    assert await SchedulerReader.client(bus).list_allocations() == []
    assert server["id"] in await node.records.uuids()  # what the failed step left is remembered
    await node.reconciler.remove_orphans()  # the orphan sweep, as it runs every minute
    assert len(releases) == 2
    await assert_nothing_left(bus, node, server["id"])


async def test_a_node_restarting_on_a_record_it_cannot_parse_removes_it_and_lives_on(
    start_actor, config, cloud, api: Api, bus: Bus
) -> None:
    """A record an older node stored with a name XML cannot carry (its defineXML failed) is an
    orphan at the next start: its removal must not crash the node, as it once did."""
    node = the_node(cloud)
    await node.stop()
    orphan = "00000000-0000-4000-8000-0000000000bd"
    unparsable = (
        f"<domain type='test'><name>instance-{orphan}</name><uuid>{orphan}</uuid><metadata>"
        f"<instance xmlns='{METADATA_NS}'><name>vm\x01</name></instance></metadata>"
        "<devices><interface type='network'><mac address='fa:16:3e:00:00:01'/>"
        "<source network='aiostack-gone'/></interface></devices></domain>"
    )
    await node.records.open()
    await node.records.save(orphan, "some-project", unparsable)
    await node.records.close()
    restarted = await start_actor(
        NodeActor, config, host=node.host, libvirt_uri=node.hypervisor.uri, secure=True
    )
    assert isinstance(restarted, NodeActor)
    async with asyncio.timeout(10):
        while orphan in await restarted.records.uuids():
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the rest of the reconcile, where a failure would crash the node
    assert restarted.state is ActorState.RUNNING
    assert await Node.client(bus, host=node.host).list_domains() == []
