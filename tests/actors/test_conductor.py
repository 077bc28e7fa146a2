"""The conductor on the bus: arguments checked at dispatch, and its state machine in a real cloud.

Every actor runs in this process on a real nats-server (``cloud``); the calls go through the
conductor's typed clients (``api.conductor``), as the gateway and the nodes make them, except
the malformed ones, which are sent as raw bodies.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from actors.conductor.actor import ConductorActor
from api.conductor import (
    Compute,
    ComputeQuotas,
    ConductorForNodes,
    ConductorForOwners,
    ConductorOperator,
    Server,
)
from api.identity import Tokens
from api.image import Images
from bus import Actor, Bus, Context, InvalidRequest, NotFound, QuotaExceeded, decode, request_scope
from runtime.states import Lifecycle, TaskState


async def issue(bus: Bus, username: str, password: str, project: str) -> Context:
    issued = await Tokens.client(bus).issue(username=username, password=password, project_name=project)
    return Context(
        issued["user"]["id"],
        issued["project"]["id"],
        tuple(r["name"] for r in issued["roles"]),
        issued["token"],
    )


@pytest.fixture
async def demo(bus: Bus, cloud: list[Actor]) -> Context:
    return await issue(bus, "demo", "demo-secret", "demo")


async def boot(bus: Bus, demo: Context, name: str = "vm") -> Server:
    """Boot an instance as demo and wait until it is ACTIVE."""
    compute = Compute.client(bus)
    with request_scope(context=demo):
        (image,) = await Images.client(bus).list(name="aiostack-tiny")
        created = await compute.create_instance(name=name, flavor_ref="1", image_ref=image["id"])
        async with asyncio.timeout(30):
            while (server := await compute.get_instance(instance_uuid=created["id"]))["status"] != "ACTIVE":
                await asyncio.sleep(0.05)
    return server


async def audited(operator: ConductorOperator) -> list[dict[str, Any]]:
    """What the audit sees of every instance, but how long each has been idle."""
    return [
        {key: value for key, value in instance.items() if key != "idle_s"}
        for instance in (await operator.audit_instances())["instances"]
    ]


async def refused(bus: Bus, demo: Context, method: str, body: dict[str, Any]) -> str:
    with request_scope(context=demo), pytest.raises(InvalidRequest) as raised:
        await bus.call(f"{Compute.address}.{method}", body)
    return raised.value.message


async def test_wrong_missing_and_unknown_arguments_are_refused_naming_the_field_and_change_nothing(
    bus: Bus, demo: Context
) -> None:
    server = await boot(bus, demo)
    uuid, image = server["id"], server["image_ref"]
    compute, operator = Compute.client(bus), ConductorOperator.client(bus)
    with request_scope(context=demo):
        await compute.create_keypair(name="mine")
        actions_before = await operator.list_actions(instance_uuid=uuid)
    audit_before = await audited(operator)
    good = {"name": "vm", "flavor_ref": "1", "image_ref": image}
    for method, body, says in [
        ("create_instance", {**good, "name": 12}, "Expected `str`, got `int` - at `$.name`"),
        ("create_instance", {**good, "name": "   "}, "at `$.name`"),
        ("create_instance", {"name": "vm", "image_ref": image}, "missing required field `flavor_ref`"),
        ("create_instance", {**good, "colour": "red"}, "unknown field `colour`"),
        ("create_instance", {**good, "networks": "lots"}, "at `$.networks`"),
        ("create_instance", {**good, "metadata": {"a": 1}}, "at `$.metadata[...]`"),
        (
            "create_instance",
            {**good, "block_devices": [{"device": "vdb"}]},
            "`volume_id` - at `$.block_devices[0]`",
        ),
        ("reboot_instance", {"instance_uuid": uuid, "reboot_type": "SOFTLY"}, "at `$.reboot_type`"),
        ("change_power", {"instance_uuid": uuid, "action": "explode"}, "at `$.action`"),
        ("stop_instance", {"instance_uuid": 7}, "at `$.instance_uuid`"),
        ("delete_instance", {}, "missing required field `instance_uuid`"),
        ("get_console_output", {"instance_uuid": uuid, "length": -2}, "at `$.length`"),
        ("get_console_output", {"instance_uuid": uuid, "length": True}, "at `$.length`"),
        ("list_instances", {"limit": -1}, "at `$.limit`"),
        ("attach_volume", {"instance_uuid": uuid, "volume_id": "v", "device": "sd a!"}, "at `$.device`"),
        ("create_keypair", {"name": "no/slash"}, "at `$.name`"),
        ("create_keypair", {"name": "other", "public_key": ["ssh-rsa"]}, "at `$.public_key`"),
        ("delete_keypair", {"name": "mine", "force": True}, "unknown field `force`"),
    ]:
        message = await refused(bus, demo, method, body)
        assert message.startswith(f"conductor.{method}: "), message
        assert says in message, (method, body, message)
    with request_scope(context=demo):
        assert await compute.get_instance(instance_uuid=uuid) == server
        assert await operator.list_actions(instance_uuid=uuid) == actions_before
        assert [k["name"] for k in await compute.list_keypairs()] == ["mine"]
    assert await audited(operator) == audit_before


async def test_what_nodes_send_is_checked_too_and_changes_nothing(bus: Bus, demo: Context) -> None:
    server = await boot(bus, demo)
    uuid, host = server["id"], str(server["host"])
    node_address = ConductorForNodes.address_for(host=host)
    for address, method, body, says in [
        (node_address, "domain_event", {"instance_uuid": uuid, "event": "STOPPED", "detail": 0}, "`$.event`"),
        (node_address, "sync_power_state", {"instance_uuid": uuid, "running": "no"}, "`$.running`"),
        (node_address, "sync_power_state", {"instance_uuid": uuid, "host": host, "running": False}, "`host`"),
        (node_address, "task_progress", {"instance_uuids": uuid}, "`$.instance_uuids`"),
        (node_address, "list_host_instances", {"host": "node-2"}, "unknown field `host`"),
        (node_address, "build_failed", {"instance_uuid": uuid}, "missing required field `message`"),
        ("conductor", "live_instances", {}, "missing required field `instance_uuids`"),
        (node_address, "recorded_here", {"instance_uuids": [uuid], "host": host}, "unknown field `host`"),
    ]:
        with pytest.raises(InvalidRequest, match=f"conductor.{method}: .*{said(says)}"):
            await bus.call(f"{address}.{method}", body)
    with pytest.raises(InvalidRequest, match="Invalid time 'yesterday'"):
        await ConductorForOwners.client(bus).deleted_since(since="yesterday")
    with request_scope(context=demo):
        assert await Compute.client(bus).get_instance(instance_uuid=uuid) == server


def said(text: str) -> str:
    """``text`` as a regular expression matching itself."""
    return "".join(f"\\{c}" if c in "$.[]()`*+?" else c for c in text)


async def test_a_late_task_done_does_not_cancel_a_delete(bus: Bus, demo: Context, cloud: list[Actor]) -> None:
    server = await boot(bus, demo)
    uuid, host = server["id"], str(server["host"])
    (node,) = cloud[6:]
    await node.stop()  # the delete's cast goes nowhere: the instance stays deleting
    compute = Compute.client(bus)
    with request_scope(context=demo):
        await compute.delete_instance(instance_uuid=uuid)
        assert (await compute.get_instance(instance_uuid=uuid))["task_state"] == TaskState.DELETING
    await ConductorForNodes.client(bus, host=host).task_done(instance_uuid=uuid)  # a soft reboot's, late
    with request_scope(context=demo):
        deleting = await compute.get_instance(instance_uuid=uuid)
    assert (deleting["status"], deleting["task_state"]) == ("ACTIVE", TaskState.DELETING)


@pytest.mark.nodes(2)
async def test_a_node_reaches_only_the_instances_recorded_on_its_host(bus: Bus, demo: Context) -> None:
    """The host is the subject's: a report about another host's instance is refused as if the
    instance did not exist, and changes nothing; a node lists and moves only its own."""
    server = await boot(bus, demo)
    uuid, host = server["id"], str(server["host"])
    other = "node-1" if host == "node-2" else "node-2"
    impostor = ConductorForNodes.client(bus, host=other)
    operator = ConductorOperator.client(bus)
    before = await audited(operator)
    for attempt in (
        impostor.sync_power_state(instance_uuid=uuid, running=False),
        impostor.domain_event(instance_uuid=uuid, event=Lifecycle.STOPPED, detail=0),
        impostor.domain_gone(instance_uuid=uuid),
        impostor.task_done(instance_uuid=uuid),
        impostor.get_build_request(instance_uuid=uuid),
        impostor.instance_spawning(instance_uuid=uuid, addresses={}),
        impostor.build_failed(instance_uuid=uuid, message="forged"),
    ):
        with pytest.raises(NotFound, match=f"on host {other}"):
            await attempt
    with pytest.raises(NotFound, match=f"on host {other}"):  # the same answer as for no instance at all
        await impostor.task_done(instance_uuid="00000000-0000-4000-8000-000000000000")
    assert await impostor.task_progress(instance_uuids=[uuid]) == 0
    assert await impostor.list_host_instances() == []
    assert [i["id"] for i in await ConductorForNodes.client(bus, host=host).list_host_instances()] == [uuid]
    assert await impostor.recorded_here(instance_uuids=[uuid]) == []
    assert await ConductorForNodes.client(bus, host=host).recorded_here(instance_uuids=[uuid, "gone"]) == [
        uuid
    ]
    assert await audited(operator) == before
    with request_scope(context=demo):
        assert (await Compute.client(bus).get_instance(instance_uuid=uuid))["status"] == "ACTIVE"
    placement = await ConductorForOwners.client(bus).placement(instance_uuid=uuid)
    assert placement == {
        "instance_uuid": uuid,
        "host": host,
        "project_id": demo.project_id,
        "image_ref": server["image_ref"],
        "volumes": [],
        "arriving": None,  # no live migration brings it to another host
    }
    with pytest.raises(NotFound):
        await ConductorForOwners.client(bus).placement(instance_uuid="00000000-0000-4000-8000-000000000000")
    # the instance's own node may say what it sees (here: a power state libvirt sent no event for)
    changed = await ConductorForNodes.client(bus, host=host).sync_power_state(
        instance_uuid=uuid, running=False
    )
    assert changed is not None and changed["status"] == "SHUTOFF"


async def test_the_same_request_sent_again_makes_one_instance_and_starts_its_action_once(
    bus: Bus, demo: Context
) -> None:
    """What a resend (its first reply lost with a server) finds: the instance and action it started."""
    server = await boot(bus, demo)
    compute, operator = Compute.client(bus), ConductorOperator.client(bus)
    with request_scope(context=demo):  # one request id: the same request, asked twice
        first = await compute.create_instance(name="twice", flavor_ref="1", image_ref=server["image_ref"])
        again = await compute.create_instance(name="twice", flavor_ref="1", image_ref=server["image_ref"])
        assert again["id"] == first["id"]
        assert [s["id"] for s in await compute.list_instances() if s["name"] == "twice"] == [first["id"]]
    with request_scope(context=demo):
        stopping = await compute.stop_instance(instance_uuid=server["id"])
        assert (await compute.stop_instance(instance_uuid=server["id"]))["id"] == stopping["id"]  # no 409
    with request_scope(context=demo):  # another request: a second instance
        other = await compute.create_instance(name="twice", flavor_ref="1", image_ref=server["image_ref"])
        assert other["id"] != first["id"]
        actions = await operator.list_actions(instance_uuid=server["id"])
    assert [action["action"] for action in actions] == ["create", "stop"]


async def test_a_change_recorded_without_its_event_is_announced_by_the_watch_once(
    bus: Bus, demo: Context, cloud: list[Actor]
) -> None:
    """What a conductor that died between writing a change and publishing its event leaves: the
    row's version moved, no event. A watch publishes the instance's state, once."""
    conductor = next(actor for actor in cloud if isinstance(actor, ConductorActor))
    conductor.core.announce_after = 0.5
    server = await boot(bus, demo)
    subject = bus.subject(f"evt.instance.{demo.project_id}.{server['id']}")
    events = await bus.nc.jetstream().subscribe(
        subject, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    )
    store = conductor.core.store
    await store.execute("UPDATE instances SET version = version + 1 WHERE uuid = ?", (server["id"],))
    message = await events.next_msg(timeout=15)
    event = decode(message.data).body
    assert event["type"] == "instance.active" and event["state"]["status"] == "ACTIVE"
    async with asyncio.timeout(10):
        while True:
            row = await store.fetchone(
                "SELECT version, announced_version FROM instances WHERE uuid = ?", (server["id"],)
            )
            if row is not None and row["announced_version"] == row["version"]:
                break
            await asyncio.sleep(0.1)
    with pytest.raises(nats.errors.TimeoutError):  # announced: not published again
        await events.next_msg(timeout=3)


async def test_quota_usage_is_summed_from_the_live_instances_flavors_and_refuses_past_the_limit(
    bus: Bus, demo: Context
) -> None:
    """On both stores: the database sums the project's instances' vCPUs and RAM from their flavors;
    a create past the limit is refused naming what is used, and makes nothing."""
    admin = await issue(bus, "admin", "admin-secret", "admin")
    quotas = ComputeQuotas.client(bus)
    first, second = await boot(bus, demo, "one"), await boot(bus, demo, "two")
    with request_scope(context=demo):
        await Compute.client(bus).delete_instance(instance_uuid=second["id"])
        async with asyncio.timeout(30):
            while second["id"] in [s["id"] for s in await Compute.client(bus).list_instances()]:
                await asyncio.sleep(0.05)
    await boot(bus, demo, "three")
    with request_scope(context=admin):
        used = await quotas.get_quota_usage(project_id=str(demo.project_id))
        assert {r: used[r]["in_use"] for r in ("instances", "cores", "ram")} == {
            "instances": 2,
            "cores": 2,
            "ram": 1024,
        }
        await quotas.set_quotas(project_id=str(demo.project_id), limits={"cores": 2})
    compute = Compute.client(bus)
    with request_scope(context=demo), pytest.raises(QuotaExceeded, match="already used 2 of 2 cores"):
        (image,) = await Images.client(bus).list(name="aiostack-tiny")
        await compute.create_instance(name="four", flavor_ref="1", image_ref=image["id"])
    with request_scope(context=demo):
        names = sorted(s["name"] for s in await compute.list_instances())
    assert first["name"] in names and names == ["one", "three"]


async def test_pages_after_a_marker_hold_every_instance_once_newest_first(bus: Bus, demo: Context) -> None:
    """Instances made within one second (their ``created_at`` the same) are told apart by id."""
    compute = Compute.client(bus)
    for number in range(5):
        with request_scope(context=demo):  # each create a request of its own
            (image,) = await Images.client(bus).list(name="aiostack-tiny")
            await compute.create_instance(name=f"vm-{number}", flavor_ref="1", image_ref=image["id"])
    with request_scope(context=demo):
        every = [server["id"] for server in await compute.list_instances()]
        walked: list[str] = []
        while page := await compute.list_instances(limit=2, marker=walked[-1] if walked else None):
            walked += [server["id"] for server in page]
    assert walked == every and len(set(every)) == 5
