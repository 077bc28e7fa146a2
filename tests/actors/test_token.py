"""The token actor: login and lockout, Fernet tokens, re-scoping, key rotation, revocation,
groups, application credentials and administration, on a real nats-server, sqlite and files."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from actors.token import TOKEN_INVALID, TokenActor, check_password, hash_password
from actors.token_passwords import AUTH_FAILED
from bus import (
    Bus,
    Conflict,
    Context,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
    decode,
    request_scope,
)
from tests.conftest import ADMIN_PASSWORD
from tests.helpers import DEMO_PASSWORD

VALIDATE_KEYS = {
    "user_id",
    "user_name",
    "domain_id",
    "project_id",
    "project_name",
    "roles",
    "audit_id",
    "methods",
    "issued_at",
    "expires_at",
    "app_cred_id",
}


@pytest.fixture
async def token_actor(start_actor, config) -> TokenActor:
    return await start_actor(TokenActor, config)


def context_of(issued: dict[str, Any]) -> Context:
    """The context the gateway would build for an issued token."""
    project = issued["project"]["id"] if issued["project"] else None
    return Context(issued["user"]["id"], project, tuple(r["name"] for r in issued["roles"]), issued["token"])


async def login(bus: Bus, user: str, password: str, **scope: Any) -> dict[str, Any]:
    return await bus.call("token.issue", {"username": user, "password": password, **scope})


async def as_admin(bus: Bus, address: str, body: dict[str, Any] | None = None) -> Any:
    """Call as the bootstrap admin (a real admin token in the context)."""
    admin = await login(bus, "admin", ADMIN_PASSWORD)
    with request_scope(context=context_of(admin)):
        return await bus.call(address, body or {})


async def refused(bus: Bus, token: str) -> str:
    """The message validate refuses ``token`` with (fails the test if it is valid)."""
    with pytest.raises(Unauthorized) as error:
        await bus.call("token.validate", {"token": token})
    return error.value.message


async def poll_until(check: Callable[[], Awaitable[bool]], bound: float) -> None:
    """Poll ``check`` until it is true; fail if it is not within ``bound`` seconds."""
    async with asyncio.timeout(bound):
        while not await check():
            await asyncio.sleep(0.05)


@pytest.fixture
async def revocations(bus: Bus) -> AsyncIterator[list[dict[str, Any]]]:
    """Every message published on ``<prefix>.auth.revoked``, in arrival order."""
    seen: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        seen.append(decode(msg.data).body)

    subscription = await bus.subscribe(bus.subject("auth.revoked"), collect)
    await bus.flush()
    yield seen
    await subscription.unsubscribe()


async def published(seen: list[dict[str, Any]], kind: str, target: str) -> dict[str, Any]:
    async def arrived() -> bool:
        return any(e["kind"] == kind and e["id"] == target for e in seen)

    await poll_until(arrived, 5)
    return next(e for e in seen if e["kind"] == kind and e["id"] == target)


# -- login ----------------------------------------------------------------------------------------


async def test_bootstrap_creates_admin_and_demo_who_can_log_in(bus: Bus, token_actor) -> None:
    admin = await login(bus, "admin", ADMIN_PASSWORD)
    assert admin["project"]["name"] == "admin"
    assert [role["name"] for role in admin["roles"]] == ["admin"]
    demo = await login(bus, "demo", DEMO_PASSWORD, project_name="demo")
    assert [role["name"] for role in demo["roles"]] == ["member"]
    assert demo["methods"] == ["password"] and demo["audit_ids"] == [demo["audit_id"]]
    info = await bus.call("token.validate", {"token": demo["token"]})
    assert set(info) == VALIDATE_KEYS
    assert info["user_name"] == "demo" and info["domain_id"] == "default"
    assert info["project_id"] == demo["project"]["id"]
    assert info["roles"] == ["member"]
    assert info["audit_id"] == demo["audit_id"] and info["methods"] == ["password"]
    assert info["app_cred_id"] is None
    assert info["expires_at"] > info["issued_at"]
    by_id = await bus.call("token.issue", {"user_id": demo["user"]["id"], "password": DEMO_PASSWORD})
    assert by_id["user"]["name"] == "demo"
    unscoped = await login(bus, "demo", DEMO_PASSWORD, unscoped=True)
    assert unscoped["project"] is None and unscoped["roles"] == []
    assert (await bus.call("token.validate", {"token": unscoped["token"]}))["project_id"] is None


async def test_no_token_is_stored(token_actor) -> None:
    tables = await token_actor.store.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    assert "tokens" not in {row["name"] for row in tables}


async def test_every_login_failure_gets_the_same_answer(bus: Bus, start_actor, config) -> None:
    await start_actor(TokenActor, config, lockout_failures=3)
    for call in (
        ("token.create_project", {"name": "closed"}),
        ("token.create_user", {"name": "gone", "password": "pw-gone", "default_project": "demo"}),
        ("token.grant_role", {"user": "gone", "project": "demo", "role": "member"}),
        ("token.create_user", {"name": "norole", "password": "pw-norole"}),
        ("token.create_user", {"name": "locked", "password": "pw-locked", "default_project": "demo"}),
        ("token.grant_role", {"user": "locked", "project": "demo", "role": "member"}),
        ("token.grant_role", {"user": "demo", "project": "closed", "role": "member"}),
        ("token.update_user", {"user_id": "gone", "enabled": False}),
        ("token.update_project", {"project_id": "closed", "enabled": False}),
    ):
        await as_admin(bus, *call)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await login(bus, "locked", "wrong")
    attempts = {
        "wrong password": {"username": "demo", "password": "nope"},
        "unknown user": {"username": "nobody", "password": "nope"},
        "unknown user id": {"user_id": "0" * 32, "password": "nope"},
        "disabled user": {"username": "gone", "password": "pw-gone"},
        "disabled project": {"username": "demo", "password": DEMO_PASSWORD, "project_name": "closed"},
        "unknown project": {"username": "demo", "password": DEMO_PASSWORD, "project_name": "nowhere"},
        "no role": {"username": "norole", "password": "pw-norole", "project_name": "demo"},
        "locked": {"username": "locked", "password": "pw-locked"},
    }
    messages = {}
    for what, body in attempts.items():
        with pytest.raises(Unauthorized) as error:
            await bus.call("token.issue", body)
        messages[what] = error.value.message
    assert set(messages.values()) == {AUTH_FAILED}, messages


async def test_lockout_after_failures_and_release_after_the_duration(bus: Bus, start_actor, config) -> None:
    await start_actor(TokenActor, config, lockout_failures=3, lockout_duration=1.0)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await login(bus, "demo", "wrong")
    with pytest.raises(Unauthorized) as locked:
        await login(bus, "demo", DEMO_PASSWORD)
    assert locked.value.message == AUTH_FAILED
    await login(bus, "admin", ADMIN_PASSWORD)  # only that user is locked
    await asyncio.sleep(1.0)

    async def released() -> bool:
        try:
            await login(bus, "demo", DEMO_PASSWORD)
        except Unauthorized:
            return False
        return True

    await poll_until(released, 5)
    for _ in range(2):  # a success forgets earlier failures
        with pytest.raises(Unauthorized):
            await login(bus, "demo", "wrong")
    await login(bus, "demo", DEMO_PASSWORD)


async def test_failures_spread_beyond_the_window_do_not_lock(bus: Bus, start_actor, config) -> None:
    await start_actor(TokenActor, config, lockout_failures=3, lockout_window=0.3)
    for pause in (0.0, 0.4):
        await asyncio.sleep(pause)
        for _ in range(2):
            with pytest.raises(Unauthorized):
                await login(bus, "demo", "wrong")
    await login(bus, "demo", DEMO_PASSWORD)


async def test_every_failed_login_runs_exactly_one_scrypt(
    bus: Bus, start_actor, config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same work for every failure (the timing side of "no hint"), counted rather than timed."""
    import actors.token as token_module

    actor = await start_actor(TokenActor, config, lockout_failures=2)
    checked: list[str] = []

    def counting(password: str, stored: str) -> bool:
        checked.append(stored)
        return check_password(password, stored)

    monkeypatch.setattr(token_module, "check_password", counting)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await login(bus, "demo", "wrong")
    for user, password in (
        ("admin", "wrong"),
        ("nobody", "wrong"),
        ("demo", DEMO_PASSWORD),
        ("demo", "wrong"),
    ):
        checked.clear()
        with pytest.raises(Unauthorized):
            await login(bus, user, password)
        assert len(checked) == 1, (user, password)
        assert (checked[0] == actor._dummy_hash) == (user == "nobody")


