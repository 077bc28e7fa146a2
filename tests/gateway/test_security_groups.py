"""Neutron's security groups over real HTTP: the default group and its rules, CRUD, Neutron's checks
of a rule (each refusal a 4xx in Neutron's format that changes nothing), ports' groups and port
security, and project isolation."""

from __future__ import annotations

from typing import Any

import pytest

from actors.identity.actor import IdentityActor
from actors.net.actor import NetActor
from tests.gateway.test_network_api import bob, create, neutron_error  # noqa: F401 (bob: a fixture)

BASE = "/network/v2.0"
ADMIN_PASSWORD = "admin-secret"  # as tests/conftest.py bootstraps it
GROUPS, RULES, NETWORKS, PORTS = (
    f"{BASE}/{kind}" for kind in ("security-groups", "security-group-rules", "networks", "ports")
)
GROUP_KEYS = {
    "id", "name", "project_id", "tenant_id", "description", "security_group_rules", "revision_number",
    "tags", "created_at", "updated_at",
}  # fmt: skip
RULE_KEYS = {
    "id", "security_group_id", "project_id", "tenant_id", "direction", "ethertype", "protocol",
    "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id", "normalized_cidr",
    "description", "revision_number", "created_at", "updated_at",
}  # fmt: skip


@pytest.fixture
async def demo(start_actor, config, api: Any) -> Any:
    """The identity and net actors behind the gateway, and ``api`` logged in as demo (a member)."""
    await start_actor(IdentityActor, config)
    await start_actor(NetActor, config)
    await api.login()
    return api


def traffic(rule: dict[str, Any]) -> tuple[Any, ...]:
    return (rule["direction"], rule["ethertype"], rule["protocol"], rule["remote_group_id"])


async def default_group(api: Any) -> dict[str, Any]:
    status, body = await api.get(GROUPS, params={"name": "default"})
    assert status == 200 and len(body["security_groups"]) == 1, body
    group: dict[str, Any] = body["security_groups"][0]
    return group


async def rule(api: Any, group_id: str, **fields: Any) -> tuple[int, Any]:
    asked = {"security_group_id": group_id, "direction": "ingress", **fields}
    return await api.post(RULES, {"security_group_rule": asked})


async def test_a_project_gets_its_default_group_with_neutrons_four_rules_once(demo: Any) -> None:
    group = await default_group(demo)
    assert set(group) == GROUP_KEYS
    assert (group["name"], group["description"]) == ("default", "Default security group")
    assert all(set(each) == RULE_KEYS for each in group["security_group_rules"])
    assert sorted(traffic(each) for each in group["security_group_rules"]) == [
        ("egress", "IPv4", None, None),
        ("egress", "IPv6", None, None),
        ("ingress", "IPv4", None, group["id"]),
        ("ingress", "IPv6", None, group["id"]),
    ]
    assert (await default_group(demo))["id"] == group["id"]
    status, body = await demo.post(GROUPS, {"security_group": {"name": "default"}})
    assert status == 409 and neutron_error(body)["type"] == "SecurityGroupDefaultAlreadyExists"
    status, body = await demo.delete(f"{GROUPS}/{group['id']}")
    assert status == 409 and neutron_error(body)["type"] == "SecurityGroupCannotRemoveDefault"
    status, body = await demo.put(f"{GROUPS}/{group['id']}", {"security_group": {"name": "mine"}})
    assert status == 409 and neutron_error(body)["type"] == "SecurityGroupCannotUpdateDefault"


