"""A deleted server's instance actions (Nova 2.21): listed and shown by request id from 2.21, with
their steps; 404 at 2.20 as for any server that is gone; still only its project's to see."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.test_network_api import bob  # noqa: F401 (a fixture: a member of another project)
from tests.gateway.test_server_details import SERVERS, _boot, _until_active
from tests.helpers import Api

V220 = {"OpenStack-API-Version": "compute 2.20"}
V221 = {"OpenStack-API-Version": "compute 2.21"}


@pytest.fixture
async def demo(api: Api, cloud) -> Api:
    """The whole cloud, and ``api`` logged in as demo (what ``bob`` needs)."""
    await api.login()
    return api


async def _until_gone(api: Api, server_id: str) -> None:
    for _ in range(400):
        if (await api.get(f"{SERVERS}/{server_id}"))[0] == 404:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"server {server_id} was never deleted")


async def test_a_deleted_servers_actions_are_shown_from_2_21_only(demo: Api, bob: Api) -> None:  # noqa: F811
    api = demo
    server_id = await _boot(api, "short-lived")
    await _until_active(api, server_id)
    actions = f"{SERVERS}/{server_id}/os-instance-actions"
    async with api.session.delete(api.base_url + f"{SERVERS}/{server_id}", headers=api.headers) as answer:
        assert answer.status == 204
        deleted_by = answer.headers["x-compute-request-id"]
    await _until_gone(api, server_id)

    status, body = await api.get(actions, headers=V220)
    assert status == 404 and "could not be found" in body["itemNotFound"]["message"]
    assert (await api.get(f"{actions}/{deleted_by}", headers=V220))[0] == 404
    status, listed = await api.get(actions, headers=V221)
    assert status == 200 and [a["action"] for a in listed["instanceActions"]] == ["delete", "create"]
    status, shown = await api.get(f"{actions}/{deleted_by}", headers=V221)
    assert status == 200 and shown["instanceAction"]["action"] == "delete"
    assert shown["instanceAction"]["instance_uuid"] == server_id and shown["instanceAction"]["events"]
    assert (await api.get(f"{actions}/req-unknown", headers=V221))[0] == 404
    missing = f"{SERVERS}/00000000-0000-0000-0000-000000000000/os-instance-actions"
    assert (await api.get(missing, headers=V221))[0] == 404

    assert (await bob.get(actions, headers=V221))[0] == 404  # another project's deleted server: hidden