def test_passwords_are_stored_as_scrypt_hashes() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert check_password("s3cret", stored)
    assert not check_password("s3cret!", stored)
    assert not check_password("s3cret", "garbage")


# -- tokens -----------------------------------------------------------------------------------


async def test_a_token_expires(bus: Bus, start_actor, config) -> None:
    await start_actor(TokenActor, config, token_ttl=1.0)
    issued = await login(bus, "demo", DEMO_PASSWORD)
    assert issued["expires_at"] - issued["issued_at"] == pytest.approx(1.0)
    await bus.call("token.validate", {"token": issued["token"]})

    async def expired() -> bool:
        try:
            await bus.call("token.validate", {"token": issued["token"]})
        except Unauthorized:
            return True
        return False

    await poll_until(expired, max(issued["expires_at"] - time.time(), 0) + 2)
    assert time.time() >= issued["expires_at"]


async def test_malformed_tampered_and_foreign_tokens_are_refused(bus: Bus, token_actor) -> None:
    issued = await login(bus, "demo", DEMO_PASSWORD)
    token = issued["token"]
    tampered = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    foreign = Fernet(Fernet.generate_key()).encrypt(b"whatever").decode().rstrip("=")
    junk_payload = token_actor.keys.encrypt(b"\x93\x01\x02\x03")
    for bad in ("not-a-token", "", "x" * 5000, tampered, foreign, junk_payload, token + "é"):
        assert await refused(bus, bad) == TOKEN_INVALID
    with pytest.raises(Unauthorized):
        await bus.call("token.validate", {"token": 12})


