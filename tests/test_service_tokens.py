"""Service tokens (Keystone's X-Service-Token): long work carries on when the user's token expires.

A build that outlives the user's token still goes ACTIVE with its port and volume, because the
conductor and the node send their service token with the calls they make for the user; the same
expired token sent by the user itself is refused (401 at the gateway, Unauthorized on the bus), and
a user cannot pass its own token off as a service token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from api.identity import ServiceToken, ServiceTokens, Token, Tokens
from api.net import Net
from bus import AiostackError, Bus, Context, Forbidden, StoreUnavailable, Unauthorized, request_scope
from deploy.credentials import Principal, permissions
from node.actor import NodeActor
from node.testnode import write_test_node_file
from runtime.auth import keep_service_token
from tests.helpers import DEMO_PASSWORD, Api

USER_TOKEN_TTL = 6.0
"""Long enough to log in, make a volume and ask for a server; shorter than the node's build delay."""


def context_of(issued: Token, service_token: str | None = None) -> Context:
    project = issued["project"]
    roles = tuple(role["name"] for role in issued["roles"])
    return Context(
        issued["user"]["id"], project["id"] if project else None, roles, issued["token"], service_token
    )


async def expired(issued: Token) -> None:
    """Wait until the token has expired."""
    await asyncio.sleep(max(0.0, issued["expires_at"] - time.time()) + 0.2)


async def list_networks(bus: Bus, ctx: Context) -> list[str]:
    """The names of the networks ``ctx`` sees (the shared ``default`` one: any valid caller)."""
    with request_scope(context=ctx):
        return [network["name"] for network in await Net.client(bus).list_networks()]


async def service_token(bus: Bus) -> str:
    with request_scope():
        return (await ServiceTokens.client(bus).issue_service_token())["token"]


async def test_an_expired_user_token_is_accepted_on_the_bus_only_with_a_service_token(
    bus: Bus, start_actor, config
) -> None:
    await start_actor(IdentityActor, config, token_ttl=2.0)
    await start_actor(NetActor, config, secure=True)
    tokens = Tokens.client(bus)
    demo = await tokens.issue(username="demo", password=DEMO_PASSWORD)
    await list_networks(bus, context_of(demo))
    await expired(demo)
    with pytest.raises(Unauthorized):
        await list_networks(bus, context_of(demo))
    assert await list_networks(bus, context_of(demo, await service_token(bus))) == ["default"]


async def test_a_users_own_token_is_no_service_token(bus: Bus, start_actor, config) -> None:
    await start_actor(IdentityActor, config, token_ttl=2.0)
    await start_actor(NetActor, config, secure=True)
    tokens = Tokens.client(bus)
    demo = await tokens.issue(username="demo", password=DEMO_PASSWORD)
    admin = await tokens.issue(username="admin", password="admin-secret")
    await expired(demo)
    fresh = await tokens.issue(username="demo", password=DEMO_PASSWORD)
    for not_a_service in (fresh["token"], admin["token"], "not-a-token"):
        with pytest.raises(Unauthorized):
            await list_networks(bus, context_of(demo, not_a_service))
    with request_scope(context=context_of(fresh)), pytest.raises(Forbidden):
        await ServiceTokens.client(bus).issue_service_token()


async def test_the_identity_service_itself_lets_only_a_service_token_vouch_for_an_expired_one(
    bus: Bus, start_actor, config
) -> None:
    await start_actor(IdentityActor, config, token_ttl=2.0)
    tokens = Tokens.client(bus)
    demo = await tokens.issue(username="demo", password=DEMO_PASSWORD)
    admin = await tokens.issue(username="admin", password="admin-secret")
    await expired(demo)
    for not_a_service in (admin["token"], "not-a-token"):
        with pytest.raises(Unauthorized):
            await tokens.validate(token=demo["token"], service_token=not_a_service)
    with pytest.raises(Unauthorized):
        await tokens.validate(token=demo["token"])
    vouched = await tokens.validate(token=demo["token"], service_token=await service_token(bus))
    assert vouched["user_id"] == demo["user"]["id"]


def test_the_gateway_may_not_ask_for_a_service_token_and_the_conductor_and_nodes_may() -> None:
    subject = f"aiostack.rpc.{ServiceTokens.address}.issue_service_token"
    hosts = {"node": ("node-1",)}
    publishes = {
        kind: permissions(Principal(kind, kind, hosts.get(kind, ())), "aiostack")["publish"]["allow"]
        for kind in ("gateway", "conductor", "node", "net")
    }
    allowed = {kind: subject in subjects for kind, subjects in publishes.items()}
    assert allowed == {"gateway": False, "conductor": True, "node": True, "net": False}


async def test_a_service_token_vouches_neither_for_a_revoked_token_nor_past_the_stale_window(
    bus: Bus, start_actor, config
) -> None:
    identity = await start_actor(IdentityActor, config, token_ttl=1.0, stale_window=3.0)
    await start_actor(NetActor, config, secure=True)
    tokens = Tokens.client(bus)
    revoked = await tokens.issue(username="demo", password=DEMO_PASSWORD)
    stale = await tokens.issue(username="demo", password=DEMO_PASSWORD)
    await identity.tokens.revoke_token(token=revoked["token"])  # type: ignore[attr-defined]
    await expired(stale)
    vouching = await service_token(bus)
    with pytest.raises(Unauthorized):
        await list_networks(bus, context_of(revoked, vouching))
    assert await list_networks(bus, context_of(stale, vouching)) == ["default"]
    await asyncio.sleep(max(0.0, stale["expires_at"] + 3.0 - time.time()) + 0.2)
    with pytest.raises(Unauthorized):
        await tokens.validate(token=stale["token"], service_token=await service_token(bus))


