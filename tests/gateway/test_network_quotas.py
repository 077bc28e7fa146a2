"""Neutron's quotas over real HTTP: shown, set and reset by admins, read by members, enforced in the
net actor's create transactions (concurrent and bulk creates too), usage counted from the rows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.identity.actor import IdentityActor
from actors.net.actor import NetActor

ADMIN_PASSWORD = "admin-secret"  # as tests/conftest.py bootstraps it
BASE = "/network/v2.0"
QUOTAS = f"{BASE}/quotas"
NETWORKS, SUBNETS, PORTS, SUBNETPOOLS = (
    f"{BASE}/{kind}" for kind in ("networks", "subnets", "ports", "subnetpools")
)
DEFAULTS = {
    "network": 100,
    "subnet": 100,
    "port": -1,
    "subnetpool": -1,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
    "rbac_policy": -1,
}
OVER_NETWORKS = {"type": "OverQuota", "message": "Quota exceeded for resources: ['network'].", "detail": ""}


@pytest.fixture
async def demo(start_actor, config, api: Any) -> Any:
    """The identity and net actors behind the gateway, and ``api`` logged in as demo (a member)."""
    await start_actor(IdentityActor, config)
    await start_actor(NetActor, config)
    await api.login()
    return api


@pytest.fixture
async def admin(demo: Any) -> Any:
    client = type(demo)(demo.session, demo.base_url)
    await client.login("admin", ADMIN_PASSWORD, project="admin")
    return client


def neutron_error(body: Any) -> dict[str, str]:
    assert set(body) == {"NeutronError"}, body
    error: dict[str, str] = body["NeutronError"]
    assert set(error) == {"type", "message", "detail"}, error
    return error


async def set_quota(admin: Any, project_id: str, **limits: int) -> dict[str, int]:
    status, body = await admin.put(f"{QUOTAS}/{project_id}", {"quota": limits})
    assert status == 200, body
    shown: dict[str, int] = body["quota"]
    return shown


async def used(api: Any, project_id: str) -> dict[str, tuple[int, int]]:
    """Each enforced resource's (limit, used), as the details show them."""
    status, body = await api.get(f"{QUOTAS}/{project_id}/details")
    assert status == 200, body
    assert all(usage["reserved"] == 0 for usage in body["quota"].values())
    kinds = ("network", "subnet", "port", "subnetpool")
    return {kind: (body["quota"][kind]["limit"], body["quota"][kind]["used"]) for kind in kinds}


async def create(api: Any, path: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
    status, body = await api.post(path, {key: fields})
    assert status == 201, body
    made: dict[str, Any] = body[key]
    return made


async def test_members_read_their_own_quotas_admins_set_list_and_reset_any(demo: Any, admin: Any) -> None:
    mine = f"{QUOTAS}/{demo.project_id}"
    for path in (mine, f"{mine}/default"):
        status, body = await demo.get(path)
        assert (status, body) == (200, {"quota": DEFAULTS}), body
    for status, body in (
        await demo.get(QUOTAS),
        await demo.get(f"{QUOTAS}/{admin.project_id}"),
        await demo.get(f"{QUOTAS}/{admin.project_id}/default"),
        await demo.get(f"{QUOTAS}/{admin.project_id}/details"),
        await demo.put(mine, {"quota": {"network": 1000}}),
        await demo.delete(mine),
    ):
        assert status == 403, body
        assert neutron_error(body)["message"]
    assert (await admin.get(QUOTAS))[1] == {"quotas": []}
    for word in ("default", "details"):  # a sibling route's word is no project's id
        assert (await admin.get(f"{QUOTAS}/{word}"))[0] == 404

    shown = await set_quota(admin, demo.project_id, network=5, subnetpool=2)
    assert shown == {**DEFAULTS, "network": 5, "subnetpool": 2}
    assert (await demo.get(mine))[1] == {"quota": shown}
    assert (await demo.get(f"{mine}/default"))[1] == {"quota": DEFAULTS}
    listed = {**shown, "project_id": demo.project_id, "tenant_id": demo.project_id}
    assert (await admin.get(QUOTAS))[1] == {"quotas": [listed]}
    assert (await admin.get(f"{QUOTAS}/{demo.project_id}"))[1] == {"quota": shown}

    status, body = await admin.delete(mine)
    assert status == 204, body
    assert (await demo.get(mine))[1] == {"quota": DEFAULTS}
    assert (await admin.get(QUOTAS))[1] == {"quotas": []}
    status, body = await admin.delete(mine)
    assert status == 404 and demo.project_id in neutron_error(body)["message"]


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ({"rbac_policy": 10}, "rbac_policy"),
        ({"network": 3, "floatingip": -2, "rbac_policy": -1}, "floatingip"),
        ({"network": -2}, "network"),
        ({"port": "many"}, "port"),
        ({"volumes": 3}, "volumes"),
    ],
)
async def test_bad_quota_changes_are_refused_naming_the_member_and_change_nothing(
    demo: Any, admin: Any, limits: dict[str, Any], named: str
) -> None:
    status, body = await admin.put(f"{QUOTAS}/{demo.project_id}", {"quota": limits})
    assert status == 400, body
    assert named in neutron_error(body)["message"]
    assert (await demo.get(f"{QUOTAS}/{demo.project_id}"))[1] == {"quota": DEFAULTS}
    assert (await admin.get(QUOTAS))[1] == {"quotas": []}