async def test_rescope_with_a_token(bus: Bus, token_actor) -> None:
    await as_admin(bus, "token.create_project", {"name": "team"})
    await as_admin(bus, "token.grant_role", {"user": "demo", "project": "team", "role": "reader"})
    unscoped = await login(bus, "demo", DEMO_PASSWORD, unscoped=True)
    team = await bus.call("token.issue_with_token", {"token": unscoped["token"], "project_name": "team"})
    assert team["project"]["name"] == "team" and [r["name"] for r in team["roles"]] == ["reader"]
    assert team["methods"] == ["token", "password"]
    assert team["audit_ids"] == [team["audit_id"], unscoped["audit_id"]]
    assert team["audit_id"] != unscoped["audit_id"]
    assert team["expires_at"] <= unscoped["expires_at"]
    info = await bus.call("token.validate", {"token": team["token"]})
    assert (info["project_name"], info["roles"], info["methods"]) == (
        "team",
        ["reader"],
        ["token", "password"],
    )
    demo_project = (await login(bus, "demo", DEMO_PASSWORD))["project"]["id"]
    again = await bus.call("token.issue_with_token", {"token": team["token"], "project_id": demo_project})
    assert again["project"]["name"] == "demo" and [r["name"] for r in again["roles"]] == ["member"]
    assert again["audit_ids"][1] == unscoped["audit_id"]  # the chain keeps its root
    assert again["methods"] == ["token", "password"]
    same_scope = await bus.call("token.issue_with_token", {"token": team["token"]})
    assert same_scope["project"]["name"] == "team"
    for body in (
        {"token": unscoped["token"], "project_name": "admin"},  # no role there
        {"token": unscoped["token"], "project_name": "nowhere"},
        {"token": "garbage", "project_name": "demo"},
    ):
        with pytest.raises(Unauthorized):
            await bus.call("token.issue_with_token", body)


