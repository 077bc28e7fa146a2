"""The ``trigger_crash_dump`` server action (Nova 2.17): an NMI injected into the guest by its node
(libvirt's ``injectNMI``), recorded as an instance action; absent (404) at 2.16."""

from __future__ import annotations

import pytest

from api.node import Node
from bus import Conflict
from tests.gateway.test_server_details import SERVERS, _boot, _until, _until_active
from tests.helpers import Api

V216 = {"OpenStack-API-Version": "compute 2.16"}
V217 = {"OpenStack-API-Version": "compute 2.17"}
CRASH_DUMP = {"trigger_crash_dump": None}


async def test_a_crash_dump_is_triggered_from_2_17_and_recorded_and_absent_at_2_16(api: Api, cloud) -> None:
    await api.login()
    server_id = await _boot(api, "dumped")
    await _until_active(api, server_id)
    action = f"{SERVERS}/{server_id}/action"
    status, body = await api.post(action, CRASH_DUMP, headers=V216)
    assert status == 404 and body["itemNotFound"]["message"] == "The resource could not be found."
    _, listed = await api.get(f"{SERVERS}/{server_id}/os-instance-actions")
    assert [a["action"] for a in listed["instanceActions"]] == ["create"]  # nothing was done

    headers = {**api.headers, **V217}
    async with api.session.post(api.base_url + action, json=CRASH_DUMP, headers=headers) as answer:
        assert answer.status == 202 and not await answer.read()
        request_id = answer.headers["x-compute-request-id"]
    _, shown = await api.get(f"{SERVERS}/{server_id}/os-instance-actions/{request_id}")
    dumped = shown["instanceAction"]
    assert dumped["action"] == "trigger_crash_dump" and dumped["message"] is None
    assert [(e["event"], e["result"]) for e in dumped["events"]] == [("trigger_crash_dump", "Success")]
    assert (await _until(api, server_id, "ACTIVE"))["OS-EXT-STS:power_state"] == 1  # its states unchanged

    assert (await api.post(action, {"pause": None}))[0] == 202
    await _until(api, server_id, "PAUSED")
    assert (await api.post(action, CRASH_DUMP, headers=V217))[0] == 202  # a paused guest takes one too
    for bad in ({"trigger_crash_dump": {}}, {"trigger_crash_dump": None, "pause": None}):
        assert (await api.post(action, bad, headers=V217))[0] == 400
    missing = f"{SERVERS}/00000000-0000-0000-0000-000000000000/action"
    assert (await api.post(missing, CRASH_DUMP, headers=V217))[0] == 404


async def test_a_crash_dump_is_refused_for_a_stopped_or_locked_server(api: Api, cloud) -> None:
    await api.login()
    server_id = await _boot(api, "refused")
    await _until_active(api, server_id)
    action = f"{SERVERS}/{server_id}/action"
    assert (await api.post(action, {"os-stop": None}))[0] == 202
    await _until(api, server_id, "SHUTOFF")
    status, body = await api.post(action, CRASH_DUMP, headers=V217)
    assert status == 409, body
    assert "Cannot 'trigger_crash_dump' instance" in body["conflictingRequest"]["message"]
    assert (await api.post(action, {"os-start": None}))[0] == 202
    await _until(api, server_id, "ACTIVE")
    assert (await api.post(action, {"lock": None}))[0] == 202
    status, body = await api.post(action, CRASH_DUMP, headers=V217)
    assert status == 409 and "is locked" in body["conflictingRequest"]["message"]
    _, listed = await api.get(f"{SERVERS}/{server_id}/os-instance-actions")
    assert "trigger_crash_dump" not in {a["action"] for a in listed["instanceActions"]}


async def test_a_node_refuses_an_nmi_for_a_domain_that_is_not_running(api: Api, cloud) -> None:
    await api.login()
    server_id = await _boot(api, "stopped-behind")
    await _until_active(api, server_id)
    conductor, node = cloud[2], cloud[6]
    domain = await node.hypervisor.existing(server_id)
    await node.hypervisor.virt(domain.destroy)  # behind the conductor's back
    with pytest.raises(Conflict, match="is not running"):
        await Node.client(conductor.bus, host=node.host).trigger_crash_dump(instance_uuid=server_id)