async def test_groups_are_created_listed_updated_shown_and_deleted(demo: Any) -> None:
    group = await create(demo, GROUPS, "security_group", {"name": "web", "description": "the web"})
    assert set(group) == GROUP_KEYS and group["revision_number"] == 1
    assert sorted(traffic(each) for each in group["security_group_rules"]) == [
        ("egress", "IPv4", None, None),
        ("egress", "IPv6", None, None),
    ]
    status, body = await demo.get(GROUPS)
    assert status == 200 and {"web", "default"} == {g["name"] for g in body["security_groups"]}
    status, body = await demo.put(f"{GROUPS}/{group['id']}", {"security_group": {"name": "www"}})
    assert status == 200 and body["security_group"]["name"] == "www"
    assert body["security_group"]["revision_number"] == 2
    assert body["security_group"]["description"] == "the web"
    status, body = await demo.get(f"{GROUPS}/{group['id']}", params={"fields": "name"})
    assert (status, body) == (200, {"security_group": {"name": "www"}})
    assert (await demo.delete(f"{GROUPS}/{group['id']}"))[0] == 204
    status, body = await demo.get(f"{GROUPS}/{group['id']}")
    assert status == 404 and neutron_error(body)["type"] == "SecurityGroupNotFound"
    status, body = await demo.get(RULES, params={"security_group_id": group["id"]})
    assert (status, body) == (200, {"security_group_rules": []})
    status, body = await demo.delete(f"{GROUPS}/{group['id']}")
    assert status == 404 and neutron_error(body)["message"] == f"Security group {group['id']} does not exist"


async def test_rules_are_kept_as_asked_shown_listed_and_deleted(demo: Any) -> None:
    group = await create(demo, GROUPS, "security_group", {"name": "ssh"})
    ssh = {"protocol": "tcp", "port_range_min": 22, "port_range_max": 23, "remote_ip_prefix": "10.0.0.7/24"}
    status, body = await rule(demo, group["id"], **ssh)
    assert status == 201, body
    made = body["security_group_rule"]
    assert set(made) == RULE_KEYS
    assert (made["protocol"], made["port_range_min"], made["port_range_max"]) == ("tcp", 22, 23)
    assert (made["remote_ip_prefix"], made["normalized_cidr"]) == ("10.0.0.7/24", "10.0.0.0/24")
    assert made["ethertype"] == "IPv4" and made["project_id"] == group["project_id"]
    status, body = await rule(demo, group["id"], protocol=17)
    assert status == 201 and body["security_group_rule"]["protocol"] == "17"
    status, body = await rule(demo, group["id"], protocol="icmp", port_range_min=8, port_range_max=0)
    assert status == 201 and body["security_group_rule"]["port_range_max"] == 0
    status, body = await rule(demo, group["id"], ethertype="IPv6", protocol="ipv6-icmp")
    assert status == 201, body
    status, body = await rule(demo, group["id"], remote_group_id=group["id"], protocol="any")
    assert status == 201 and body["security_group_rule"]["protocol"] is None
    status, body = await demo.get(f"{RULES}/{made['id']}")
    assert status == 200 and body["security_group_rule"] == made
    status, body = await demo.get(RULES, params={"security_group_id": group["id"], "direction": "ingress"})
    assert status == 200 and len(body["security_group_rules"]) == 5
    status, body = await demo.get(f"{GROUPS}/{group['id']}")
    assert len(body["security_group"]["security_group_rules"]) == 7
    assert (await demo.delete(f"{RULES}/{made['id']}"))[0] == 204
    status, body = await demo.get(f"{RULES}/{made['id']}")
    assert status == 404 and neutron_error(body)["type"] == "SecurityGroupRuleNotFound"