# -- keys -------------------------------------------------------------------------------------


def key_numbers(config) -> list[int]:
    return sorted(int(p.name) for p in (config.data_dir / "keys" / "token").iterdir() if p.name.isdigit())


def key_file(config, number: int) -> Path:
    return config.data_dir / "keys" / "token" / str(number)


def opens(config, number: int, token: str) -> bool:
    try:
        Fernet(key_file(config, number).read_bytes()).decrypt(token + "=" * (-len(token) % 4))
    except InvalidToken:
        return False
    return True


async def test_key_repository_layout_and_permissions(config, token_actor) -> None:
    directory = config.data_dir / "keys" / "token"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert key_numbers(config) == [0, 1]
    for number in (0, 1):
        assert stat.S_IMODE(key_file(config, number).stat().st_mode) == 0o600


async def test_rotation_keeps_old_tokens_until_their_key_leaves(bus: Bus, config, token_actor) -> None:
    first = await login(bus, "demo", DEMO_PASSWORD)
    assert opens(config, 1, first["token"])
    staged = key_file(config, 0).read_bytes()
    assert await as_admin(bus, "token.rotate_keys") == {"primary": 2, "keys": [0, 1, 2]}
    assert key_file(config, 2).read_bytes() == staged  # the staged key became the primary
    assert stat.S_IMODE(key_file(config, 0).stat().st_mode) == 0o600
    await bus.call("token.validate", {"token": first["token"]})
    second = await login(bus, "demo", DEMO_PASSWORD)
    assert opens(config, 2, second["token"]) and not opens(config, 1, second["token"])
    assert await as_admin(bus, "token.rotate_keys") == {"primary": 3, "keys": [0, 2, 3]}
    assert await refused(bus, first["token"]) == TOKEN_INVALID  # its key is gone
    await bus.call("token.validate", {"token": second["token"]})
    demo = await login(bus, "demo", DEMO_PASSWORD)
    with request_scope(context=context_of(demo)), pytest.raises(Forbidden):
        await bus.call("token.rotate_keys")


async def test_replicas_on_one_data_dir_agree_on_keys(start_actor, config) -> None:
    one = await start_actor(TokenActor, config)
    two = await start_actor(TokenActor, config)
    before = await two.issue("demo", DEMO_PASSWORD)
    await one.rotate_keys()
    after = await one.issue("demo", DEMO_PASSWORD)
    assert (await two.validate(after["token"]))["user_name"] == "demo"  # two's staged key opens it
    await one.validate(before["token"])
    await one.rotate_keys()
    newest = await one.issue("demo", DEMO_PASSWORD)
    await two.validate(newest["token"])  # two re-reads the repository
    with pytest.raises(Unauthorized):
        await two.validate(before["token"])  # key 1 left the repository with the second rotation
    from_two = await two.issue("demo", DEMO_PASSWORD)
    assert opens(config, 3, from_two["token"])  # two seals with the primary one made


# -- revocation -------------------------------------------------------------------------------