async def test_fifty_concurrent_network_creates_against_a_limit_of_five_make_exactly_five(
    demo: Any, admin: Any
) -> None:
    await set_quota(admin, demo.project_id, network=5)
    answers = await asyncio.gather(*(demo.post(NETWORKS, {"network": {"name": f"n{n}"}}) for n in range(50)))
    statuses = [status for status, _ in answers]
    assert statuses.count(201) == 5 and statuses.count(409) == 45, statuses
    for status, body in answers:
        if status == 409:
            assert neutron_error(body) == OVER_NETWORKS
    status, body = await demo.get(NETWORKS, params={"project_id": demo.project_id})
    assert len(body["networks"]) == 5
    assert (await used(demo, demo.project_id))["network"] == (5, 5)


async def test_usage_is_exact_after_creates_and_deletes(demo: Any, admin: Any) -> None:
    project = demo.project_id
    assert await used(demo, project) == {
        "network": (100, 0),
        "subnet": (100, 0),
        "port": (-1, 0),
        "subnetpool": (-1, 0),
    }
    first = await create(demo, NETWORKS, "network", {"name": "first"})
    second = await create(demo, NETWORKS, "network", {"name": "second"})
    for network, cidr in ((first, "10.1.0.0/24"), (second, "10.2.0.0/24")):
        await create(demo, SUBNETS, "subnet", {"network_id": network["id"], "cidr": cidr, "ip_version": 4})
    ports = [await create(demo, PORTS, "port", {"network_id": first["id"]}) for _ in range(3)]
    await create(demo, PORTS, "port", {"network_id": second["id"]})
    pool = await create(demo, SUBNETPOOLS, "subnetpool", {"prefixes": ["10.50.0.0/16"]})
    await create(admin, NETWORKS, "network", {"name": "the admin's"})  # another project's
    assert await used(demo, project) == {
        "network": (100, 2),
        "subnet": (100, 2),
        "port": (-1, 4),
        "subnetpool": (-1, 1),
    }
    assert (await demo.delete(f"{PORTS}/{ports[0]['id']}"))[0] == 204
    assert (await demo.delete(f"{NETWORKS}/{first['id']}"))[0] == 204  # its subnet and 2 ports go with it
    assert (await demo.delete(f"{SUBNETPOOLS}/{pool['id']}"))[0] == 204
    assert await used(demo, project) == {
        "network": (100, 1),
        "subnet": (100, 1),
        "port": (-1, 1),
        "subnetpool": (-1, 0),
    }
    assert (await used(admin, admin.project_id))["network"] == (100, 1)