BAD_RULES = [
    ({"protocol": "tcp", "port_range_min": 77, "port_range_max": 66}, "port_range_min must be <="),
    ({"protocol": "tcp", "port_range_min": -16, "port_range_max": 80}, "Invalid value for port -16"),
    ({"protocol": "tcp", "port_range_min": 80, "port_range_max": 65536}, "Invalid value for port 65536"),
    ({"protocol": "tcp", "port_range_max": 6}, "port_range_min must be <= port_range_max"),
    ({"protocol": "tcp", "port_range_min": 0, "port_range_max": 6}, "Invalid value for port 0"),
    ({"protocol": "icmp", "port_range_min": 1, "port_range_max": 256}, "Invalid value for ICMP code"),
    ({"protocol": "icmp", "port_range_min": 300, "port_range_max": 1}, "Invalid value for ICMP type"),
    ({"protocol": "icmp", "port_range_max": 6}, "ICMP type (port-range-min) is missing"),
    ({"protocol": "gre", "port_range_min": 1, "port_range_max": 2}, "Invalid protocol gre for port range"),
    ({"port_range_min": 22, "port_range_max": 22}, "Must also specify protocol if port range is given."),
    ({"protocol": "bad"}, "Security group rule protocol bad not supported."),
    ({"protocol": 256}, "Security group rule protocol 256 not supported."),
    ({"protocol": "icmpv6"}, "Invalid ethertype IPv4 for protocol icmpv6."),
    ({"remote_ip_prefix": "10.0.0.300/24"}, "Invalid CIDR 10.0.0.300/24 given as IP prefix."),
    ({"remote_ip_prefix": "192.168.1.1/33"}, "Invalid CIDR 192.168.1.1/33 given as IP prefix."),
    ({"remote_ip_prefix": "bad_prefix"}, "Invalid CIDR bad_prefix given as IP prefix."),
    ({"remote_ip_prefix": "2001:db8::/64"}, "Conflicting value ethertype IPv4 for CIDR 2001:db8::/64"),
    ({"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"}, "Conflicting value ethertype IPv6 for CIDR"),
    ({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "GROUP"}, "Only remote_ip_prefix or"),
    ({"ethertype": "IPv5"}, "ethertype"),
    ({"direction": "sideways"}, "direction"),
]  # fmt: skip


async def test_bad_rules_are_a_400_in_neutrons_words_and_change_nothing(demo: Any) -> None:
    group = await create(demo, GROUPS, "security_group", {"name": "strict"})
    for fields, words in BAD_RULES:
        asked = {key: group["id"] if value == "GROUP" else value for key, value in fields.items()}
        status, body = await rule(demo, group["id"], **asked)
        assert status == 400 and words in neutron_error(body)["message"], (fields, body)
    status, body = await demo.get(RULES, params={"security_group_id": group["id"]})
    assert len(body["security_group_rules"]) == 2


