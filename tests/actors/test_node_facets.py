"""What compute nodes call of the image, net and volume actors (``ImageForNodes``, ``NetForNodes``,
``VolumeAttacher``): each node as its own host, only for the instances the conductor records on
that host, and as the instance's project.

A stand-in conductor answers ``ConductorForOwners`` with the placements each test sets; the
calls carry no user (as a node's stolen credential would send them), so only the placement
checks stand between a node and another host's or another project's resources.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.volume import VolumeActor
from api.conductor import ConductorForOwners, Deletions, Placement
from api.image import ImageForNodes, Images
from api.net import Net, NetForNodes
from api.volume import VolumeAttacher, Volumes
from bus import Actor, Bus, Context, InvalidRequest, NotFound, request_scope
from bus.api import subjects

DEMO = Context("u-demo", "p-demo", ("member",), "token-demo")
OTHER = Context("u-other", "p-other", ("member",), "token-other")


class StandInConductor(Actor, ConductorForOwners):
    """Every instance alive (no owner's sweep releases anything); placements as the test sets them."""

    name = "conductor"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.placements: dict[str, Placement] = {}
        self.asked = 0
        """How many times ``placement`` was called."""

    def place(
        self, uuid: str, host: str | None, ctx: Context, image: str = "", volumes: list[str] | None = None
    ) -> str:
        self.placements[uuid] = {
            "instance_uuid": uuid,
            "host": host,
            "project_id": str(ctx.project_id),
            "image_ref": image,
            "volumes": volumes or [],
        }
        return uuid

    async def live_instances(self, *, instance_uuids: list[str]) -> list[str]:
        return instance_uuids

    async def deleted_since(self, *, since: str | None) -> Deletions:
        return {"instance_uuids": [], "until": since or "2026-01-01T00:00:00Z"}

    async def placement(self, *, instance_uuid: str) -> Placement:
        self.asked += 1
        if instance_uuid not in self.placements:
            raise NotFound(f"Instance {instance_uuid} could not be found.")
        return self.placements[instance_uuid]


@pytest.fixture
async def conductor(start_actor) -> StandInConductor:
    return await start_actor(StandInConductor)


def as_user(ctx: Context) -> Any:
    return request_scope(context=ctx)


def test_every_node_facet_is_served_per_calling_host() -> None:
    for facet, service in ((ImageForNodes, "image"), (NetForNodes, "net"), (VolumeAttacher, "volume")):
        assert facet.caller == "host"
        assert all(s.startswith(f"{service}.host.node-1.") for s in subjects(facet, host="node-1"))


# -- image ------------------------------------------------------------------------------------


async def private_image(images: Images, ctx: Context, data: bytes, **properties: str) -> str:
    with as_user(ctx):
        image = await images.create(name="img", properties=properties or None)
        await images.upload(image_id=image["id"], data=data)
    return image["id"]


async def image_with_kernel_and_ramdisk(images: Images, ctx: Context) -> tuple[str, str, str]:
    """A private kernel, ramdisk and the disk image that names them, of ``ctx``'s project."""
    kernel = await private_image(images, ctx, b"kernel")
    ramdisk = await private_image(images, ctx, b"ramdisk")
    return kernel, ramdisk, await private_image(images, ctx, b"disk", kernel_id=kernel, ramdisk_id=ramdisk)


async def test_a_node_reads_only_the_images_of_its_instances_as_their_project_sees_them(
    bus: Bus, start_actor, config, conductor: StandInConductor
) -> None:
    await start_actor(ImageActor, config)
    images = Images.client(bus)
    kernel, ramdisk, booted = await image_with_kernel_and_ramdisk(images, DEMO)
    other_private = await private_image(images, OTHER, b"their secret")
    demo_vm = conductor.place("vm-demo", "node-1", DEMO, booted)
    stale_vm = conductor.place("vm-stale", "node-1", DEMO, other_private)  # made private after the boot
    node_1, node_2 = ImageForNodes.client(bus, host="node-1"), ImageForNodes.client(bus, host="node-2")

    assert (await node_1.get(image_id=booted, instance_uuid=demo_vm))["id"] == booted
    for image_id, data in ((booted, b"disk"), (kernel, b"kernel"), (ramdisk, b"ramdisk")):
        assert await node_1.read_chunk(image_id=image_id, instance_uuid=demo_vm, offset=0, length=64) == data
    refused = [
        node_2.get(image_id=booted, instance_uuid=demo_vm),  # another host's instance
        node_2.read_chunk(image_id=booted, instance_uuid=demo_vm, offset=0, length=64),
        node_1.read_chunk(
            image_id=other_private, instance_uuid=demo_vm, offset=0, length=64
        ),  # not its image
        node_1.get(image_id=other_private, instance_uuid=stale_vm),  # its image, but not its project's
        node_1.read_chunk(image_id=other_private, instance_uuid=stale_vm, offset=0, length=64),
        node_1.get(image_id=booted, instance_uuid="vm-nowhere"),  # no such instance
    ]
    for call in refused:
        with pytest.raises(NotFound):
            await call
    with pytest.raises(InvalidRequest, match="host"):  # the host is the subject's, never the body's
        await bus.call(
            "image.host.node-2.get", {"image_id": booted, "instance_uuid": demo_vm, "host": "node-1"}
        )


async def test_a_node_reads_its_images_kernel_and_ramdisk_on_one_placement_and_a_rebuilt_image_on_a_fresh_one(
    bus: Bus, start_actor, config, conductor: StandInConductor
) -> None:
    await start_actor(ImageActor, config)
    images = Images.client(bus)
    kernel, ramdisk, booted = await image_with_kernel_and_ramdisk(images, DEMO)
    rebuilt_from = await private_image(images, DEMO, b"another disk")
    vm = conductor.place("vm-kernel", "node-1", DEMO, booted)
    node = ImageForNodes.client(bus, host="node-1")

    for image_id in (booted, kernel, ramdisk):
        assert (await node.get(image_id=image_id, instance_uuid=vm))["id"] == image_id
    assert conductor.asked == 1  # the kept placement serves the kernel and the ramdisk

    conductor.place(vm, "node-1", DEMO, rebuilt_from)  # rebuilt: the kept placement is stale
    assert (await node.get(image_id=rebuilt_from, instance_uuid=vm))["id"] == rebuilt_from
    assert conductor.asked == 2
    with pytest.raises(NotFound, match=f"image {kernel} could not be found for instance {vm}"):
        await node.get(image_id=kernel, instance_uuid=vm)  # asked again: no longer its kernel
    assert conductor.asked == 3


async def test_a_node_reads_a_public_image_for_its_instance(
    bus: Bus, start_actor, config, conductor: StandInConductor
) -> None:
    await start_actor(ImageActor, config)
    (tiny,) = await Images.client(bus).list(name="aiostack-tiny")
    vm = conductor.place("vm-tiny", "node-1", OTHER, tiny["id"])
    chunk = await ImageForNodes.client(bus, host="node-1").read_chunk(
        image_id=tiny["id"], instance_uuid=vm, offset=510, length=2
    )
    assert chunk == b"\x55\xaa"


# -- net --------------------------------------------------------------------------------------


async def test_a_node_makes_binds_and_releases_only_its_instances_ports(
    bus: Bus, start_actor, config, conductor: StandInConductor
) -> None:
    await start_actor(NetActor, config)
    net = Net.client(bus)
    with as_user(DEMO):
        own = await net.create_network(name="demo-net")
        own_subnet = await net.create_subnet(network_id=own["id"], cidr="192.168.5.0/24")
    with as_user(OTHER):
        theirs = await net.create_network(name="their-net")
        their_subnet = await net.create_subnet(network_id=theirs["id"], cidr="192.168.6.0/24")
    (default,) = await net.list_networks(name="default")
    vm = conductor.place("vm-demo", "node-1", DEMO)
    node_1, node_2 = NetForNodes.client(bus, host="node-1"), NetForNodes.client(bus, host="node-2")

    with pytest.raises(NotFound):  # another host's instance: nothing is made
        await node_2.allocate_for_instance(instance_uuid=vm, requested_networks=[{"uuid": own["id"]}])
    assert await net.list_ports(device_id=vm) == []
    with pytest.raises(NotFound):  # a network of another project: the instance's project does not see it
        await node_1.allocate_for_instance(instance_uuid=vm, requested_networks=[{"uuid": theirs["id"]}])
    assert await net.list_ports(device_id=vm) == []

    (port,) = await node_1.allocate_for_instance(instance_uuid=vm, requested_networks=[{"uuid": own["id"]}])
    assert (port["project_id"], port["binding:host_id"], port["device_id"]) == ("p-demo", "node-1", vm)
    assert (await node_1.get_network(network_id=own["id"], instance_uuid=vm))["id"] == own["id"]
    assert (await node_1.get_subnet(subnet_id=own_subnet["id"], instance_uuid=vm))["id"] == own_subnet["id"]
    assert (await node_1.get_network(network_id=default["id"], instance_uuid=vm))["shared"] is True
    refused = [
        node_1.get_network(network_id=theirs["id"], instance_uuid=vm),
        node_1.get_subnet(subnet_id=their_subnet["id"], instance_uuid=vm),
        node_2.get_network(network_id=own["id"], instance_uuid=vm),
        node_2.get_network(network_id=default["id"], instance_uuid=vm),
        node_2.set_port_binding(port_id=port["id"], vif_type="bridge", vif_details={}),
        node_2.deallocate_for_instance(instance_uuid=vm),
        node_2.allocate_for_instance(instance_uuid=vm, requested_networks="auto"),
    ]
    for call in refused:
        with pytest.raises(NotFound):
            await call
    assert await net.list_ports(device_id=vm) == [port]

    plugged = await node_1.set_port_binding(port_id=port["id"], vif_type="bridge", vif_details={"x": 1})
    assert plugged["binding:vif_type"] == "bridge"
    assert await node_1.deallocate_for_instance(instance_uuid=vm) == {"deleted": 1, "unbound": 0}
    assert await net.list_ports(device_id=vm) == []


async def test_a_node_whose_instance_moved_away_cannot_touch_its_new_hosts_ports(
    bus: Bus, start_actor, config, conductor: StandInConductor
) -> None:
    await start_actor(NetActor, config)
    vm = conductor.place("vm-moving", "node-1", DEMO)
    (port,) = await NetForNodes.client(bus, host="node-1").allocate_for_instance(
        instance_uuid=vm, requested_networks="auto"
    )
    conductor.place(vm, "node-2", DEMO)  # rescheduled: node-1's next calls must see it at once
    with pytest.raises(NotFound):
        await NetForNodes.client(bus, host="node-1").deallocate_for_instance(instance_uuid=vm)
    assert [p["id"] for p in await Net.client(bus).list_ports(device_id=vm)] == [port["id"]]


async def test_each_host_gets_one_dhcp_port_per_network_of_its_instances_that_does_not_block_deleting_it(
    bus: Bus, start_actor, config, conductor: StandInConductor
) -> None:
    await start_actor(NetActor, config)
    net = Net.client(bus)
    with as_user(DEMO):
        own = await net.create_network(name="demo-net")
        await net.create_subnet(network_id=own["id"], cidr="192.168.5.0/24")
    with as_user(OTHER):
        theirs = await net.create_network(name="their-net")
    vm_1, vm_2 = conductor.place("vm-1", "node-1", DEMO), conductor.place("vm-2", "node-2", DEMO)
    node_1, node_2 = NetForNodes.client(bus, host="node-1"), NetForNodes.client(bus, host="node-2")
    await node_1.allocate_for_instance(instance_uuid=vm_1, requested_networks=[{"uuid": own["id"]}])
    await node_2.allocate_for_instance(instance_uuid=vm_2, requested_networks=[{"uuid": own["id"]}])

    first = await node_1.dhcp_port(network_id=own["id"], instance_uuid=vm_1)
    assert await node_1.dhcp_port(network_id=own["id"], instance_uuid=vm_1) == first
    other = await node_2.dhcp_port(network_id=own["id"], instance_uuid=vm_2)
    assert (first["device_owner"], first["device_id"], first["binding:host_id"]) == (
        "network:dhcp",
        "dhcp-node-1",
        "node-1",
    )
    assert first["project_id"] == "p-demo" and other["device_id"] == "dhcp-node-2"
    assert first["fixed_ips"][0]["ip_address"] != other["fixed_ips"][0]["ip_address"]
    for refused in (
        node_2.dhcp_port(network_id=own["id"], instance_uuid=vm_1),  # another host's instance
        node_1.dhcp_port(network_id=theirs["id"], instance_uuid=vm_1),  # a network it does not see
    ):
        with pytest.raises(NotFound):
            await refused
    assert len(await net.list_ports(network_id=own["id"], device_owner="network:dhcp")) == 2

    assert await node_2.release_dhcp_port(network_id=own["id"]) is True
    assert await node_2.release_dhcp_port(network_id=own["id"]) is False
    assert [p["id"] for p in await net.list_ports(device_owner="network:dhcp")] == [first["id"]]
    await node_1.deallocate_for_instance(instance_uuid=vm_1)
    await node_2.deallocate_for_instance(instance_uuid=vm_2)
    with as_user(DEMO):
        await net.delete_network(network_id=own["id"])  # the DHCP port left goes with it, as in Neutron
    assert await net.list_ports(device_owner="network:dhcp") == []


async def test_every_network_is_a_vxlan_segment_of_its_own(bus: Bus, start_actor, config) -> None:
    await start_actor(NetActor, config)
    net = Net.client(bus)
    with as_user(DEMO):
        made = [await net.create_network(name=f"n{number}") for number in range(3)]
    segments = [n["provider:segmentation_id"] for n in [*await net.list_networks(name="default"), *made]]
    assert segments == [1, 2, 3, 4]
    assert {n["provider:network_type"] for n in made} == {"vxlan"}
    with as_user(DEMO):
        await net.delete_network(network_id=made[2]["id"])
        again = await net.create_network(name="again")
    assert again["provider:segmentation_id"] == 4  # the highest was freed: taken again, never a duplicate


# -- volume -----------------------------------------------------------------------------------


async def test_a_node_attaches_and_frees_only_the_boot_volumes_of_its_instances(
    bus: Bus, start_actor, config, conductor: StandInConductor
) -> None:
    await start_actor(VolumeActor, config)
    volumes = Volumes.client(bus)
    with as_user(DEMO):
        boot_volume = await volumes.create(size=1)
        spare = await volumes.create(size=1)
    with as_user(OTHER):
        theirs = await volumes.create(size=1)
    vm = conductor.place("vm-demo", "node-1", DEMO, volumes=[boot_volume["id"]])
    greedy = conductor.place("vm-greedy", "node-1", DEMO, volumes=[theirs["id"]])  # not its project's
    node_1, node_2 = VolumeAttacher.client(bus, host="node-1"), VolumeAttacher.client(bus, host="node-2")

    refused = [
        node_2.reserve(volume_id=boot_volume["id"], instance_uuid=vm),
        node_1.reserve(volume_id=spare["id"], instance_uuid=vm),
        node_1.reserve(volume_id=theirs["id"], instance_uuid=greedy),
        node_1.reserve(volume_id=boot_volume["id"], instance_uuid="vm-nowhere"),
    ]
    for call in refused:
        with pytest.raises(NotFound):
            await call
    statuses = {v["id"]: v["status"] for v in await volumes.list()}
    assert set(statuses.values()) == {"available"}

    reserved = await node_1.reserve(volume_id=boot_volume["id"], instance_uuid=vm)
    assert reserved["volume"]["status"] == "attaching"
    with pytest.raises(NotFound):
        await node_2.attach_complete(volume_id=boot_volume["id"], instance_uuid=vm, device="/dev/vdb")
    attached = await node_1.attach_complete(volume_id=boot_volume["id"], instance_uuid=vm, device="/dev/vdb")
    assert attached["status"] == "in-use" and attached["attachments"][0]["host_name"] == "node-1"
    with pytest.raises(NotFound):
        await node_2.detach_all(instance_uuid=vm)
    assert (await volumes.get(volume_id=boot_volume["id"]))["status"] == "in-use"
    assert await node_1.detach_all(instance_uuid=vm) == {"detached": [boot_volume["id"]]}
    assert (await volumes.get(volume_id=boot_volume["id"]))["status"] == "available"


@pytest.mark.parametrize(
    ("actor", "subject", "body", "message"),
    [
        (ImageActor, "image.host.node-1.get", {"image_id": "i"}, "missing required field `instance_uuid`"),
        (ImageActor, "image.host.node-1.read_chunk", {"image_id": "i", "instance_uuid": "vm"}, "`offset`"),
        (
            NetActor,
            "net.host.node-1.allocate_for_instance",
            {"instance_uuid": "vm", "requested_networks": "auto", "project_id": "p-other"},
            "unknown field `project_id`",
        ),
        (
            NetActor,
            "net.host.node-1.get_network",
            {"network_id": "n"},
            "missing required field `instance_uuid`",
        ),
        (NetActor, "net.host.node-1.get_subnet", {"subnet_id": 5, "instance_uuid": "vm"}, r"\$\.subnet_id"),
        (
            VolumeActor,
            "volume.host.node-1.attach_complete",
            {"volume_id": "v", "instance_uuid": "vm", "device": "/dev/vdb", "host": "node-2"},
            "unknown field `host`",
        ),
        (VolumeActor, "volume.host.node-1.detach_all", {"instance_uuid": ""}, r"\$\.instance_uuid"),
    ],
)
async def test_malformed_node_calls_are_refused_naming_the_field(
    bus: Bus,
    start_actor,
    config,
    conductor: StandInConductor,
    actor: type[Actor],
    subject: str,
    body: Any,
    message: str,
) -> None:
    await start_actor(actor, config)
    conductor.place("vm", "node-1", DEMO)
    with pytest.raises(InvalidRequest, match=message):
        await bus.call(subject, body)