@pytest.fixture
async def slow_cloud(start_actor, config) -> list[Any]:
    """Every actor, user tokens living ``USER_TOKEN_TTL`` s, one node whose builds wait longer."""
    actors = [await start_actor(IdentityActor, config, token_ttl=USER_TOKEN_TTL)]
    for actor_class in (SchedulerActor, ConductorActor, ImageActor, NetActor, VolumeActor):
        actors.append(await start_actor(actor_class, config, secure=True))
    uri = write_test_node_file(config.data_dir / "nodes" / "node-1" / "testnode.xml", vcpus=8, memory_mb=8192)
    node = await start_actor(
        NodeActor, config, host="node-1", libvirt_uri=uri, build_delay=USER_TOKEN_TTL + 1.0, secure=True
    )
    await node.report_capacity()  # type: ignore[attr-defined]
    return [*actors, node]


async def wait_for_status(api: Api, server_id: str, wanted: str) -> dict[str, Any]:
    """The server once it has the status wanted (or ERROR), logging in again when the token expires."""
    for _ in range(300):
        status, body = await api.get(f"/compute/v2.1/servers/{server_id}")
        if status == 401:
            await api.login()
            continue
        assert status == 200, body
        if body["server"]["status"] in (wanted, "ERROR"):
            break
        await asyncio.sleep(0.1)
    assert body["server"]["status"] == wanted, body["server"]
    return body["server"]


async def test_a_build_outliving_the_users_token_goes_active_with_its_port_and_volume(
    api: Api, slow_cloud
) -> None:
    expired_token = await api.login()
    started = time.time()
    volumes = f"/volume/v3/{api.project_id}/volumes"
    status, volume = await api.post(volumes, {"volume": {"size": 1}})
    assert status == 202, volume
    volume_id = volume["volume"]["id"]
    status, images = await api.get("/image/v2/images?name=aiostack-tiny")
    assert status == 200, images
    status, created = await api.post(
        "/compute/v2.1/servers",
        {
            "server": {
                "name": "slow",
                "imageRef": images["images"][0]["id"],
                "flavorRef": "1",
                "networks": "auto",
                "block_device_mapping_v2": [
                    {"uuid": volume_id, "source_type": "volume", "destination_type": "volume"}
                ],
            }
        },
    )
    assert status == 202, created
    server_id = created["server"]["id"]
    await asyncio.sleep(max(0.0, started + USER_TOKEN_TTL - time.time()) + 0.2)
    status, refused = await api.get(f"/compute/v2.1/servers/{server_id}")
    assert status == 401, refused  # the user's own token, expired, is refused

    server = await wait_for_status(api, server_id, "ACTIVE")
    assert server["addresses"], server
    status, ports = await api.get(f"/network/v2.0/ports?device_id={server_id}")
    assert status == 200 and len(ports["ports"]) == 1, ports
    status, shown = await api.get(f"{volumes}/{volume_id}")
    assert shown["volume"]["status"] == "in-use", shown
    assert [a["server_id"] for a in shown["volume"]["attachments"]] == [server_id]
    status, refused = await api.get(
        f"/compute/v2.1/servers/{server_id}", headers={"X-Auth-Token": expired_token}
    )
    assert status == 401, refused


async def test_node_actors_sharing_a_connection_keep_one_service_token_between_them(bus: Bus) -> None:
    asked: list[str] = []

    def issuer(name: str) -> Callable[[], Awaitable[ServiceToken]]:
        async def issue() -> ServiceToken:
            asked.append(name)
            return {"token": f"token-of-{name}", "expires_at": time.time() + 3600}

        return issue

    first = asyncio.create_task(keep_service_token(bus, issuer("first")))
    second = asyncio.create_task(keep_service_token(bus, issuer("second")))
    async with asyncio.timeout(10):
        while bus.service_token is None:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert asked == ["first"] and bus.service_token == "token-of-first"
    first.cancel()
    async with asyncio.timeout(10):
        while asked == ["first"]:
            await asyncio.sleep(0.01)
    assert asked == ["first", "second"] and bus.service_token == "token-of-second"
    second.cancel()


async def test_a_service_token_past_its_expiry_is_no_longer_sent(bus: Bus) -> None:
    answers: list[ServiceToken | AiostackError] = [
        {"token": "short-lived", "expires_at": time.time() + 0.5},
        StoreUnavailable("identity is away"),
    ]

    async def issue() -> ServiceToken:
        answer = answers[0] if len(answers) == 1 else answers.pop(0)
        if isinstance(answer, AiostackError):
            raise answer
        return answer

    keeper = asyncio.create_task(keep_service_token(bus, issue, retry=0.1))
    async with asyncio.timeout(10):
        while bus.service_token != "short-lived":
            await asyncio.sleep(0.01)
        while bus.service_token is not None:
            await asyncio.sleep(0.05)
    keeper.cancel()