async def test_a_rule_for_the_same_traffic_is_a_409_naming_the_one_there(demo: Any) -> None:
    group = await create(demo, GROUPS, "security_group", {"name": "dup"})
    status, body = await rule(demo, group["id"], protocol="tcp", port_range_min=22, port_range_max=22)
    first = body["security_group_rule"]["id"]
    for same in (
        {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
        {"protocol": "6", "port_range_min": 22, "port_range_max": 22},
    ):
        status, body = await rule(demo, group["id"], **same)
        assert status == 409 and neutron_error(body)["type"] == "SecurityGroupRuleExists"
        assert neutron_error(body)["message"] == f"Security group rule already exists. Rule id is {first}."
    status, body = await rule(demo, group["id"], remote_ip_prefix="10.1.2.3/16")
    assert status == 201
    status, body = await rule(demo, group["id"], remote_ip_prefix="10.1.0.0/16")
    assert status == 409
    status, body = await rule(demo, group["id"], protocol="tcp", port_range_min=22, port_range_max=23)
    assert status == 201


async def test_a_missing_group_or_remote_group_is_a_404(demo: Any, bob: Any) -> None:  # noqa: F811
    group = await create(demo, GROUPS, "security_group", {"name": "mine"})
    theirs = await create(bob, GROUPS, "security_group", {"name": "theirs"})
    status, body = await rule(demo, "no-such-group")
    assert status == 404 and neutron_error(body)["type"] == "SecurityGroupNotFound"
    status, body = await rule(demo, group["id"], remote_group_id="no-such-group")
    assert status == 404 and neutron_error(body)["message"] == "Security group no-such-group does not exist"
    status, body = await rule(demo, group["id"], remote_group_id=theirs["id"])
    assert status == 404
    status, body = await rule(bob, group["id"])
    assert status == 404
    assert (await bob.get(f"{GROUPS}/{group['id']}"))[0] == 404
    status, body = await bob.get(GROUPS)
    assert {g["name"] for g in body["security_groups"]} == {"default", "theirs"}
    status, body = await bob.get(RULES)
    assert {r["security_group_id"] for r in body["security_group_rules"]} == {
        g["id"] for g in (await bob.get(GROUPS))[1]["security_groups"]
    }


async def test_ports_are_in_the_default_group_or_those_asked_and_keep_groups_in_use(demo: Any) -> None:
    network = await create(demo, NETWORKS, "network", {"name": "sg"})
    web = await create(demo, GROUPS, "security_group", {"name": "web"})
    plain = await create(demo, PORTS, "port", {"network_id": network["id"]})
    default = await default_group(demo)
    assert plain["security_groups"] == [default["id"]] and plain["port_security_enabled"] is True
    asked = await create(demo, PORTS, "port", {"network_id": network["id"], "security_groups": [web["id"]]})
    assert asked["security_groups"] == [web["id"]]
    status, body = await demo.delete(f"{GROUPS}/{web['id']}")
    assert status == 409 and neutron_error(body)["type"] == "SecurityGroupInUse"
    both = sorted([web["id"], default["id"]])
    status, body = await demo.put(f"{PORTS}/{plain['id']}", {"port": {"security_groups": both}})
    assert status == 200 and body["port"]["security_groups"] == both
    status, body = await demo.put(f"{PORTS}/{plain['id']}", {"port": {"port_security_enabled": False}})
    assert status == 409 and neutron_error(body)["type"] == "PortSecurityPortHasSecurityGroup"
    off = {"port_security_enabled": False, "security_groups": []}
    status, body = await demo.put(f"{PORTS}/{plain['id']}", {"port": off})
    assert status == 200 and (body["port"]["port_security_enabled"], body["port"]["security_groups"]) == (
        False,
        [],
    )
    status, body = await demo.put(f"{PORTS}/{plain['id']}", {"port": {"security_groups": [web["id"]]}})
    assert status == 400 and "Port security must be enabled" in neutron_error(body)["message"]
    status, body = await demo.post(
        PORTS, {"port": {"network_id": network["id"], "port_security_enabled": False}}
    )
    assert status == 201 and body["port"]["security_groups"] == []
    missing = {"network_id": network["id"], "security_groups": ["nope"]}
    status, body = await demo.post(PORTS, {"port": missing})
    assert status == 404 and neutron_error(body)["type"] == "SecurityGroupNotFound"
    status, body = await demo.get(PORTS, params={"network_id": network["id"]})
    assert len(body["ports"]) == 3
    assert (await demo.delete(f"{PORTS}/{asked['id']}"))[0] == 204
    assert (await demo.delete(f"{GROUPS}/{web['id']}"))[0] == 204


async def test_groups_and_rules_past_the_quota_are_a_409_and_the_default_group_counts(demo: Any) -> None:
    admin = type(demo)(demo.session, demo.base_url)
    await admin.login("admin", ADMIN_PASSWORD, project="admin")
    quota = f"{BASE}/quotas/{demo.project_id}"
    status, body = await admin.put(quota, {"quota": {"security_group": 2, "security_group_rule": 6}})
    assert status == 200 and body["quota"]["security_group"] == 2
    group = await create(demo, GROUPS, "security_group", {"name": "one"})
    status, body = await demo.post(GROUPS, {"security_group": {"name": "two"}})
    assert status == 409 and neutron_error(body)["type"] == "OverQuota"
    status, body = await rule(demo, group["id"], protocol="tcp", port_range_min=1, port_range_max=1)
    assert (
        status == 409
        and neutron_error(body)["message"] == "Quota exceeded for resources: ['security_group_rule']."
    )
    status, body = await demo.get(f"{quota}/details")
    assert body["quota"]["security_group"] == {"limit": 2, "used": 2, "reserved": 0}
    assert body["quota"]["security_group_rule"] == {"limit": 6, "used": 6, "reserved": 0}


async def test_an_admin_listing_groups_sees_every_projects_and_gets_a_default_group_of_its_own(
    demo: Any,
) -> None:
    await demo.get(GROUPS)  # the demo project's default group, made on its first list
    admin = type(demo)(demo.session, demo.base_url)
    await admin.login("admin", ADMIN_PASSWORD, project="admin")
    status, body = await admin.get(GROUPS, params={"name": "default"})
    assert status == 200
    assert sorted(group["project_id"] for group in body["security_groups"]) == sorted(
        [admin.project_id, demo.project_id]
    )