async def test_revocation_by_token_user_and_project_is_enforced_and_published(
    bus: Bus, token_actor, revocations
) -> None:
    await as_admin(
        bus, "token.create_user", {"name": "alice", "password": "pw-alice", "default_project": "demo"}
    )
    await as_admin(bus, "token.grant_role", {"user": "alice", "project": "demo", "role": "member"})
    one, two = await login(bus, "demo", DEMO_PASSWORD), await login(bus, "demo", DEMO_PASSWORD)
    alice = await login(bus, "alice", "pw-alice")
    with request_scope(context=context_of(alice)), pytest.raises(Forbidden):
        await bus.call("token.revoke_token", {"token": one["token"]})
    with request_scope(context=context_of(one)):
        answer = await bus.call("token.revoke_token", {"token": one["token"]})
        with pytest.raises(Forbidden):
            await bus.call("token.revoke_user", {"user_id": alice["user"]["id"]})
    event = await published(revocations, "token", one["audit_id"])
    assert event == answer and set(event) == {"kind", "id", "issued_before"}
    assert isinstance(event["issued_before"], float)
    await refused(bus, one["token"])
    await bus.call("token.validate", {"token": two["token"]})

    await as_admin(bus, "token.revoke_user", {"user_id": one["user"]["id"]})
    await published(revocations, "user", one["user"]["id"])
    await refused(bus, two["token"])
    fresh = await login(bus, "demo", DEMO_PASSWORD)
    await bus.call("token.validate", {"token": fresh["token"]})

    await as_admin(bus, "token.revoke_project", {"project_id": fresh["project"]["id"]})
    await published(revocations, "project", fresh["project"]["id"])
    await refused(bus, fresh["token"])
    await refused(bus, alice["token"])
    unscoped = await login(bus, "demo", DEMO_PASSWORD, unscoped=True)
    await bus.call("token.validate", {"token": unscoped["token"]})
    listed = await bus.call("token.revocations")
    assert {(r["kind"], r["id"]) for r in listed} >= {
        ("token", one["audit_id"]),
        ("user", one["user"]["id"]),
        ("project", fresh["project"]["id"]),
    }
    with pytest.raises(NotFound):
        await as_admin(bus, "token.revoke_user", {"user_id": "nobody"})


async def test_revocations_expire_with_the_longest_token_lifetime(bus: Bus, start_actor, config) -> None:
    actor = await start_actor(TokenActor, config, token_ttl=0.5)
    await actor.revoke_user("demo")
    assert len(await bus.call("token.revocations")) == 1
    await asyncio.sleep(0.6)
    assert await bus.call("token.revocations") == []
    await actor._purge(time.time())
    assert await actor.store.fetchall("SELECT * FROM revocations") == []


async def test_disabling_a_user_or_project_stops_its_tokens(bus: Bus, token_actor, revocations) -> None:
    demo = await login(bus, "demo", DEMO_PASSWORD)
    await as_admin(bus, "token.update_user", {"user_id": "demo", "enabled": False})
    await published(revocations, "user", demo["user"]["id"])
    await refused(bus, demo["token"])
    await as_admin(bus, "token.update_user", {"user_id": "demo", "enabled": True})
    await refused(bus, demo["token"])  # re-enabling does not bring old tokens back
    again = await login(bus, "demo", DEMO_PASSWORD)
    await as_admin(bus, "token.update_project", {"project_id": "demo", "enabled": False})
    await published(revocations, "project", again["project"]["id"])
    await refused(bus, again["token"])
    await as_admin(bus, "token.update_project", {"project_id": "demo", "enabled": True})
    await bus.call("token.validate", {"token": (await login(bus, "demo", DEMO_PASSWORD))["token"]})


async def test_password_change_and_deletion_end_tokens(bus: Bus, token_actor, revocations) -> None:
    demo = await login(bus, "demo", DEMO_PASSWORD)
    await as_admin(bus, "token.update_user", {"user_id": "demo", "password": "new-secret"})
    await refused(bus, demo["token"])
    with pytest.raises(Unauthorized):
        await login(bus, "demo", DEMO_PASSWORD)
    fresh = await login(bus, "demo", "new-secret")
    await as_admin(bus, "token.delete_user", {"user_id": "demo"})
    await refused(bus, fresh["token"])
    await published(revocations, "user", demo["user"]["id"])


# -- groups -----------------------------------------------------------------------------------