async def test_bulk_create_past_the_limit_is_refused_whole(demo: Any, admin: Any) -> None:
    await set_quota(admin, demo.project_id, network=3, port=4)
    network = await create(demo, NETWORKS, "network", {"name": "one"})
    await create(
        demo, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "10.3.0.0/24", "ip_version": 4}
    )

    status, body = await demo.post(
        NETWORKS, {"networks": [{"name": "two"}, {"name": "three"}, {"name": "four"}]}
    )
    assert status == 409 and neutron_error(body) == OVER_NETWORKS
    status, body = await demo.post(PORTS, {"ports": [{"network_id": network["id"]}] * 5})
    assert status == 409, body
    assert neutron_error(body)["message"] == "Quota exceeded for resources: ['port']."
    assert await used(demo, demo.project_id) == {
        "network": (3, 1),
        "subnet": (100, 1),
        "port": (4, 0),
        "subnetpool": (-1, 0),
    }
    status, body = await demo.post(f"{BASE}/ports", {"ports": [{"network_id": network["id"]}] * 4})
    assert status == 201 and len(body["ports"]) == 4
    status, body = await demo.post(NETWORKS, {"networks": [{"name": "two"}, {"name": "three"}]})
    assert status == 201 and len(body["networks"]) == 2
    assert (await used(demo, demo.project_id))["port"] == (4, 4)


async def test_a_limit_below_usage_is_allowed_and_only_refuses_new_creates(demo: Any, admin: Any) -> None:
    made = [await create(demo, NETWORKS, "network", {"name": f"n{n}"}) for n in range(3)]
    await set_quota(admin, demo.project_id, network=1, subnet=0)
    assert (await used(demo, demo.project_id))["network"] == (1, 3)
    status, body = await demo.post(NETWORKS, {"network": {"name": "more"}})
    assert status == 409 and neutron_error(body) == OVER_NETWORKS
    status, body = await demo.post(
        SUBNETS, {"subnet": {"network_id": made[0]["id"], "cidr": "10.4.0.0/24", "ip_version": 4}}
    )
    assert status == 409 and neutron_error(body)["message"] == "Quota exceeded for resources: ['subnet']."
    for network in made[:2]:
        assert (await demo.delete(f"{NETWORKS}/{network['id']}"))[0] == 204
    status, body = await demo.post(NETWORKS, {"network": {"name": "still too many"}})
    assert status == 409, body
    assert (await demo.delete(f"{NETWORKS}/{made[2]['id']}"))[0] == 204
    await create(demo, NETWORKS, "network", {"name": "room again"})
    await set_quota(admin, demo.project_id, network=-1)
    await create(demo, NETWORKS, "network", {"name": "unlimited"})
    assert (await used(demo, demo.project_id))["network"] == (-1, 2)


async def test_check_limit_refuses_a_limit_below_usage_as_openstackclient_asks_and_force_sets_it(
    demo: Any, admin: Any
) -> None:
    for n in range(2):
        await create(demo, NETWORKS, "network", {"name": f"n{n}"})
    mine = f"{QUOTAS}/{demo.project_id}"
    status, body = await admin.put(mine, {"quota": {"port": 7, "network": 1, "check_limit": True}})
    assert status == 409, body
    assert neutron_error(body)["message"] == (
        "Quota limit 1 for network must be greater than or equal to already used 2"
    )
    assert (await demo.get(mine))[1] == {"quota": DEFAULTS}
    assert (await set_quota(admin, demo.project_id, network=2, check_limit=True))["network"] == 2
    assert (await set_quota(admin, demo.project_id, network=-1, check_limit=True))["network"] == -1
    assert (await set_quota(admin, demo.project_id, network=1, force=True))["network"] == 1


async def test_the_extensions_announce_quotas_and_their_details(demo: Any) -> None:
    status, body = await demo.get(f"{BASE}/extensions")
    assert status == 200
    assert {"quotas", "quota_details"} <= {extension["alias"] for extension in body["extensions"]}
    status, body = await demo.get(f"{BASE}/extensions/quota_details")
    assert status == 200 and body["extension"]["name"] == "Quota details management support"
