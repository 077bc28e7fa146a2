"""The token actor: bootstrap users, password login, validation, administration, over REST too."""

from __future__ import annotations

import pytest

from actors.token import TokenActor, check_password, hash_password
from bus import Bus, Context, Forbidden, Unauthorized, request_scope


@pytest.fixture
async def token_actor(start_actor, config) -> TokenActor:
    return await start_actor(TokenActor, config)


async def test_bootstrap_creates_admin_and_demo_who_can_log_in(bus: Bus, token_actor) -> None:
    admin = await bus.call("token.issue", {"username": "admin", "password": "admin-secret"})
    assert admin["project"]["name"] == "admin"
    assert [role["name"] for role in admin["roles"]] == ["admin"]
    demo = await bus.call(
        "token.issue", {"username": "demo", "password": "demo-secret", "project_name": "demo"}
    )
    assert [role["name"] for role in demo["roles"]] == ["member"]
    info = await bus.call("token.validate", {"token": demo["token"]})
    assert info["user_name"] == "demo"
    assert info["project_id"] == demo["project"]["id"]
    assert info["roles"] == ["member"]
    assert info["expires_at"] > info["issued_at"]


async def test_wrong_password_and_unknown_user_get_the_same_answer(bus: Bus, token_actor) -> None:
    with pytest.raises(Unauthorized) as wrong:
        await bus.call("token.issue", {"username": "demo", "password": "nope"})
    with pytest.raises(Unauthorized) as unknown:
        await bus.call("token.issue", {"username": "nobody", "password": "nope"})
    assert wrong.value.message == unknown.value.message


async def test_garbage_and_expired_tokens_are_refused(bus: Bus, start_actor, config) -> None:
    await start_actor(TokenActor, config, token_ttl=0.05)
    issued = await bus.call("token.issue", {"username": "demo", "password": "demo-secret"})
    with pytest.raises(Unauthorized):
        await bus.call("token.validate", {"token": "not-a-token"})
    import asyncio

    await asyncio.sleep(0.1)
    with pytest.raises(Unauthorized):
        await bus.call("token.validate", {"token": issued["token"]})


async def test_only_admin_manages_identities(bus: Bus, token_actor) -> None:
    demo = await bus.call("token.issue", {"username": "demo", "password": "demo-secret"})
    member = Context(demo["user"]["id"], demo["project"]["id"], ("member",), demo["token"])
    with request_scope(context=member), pytest.raises(Forbidden):
        await bus.call("token.create_project", {"name": "sneaky"})
    admin = await bus.call("token.issue", {"username": "admin", "password": "admin-secret"})
    admin_ctx = Context(admin["user"]["id"], admin["project"]["id"], ("admin",), admin["token"])
    with request_scope(context=admin_ctx):
        await bus.call("token.create_project", {"name": "team"})
        await bus.call("token.create_user", {"name": "alice", "password": "pw", "default_project": "team"})
        await bus.call("token.grant_role", {"user": "alice", "project": "team", "role": "member"})
    alice = await bus.call("token.issue", {"username": "alice", "password": "pw"})
    assert alice["project"]["name"] == "team"


def test_passwords_are_stored_as_scrypt_hashes() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert check_password("s3cret", stored)
    assert not check_password("s3cret!", stored)


async def test_rest_login_returns_201_token_header_and_catalog(api, token_actor) -> None:
    token = await api.login("demo", "demo-secret")
    assert token
    status, body = await api.post(
        "/identity/v3/auth/tokens",
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "demo", "password": "bad"}},
                }
            }
        },
    )
    assert status == 401
    assert "authentication" in body["error"]["message"]
    status, body = await api.post("/identity/v3/auth/tokens", {"auth": "nonsense"})
    assert status == 400
    status, _ = await api.request("POST", "/identity/v3/auth/tokens", data=b"{not json")
    assert status == 400
