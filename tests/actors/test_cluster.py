"""The cluster actor: invitations that work once and expire, joins that hand out a host's bus
users, removal that revokes them, liveness reports, on a real nats-server and on each store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import bcrypt
import pytest

from actors.cluster import ClusterActor
from api.cluster import Cluster, ClusterHosts, ClusterJoin
from bus import Bus, Conflict, Forbidden, InvalidRequest, NoResponders, NotFound, request_scope
from deploy.credentials import join_users, member_users
from deploy.privacy import write_private
from runtime.config import Config


def _shared_files(data_dir: Path) -> None:
    """What a controller's data directory holds that a joining controller is given."""
    for name, text in {
        "ca/ca.pem": "CERT",
        "ca/ca.key": "KEY",
        "keys/token/0": "k0",
        "keys/token/1": "k1",
    }.items():
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        write_private(data_dir / name, text)
    (data_dir / "credentials").mkdir(exist_ok=True)
    write_private(data_dir / "credentials" / "admin.json", json.dumps({"user": "admin", "password": "pw"}))


@pytest.fixture
async def cluster(start_actor, config: Config, bus: Bus) -> Cluster:
    _shared_files(config.data_dir)
    await start_actor(
        ClusterActor,
        config,
        users_for=lambda host, role: member_users(host, role, config.prefix),
        join_user=lambda host, role: join_users(host, role, config.prefix),
    )
    client = Cluster.client(bus, timeout=10)
    async with asyncio.timeout(10):
        while True:
            try:
                await client.list_hosts()
                break
            except NoResponders:
                await asyncio.sleep(0.01)
    await client.register(name="controller-1", address="10.0.0.1", users=[])
    return client