async def test_groups_give_their_members_roles(bus: Bus, token_actor) -> None:
    for call in (
        ("token.create_project", {"name": "lab"}),
        ("token.create_user", {"name": "carol", "password": "pw-carol"}),
        ("token.create_group", {"name": "devs", "description": "developers"}),
        ("token.grant_group_role", {"group": "devs", "project": "lab", "role": "member"}),
    ):
        await as_admin(bus, *call)
    with pytest.raises(Unauthorized):
        await login(bus, "carol", "pw-carol", project_name="lab")
    await as_admin(bus, "token.add_user_to_group", {"group_id": "devs", "user_id": "carol"})
    assert await as_admin(bus, "token.check_user_in_group", {"group_id": "devs", "user_id": "carol"})
    carol = await login(bus, "carol", "pw-carol", project_name="lab")
    assert [r["name"] for r in carol["roles"]] == ["member"]
    await as_admin(bus, "token.grant_role", {"user": "carol", "project": "lab", "role": "reader"})
    assert (await bus.call("token.validate", {"token": carol["token"]}))["roles"] == ["member", "reader"]
    effective = await as_admin(
        bus, "token.list_role_assignments", {"user_id": carol["user"]["id"], "effective": True}
    )
    assert sorted((a["role_name"], a["via_group"] is not None) for a in effective) == [
        ("member", True),
        ("reader", False),
    ]
    group_rows = await as_admin(bus, "token.list_role_assignments", {"project_id": carol["project"]["id"]})
    assert {(a["role_name"], a["user_id"] is None, a["group_id"] is None) for a in group_rows} == {
        ("member", True, False),
        ("reader", False, True),
    }
    assert [u["name"] for u in await as_admin(bus, "token.list_group_users", {"group_id": "devs"})] == [
        "carol"
    ]
    await as_admin(bus, "token.remove_user_from_group", {"group_id": "devs", "user_id": "carol"})
    assert (await bus.call("token.validate", {"token": carol["token"]}))["roles"] == ["reader"]
    await as_admin(bus, "token.revoke_role", {"user": "carol", "project": "lab", "role": "reader"})
    await refused(bus, carol["token"])  # no role left on the project
    with pytest.raises(NotFound):
        await as_admin(bus, "token.remove_user_from_group", {"group_id": "devs", "user_id": "carol"})
    await as_admin(bus, "token.delete_group", {"group_id": "devs"})
    assert await as_admin(bus, "token.list_groups") == []


# -- application credentials --------------------------------------------------------------------