def _checks(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (as nats-server reads it) is ``password``'s bcrypt hash."""
    return bcrypt.checkpw(password.encode(), ("$2b$" + hashed.removeprefix("$2a$")).encode())


async def test_a_compute_host_joins_with_its_invitation_and_a_resend_gets_the_same_grant(
    cluster: Cluster, bus: Bus
) -> None:
    invitation = await cluster.invite(name="compute-1", role="compute")
    assert invitation["nats_urls"] == ["nats://10.0.0.1:4222"]
    listed = {user["user"]: user for user in await cluster.authorization()}
    assert _checks(invitation["password"], listed["join@compute-1"]["password"])
    joining = ClusterJoin.client(bus, host="compute-1", timeout=10)

    grant = await joining.join(secret=invitation["password"], address="10.0.0.5")

    assert grant["role"] == "compute" and grant["controller"] is None and grant["authorization"] == []
    assert set(grant["users"]) == {"compute-1", "agent@compute-1"}
    listed = {user["user"]: user for user in await cluster.authorization()}
    assert "join@compute-1" not in listed
    for user, password in grant["users"].items():
        assert _checks(password, listed[user]["password"])
    (host,) = [h for h in await cluster.list_hosts() if h["name"] == "compute-1"]
    assert (host["state"], host["address"], host["alive"]) == ("joined", "10.0.0.5", True)
    assert await joining.join(secret=invitation["password"], address="10.0.0.6") == grant  # a resend
    assert {user["user"]: user for user in await cluster.authorization()} == listed


async def test_a_controller_is_given_what_controllers_share(cluster: Cluster, bus: Bus) -> None:
    invitation = await cluster.invite(name="controller-2", role="controller")
    grant = await ClusterJoin.client(bus, host="controller-2", timeout=10).join(
        secret=invitation["password"], address="10.0.0.2"
    )
    shared = grant["controller"]
    assert shared is not None
    assert (shared["ca_certificate"], shared["ca_key"]) == ("CERT", "KEY")
    assert shared["token_keys"] == {"0": "k0", "1": "k1"}
    assert shared["admin_password"] == "pw"
    assert shared["routes"] == ["nats-route://10.0.0.1:6222"]
    assert sorted(grant["nats_urls"]) == ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
    assert "conductor@controller-2" in grant["users"]
    assert {user["user"] for user in grant["authorization"]} >= set(grant["users"])


async def test_an_invite_asked_again_gets_the_same_invitation_and_a_new_one_replaces_it(
    cluster: Cluster, bus: Bus
) -> None:
    with request_scope():
        first = await cluster.invite(name="compute-5", role="compute")
        again = await cluster.invite(name="compute-5", role="compute")
    assert again == first
    replaced = await cluster.invite(name="compute-5", role="compute")
    assert replaced["password"] != first["password"]
    with pytest.raises(Forbidden, match="replaced"):
        await ClusterJoin.client(bus, host="compute-5", timeout=10).join(
            secret=first["password"], address="10.0.0.9"
        )


async def test_a_wrong_or_expired_secret_changes_nothing(cluster: Cluster, bus: Bus) -> None:
    invitation = await cluster.invite(name="compute-2", role="compute", ttl=0.5)
    joining = ClusterJoin.client(bus, host="compute-2", timeout=10)
    with pytest.raises(Forbidden, match="no invitation"):
        await joining.join(secret="x" * 43, address="10.0.0.7")
    with pytest.raises(Forbidden, match="no invitation"):
        await ClusterJoin.client(bus, host="compute-3", timeout=10).join(
            secret=invitation["password"], address="10.0.0.7"
        )
    await asyncio.sleep(0.6)
    assert "join@compute-2" not in {user["user"] for user in await cluster.authorization()}
    with pytest.raises(Forbidden, match="expired"):
        await joining.join(secret=invitation["password"], address="10.0.0.7")
    (host,) = [h for h in await cluster.list_hosts() if h["name"] == "compute-2"]
    assert host["state"] == "invited"


async def test_removing_a_host_revokes_its_users_and_its_reports(cluster: Cluster, bus: Bus) -> None:
    invitation = await cluster.invite(name="compute-4", role="compute")
    grant = await ClusterJoin.client(bus, host="compute-4", timeout=10).join(
        secret=invitation["password"], address="10.0.0.8"
    )
    reporter = ClusterHosts.client(bus, host="compute-4", timeout=10)
    await reporter.report(processes={"compute-4": "running"})
    with pytest.raises(Conflict, match="remove"):
        await cluster.invite(name="compute-4", role="compute")

    removed = await cluster.remove(name="compute-4")

    assert (removed["state"], removed["alive"]) == ("removed", False)
    assert not set(grant["users"]) & {user["user"] for user in await cluster.authorization()}
    with pytest.raises(Forbidden, match="not a member"):
        await reporter.report(processes={"compute-4": "running"})
    with pytest.raises(NotFound):
        await cluster.remove(name="compute-9")
    again = await cluster.invite(name="compute-4", role="compute")
    assert again["user"] == "join@compute-4"


async def test_a_host_may_not_take_another_hosts_bus_user(cluster: Cluster) -> None:
    await cluster.register(
        name="controller-1",
        address="10.0.0.1",
        users=[{"user": "admin", "password": "$2a$x", "permissions": {}}],
    )
    with pytest.raises(Conflict, match="admin"):
        await cluster.invite(name="admin", role="compute")
    assert "admin" not in {host["name"] for host in await cluster.list_hosts()}


async def test_bad_input_is_refused(cluster: Cluster, bus: Bus) -> None:
    with pytest.raises(InvalidRequest):
        await bus.call("cluster.invite", {"name": "a.b", "role": "compute"})
    with pytest.raises(InvalidRequest):
        await bus.call("cluster.invite", {"name": "c-1", "role": "queen"})
    with pytest.raises(InvalidRequest):
        await bus.call("cluster.invite", {"name": "c-1", "role": "compute", "ttl": -1})
    assert [host["name"] for host in await cluster.list_hosts()] == ["controller-1"]