async def test_application_credentials(bus: Bus, token_actor) -> None:
    await as_admin(bus, "token.grant_role", {"user": "demo", "project": "demo", "role": "reader"})
    demo = await login(bus, "demo", DEMO_PASSWORD)
    with request_scope(context=context_of(demo)):
        created = await bus.call(
            "token.create_application_credential", {"name": "ci", "roles": ["reader"], "description": "CI"}
        )
        full = await bus.call("token.create_application_credential", {"name": "all"})
        with pytest.raises(Forbidden):
            await bus.call("token.create_application_credential", {"name": "x", "roles": ["admin"]})
        with pytest.raises(Conflict):
            await bus.call("token.create_application_credential", {"name": "ci"})
        with pytest.raises(InvalidRequest):
            await bus.call("token.create_application_credential", {"name": "y", "expires_at": "yesterday"})
        listed = await bus.call("token.list_application_credentials", {"user_id": demo["user"]["id"]})
    assert [r["name"] for r in created["roles"]] == ["reader"]
    assert sorted(r["name"] for r in full["roles"]) == ["member", "reader"]
    assert created["project_id"] == demo["project"]["id"] and len(created["secret"]) >= 32
    assert [c["name"] for c in listed] == ["all", "ci"] and all("secret" not in c for c in listed)
    row = await token_actor.store.fetchone("SELECT secret_hash FROM app_creds WHERE id = ?", (created["id"],))
    assert row["secret_hash"].startswith("scrypt$") and created["secret"] not in row["secret_hash"]

    issued = await bus.call(
        "token.issue_with_application_credential", {"app_cred_id": created["id"], "secret": created["secret"]}
    )
    assert issued["methods"] == ["application_credential"]
    assert [r["name"] for r in issued["roles"]] == ["reader"]
    assert issued["application_credential"]["id"] == created["id"]
    info = await bus.call("token.validate", {"token": issued["token"]})
    assert info["app_cred_id"] == created["id"] and info["roles"] == ["reader"]
    for body in ({"app_cred_id": created["id"], "secret": "wrong"}, {"app_cred_id": "nope", "secret": "x"}):
        with pytest.raises(Unauthorized) as error:
            await bus.call("token.issue_with_application_credential", body)
        assert error.value.message == AUTH_FAILED
    with request_scope(context=context_of(issued)), pytest.raises(Forbidden):
        await bus.call("token.create_application_credential", {"name": "nested"})
    with pytest.raises(Forbidden):
        await bus.call("token.issue_with_token", {"token": issued["token"], "project_name": "demo"})

    admin = await login(bus, "admin", ADMIN_PASSWORD)
    with request_scope(context=context_of(admin)), pytest.raises(Forbidden):
        await bus.call("token.create_application_credential", {"name": "admin-on-own", "roles": ["reader"]})
    await as_admin(bus, "token.create_user", {"name": "eve", "password": "pw-eve", "default_project": "demo"})
    await as_admin(bus, "token.grant_role", {"user": "eve", "project": "demo", "role": "member"})
    eve = await login(bus, "eve", "pw-eve")
    with request_scope(context=context_of(eve)):
        for address, body in (
            ("token.list_application_credentials", {"user_id": demo["user"]["id"]}),
            (
                "token.delete_application_credential",
                {"user_id": demo["user"]["id"], "app_cred_id": created["id"]},
            ),
        ):
            with pytest.raises(Forbidden):
                await bus.call(address, body)

    with request_scope(context=context_of(demo)):
        await bus.call(
            "token.delete_application_credential",
            {"user_id": demo["user"]["id"], "app_cred_id": created["id"]},
        )
    await refused(bus, issued["token"])
    with pytest.raises(Unauthorized):
        await bus.call(
            "token.issue_with_application_credential",
            {"app_cred_id": created["id"], "secret": created["secret"]},
        )
    await as_admin(bus, "token.revoke_role", {"user": "demo", "project": "demo", "role": "reader"})
    from_full = await bus.call(
        "token.issue_with_application_credential", {"app_cred_id": full["id"], "secret": full["secret"]}
    )
    assert [r["name"] for r in from_full["roles"]] == ["member"]  # only roles the user still holds


async def test_an_expired_application_credential_is_refused(bus: Bus, token_actor) -> None:
    demo = await login(bus, "demo", DEMO_PASSWORD)
    with request_scope(context=context_of(demo)):
        cred = await bus.call(
            "token.create_application_credential", {"name": "short", "expires_at": time.time() + 1.0}
        )
    body = {"app_cred_id": cred["id"], "secret": cred["secret"]}
    issued = await bus.call("token.issue_with_application_credential", body)
    assert issued["expires_at"] <= cred["expires_at"]

    async def expired() -> bool:
        try:
            await bus.call("token.issue_with_application_credential", body)
        except Unauthorized:
            return True
        return False

    await poll_until(expired, max(cred["expires_at"] - time.time(), 0) + 2)
    await refused(bus, issued["token"])


# -- administration -------------------------------------------------------------------------------


async def test_administration_round_trip_and_bad_input_changes_nothing(bus: Bus, token_actor) -> None:
    project = await as_admin(bus, "token.create_project", {"name": "ops", "description": "operations"})
    assert project["enabled"] is True and project["domain_id"] == "default"
    assert (await as_admin(bus, "token.get_project", {"project_id": project["id"]}))["name"] == "ops"
    renamed = await as_admin(bus, "token.update_project", {"project_id": project["id"], "name": "ops2"})
    assert renamed["name"] == "ops2"
    before = await as_admin(bus, "token.list_projects")
    for address, body in (
        ("token.create_project", {"name": ""}),
        ("token.create_project", {"name": "x" * 300}),
        ("token.create_project", {"name": "ok", "enabled": "yes"}),
        ("token.create_project", {"name": "ok", "domain_id": "other"}),
        ("token.update_project", {"project_id": project["id"], "name": "fine", "enabled": "no"}),
        ("token.create_user", {"name": "u", "password": ""}),
        ("token.update_user", {"user_id": "demo", "name": "renamed", "enabled": 1}),
        ("token.create_group", {"name": 5}),
        ("token.create_role", {"name": " "}),
    ):
        with pytest.raises(InvalidRequest):
            await as_admin(bus, address, body)
    assert await as_admin(bus, "token.list_projects") == before
    assert [u["name"] for u in await as_admin(bus, "token.list_users")] == ["admin", "demo"]
    with pytest.raises(Conflict):
        await as_admin(bus, "token.create_project", {"name": "demo"})
    with pytest.raises(NotFound):
        await as_admin(bus, "token.grant_role", {"user": "demo", "project": "ops2", "role": "nope"})
    role = await as_admin(bus, "token.create_role", {"name": "auditor"})
    assert "auditor" in [r["name"] for r in await as_admin(bus, "token.list_roles")]
    assert (await as_admin(bus, "token.get_role", {"role_id": role["id"]}))["name"] == "auditor"
    user = await as_admin(
        bus, "token.create_user", {"name": "dave", "password": "pw-dave", "description": "d"}
    )
    assert "password_hash" not in user and user["enabled"] is True
    await as_admin(bus, "token.grant_role", {"user": user["id"], "project": project["id"], "role": "auditor"})
    dave = await login(bus, "dave", "pw-dave", project_id=project["id"])
    await as_admin(bus, "token.delete_project", {"project_id": project["id"]})
    await refused(bus, dave["token"])
    assert await as_admin(bus, "token.list_role_assignments", {"user_id": user["id"]}) == []


@pytest.mark.parametrize(
    ("address", "body"),
    [
        ("token.create_project", {"name": "sneaky"}),
        ("token.list_projects", {}),
        ("token.update_project", {"project_id": "demo", "enabled": False}),
        ("token.delete_project", {"project_id": "demo"}),
        ("token.create_user", {"name": "sneaky", "password": "pw"}),
        ("token.get_user", {"user_id": "admin"}),
        ("token.update_user", {"user_id": "admin", "password": "mine"}),
        ("token.list_groups", {}),
        ("token.add_user_to_group", {"group_id": "g", "user_id": "demo"}),
        ("token.create_role", {"name": "boss"}),
        ("token.grant_role", {"user": "demo", "project": "admin", "role": "admin"}),
        ("token.grant_group_role", {"group": "g", "project": "admin", "role": "admin"}),
        ("token.list_role_assignments", {}),
        ("token.revoke_project", {"project_id": "admin"}),
    ],
)
async def test_only_admins_administer(bus: Bus, token_actor, address: str, body: dict[str, Any]) -> None:
    demo = await login(bus, "demo", DEMO_PASSWORD)
    with request_scope(context=context_of(demo)), pytest.raises(Forbidden):
        await bus.call(address, body)


async def test_existing_callers_keep_working(bus: Bus, token_actor) -> None:
    demo = await login(bus, "demo", DEMO_PASSWORD)
    member = Context(demo["user"]["id"], demo["project"]["id"], ("member",), demo["token"])
    with request_scope(context=member), pytest.raises(Forbidden):
        await bus.call("token.create_project", {"name": "sneaky"})
    admin = await login(bus, "admin", ADMIN_PASSWORD)
    with request_scope(context=context_of(admin)):
        await bus.call("token.create_project", {"name": "team"})
        await bus.call("token.create_user", {"name": "alice", "password": "pw", "default_project": "team"})
        await bus.call("token.grant_role", {"user": "alice", "project": "team", "role": "member"})
    alice = await login(bus, "alice", "pw")
    assert alice["project"]["name"] == "team"


def test_key_files_are_private_even_with_a_loose_umask(tmp_path) -> None:
    from actors.token_keys import KeyRepository

    previous = os.umask(0)
    try:
        repository = KeyRepository(tmp_path / "keys" / "token")
        asyncio.run(repository.setup())
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "keys" / "token").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "keys" / "token").iterdir())
