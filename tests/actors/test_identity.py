"""The identity actor: login and its throttling, Fernet tokens, re-scoping, system scope, key
rotation, revocation, password changes, groups, application credentials, administration and
argument checks, on a real nats-server, sqlite and files."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.fernet import Fernet, InvalidToken

from actors.identity.actor import MIGRATIONS, IdentityActor
from actors.identity.keys import TokenPayload
from actors.identity.passwords import AUTH_FAILED, check_password, hash_password, needs_rehash
from actors.identity.throttle import LoginThrottle, PasswordChecks, StrikeTable, Throttling, source_key
from actors.identity.tokens import TOKEN_INVALID
from api.identity import REVOKED, ApplicationCredentials, IdentityAdmin, LoginThrottled, Token, Tokens
from bus import (
    Bus,
    Conflict,
    Context,
    Forbidden,
    InvalidRequest,
    NotFound,
    Overloaded,
    Unauthorized,
    decode,
    request_scope,
)
from bus.api import ServiceAPI
from runtime.policy import allowed, system_role
from runtime.store import Store, open_store
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
async def identity_actor(start_actor, config) -> IdentityActor:
    return await start_actor(IdentityActor, config)


@pytest.fixture
def tokens(bus: Bus) -> Tokens:
    return Tokens.client(bus)


@pytest.fixture
def directory(bus: Bus) -> IdentityAdmin:
    """The administration API's client."""
    return IdentityAdmin.client(bus)


@pytest.fixture
def credentials(bus: Bus) -> ApplicationCredentials:
    return ApplicationCredentials.client(bus)


def context_of(issued: Token) -> Context:
    """The context the gateway would build for an issued token."""
    project = issued["project"]["id"] if issued["project"] else None
    roles = tuple(system_role(r["name"]) if issued["system"] else r["name"] for r in issued["roles"])
    return Context(issued["user"]["id"], project, roles, issued["token"])


async def login(tokens: Tokens, user: str, password: str, **scope: Any) -> Token:
    return await tokens.issue(username=user, password=password, **scope)


async def admin_context(tokens: Tokens) -> Context:
    """The bootstrap admin's context (a real admin token in it)."""
    return context_of(await login(tokens, "admin", ADMIN_PASSWORD))


async def refused(tokens: Tokens, token: str) -> str:
    """The message validate refuses ``token`` with (fails the test if it is valid)."""
    with pytest.raises(Unauthorized) as error:
        await tokens.validate(token=token)
    return error.value.message


async def poll_until(check: Callable[[], Awaitable[bool]], bound: float) -> None:
    """Poll ``check`` until it is true; fail if it is not within ``bound`` seconds."""
    async with asyncio.timeout(bound):
        while not await check():
            await asyncio.sleep(0.05)


@pytest.fixture
async def revocations(bus: Bus) -> AsyncIterator[list[dict[str, Any]]]:
    """Every message published on ``REVOKED``, in arrival order, as it went on the wire."""
    seen: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        seen.append(decode(msg.data).body)

    subscription = await bus.subscribe(bus.subject(REVOKED.pattern), collect)
    await bus.flush()
    yield seen
    await subscription.unsubscribe()


async def published(seen: list[dict[str, Any]], kind: str, target: str) -> dict[str, Any]:
    async def arrived() -> bool:
        return any(e["kind"] == kind and e["id"] == target for e in seen)

    await poll_until(arrived, 5)
    return next(e for e in seen if e["kind"] == kind and e["id"] == target)


# -- login ----------------------------------------------------------------------------------------


async def test_bootstrap_creates_admin_and_demo_who_can_log_in(tokens: Tokens, identity_actor) -> None:
    admin = await login(tokens, "admin", ADMIN_PASSWORD)
    assert admin["project"]["name"] == "admin"
    assert [role["name"] for role in admin["roles"]] == ["admin"]
    demo = await login(tokens, "demo", DEMO_PASSWORD, project_name="demo")
    assert [role["name"] for role in demo["roles"]] == ["member"]
    assert demo["methods"] == ["password"] and demo["audit_ids"] == [demo["audit_id"]]
    info = await tokens.validate(token=demo["token"])
    assert set(info) == VALIDATE_KEYS
    assert info["user_name"] == "demo" and info["domain_id"] == "default"
    assert info["project_id"] == demo["project"]["id"]
    assert info["roles"] == ["member"]
    assert info["audit_id"] == demo["audit_id"] and info["methods"] == ["password"]
    assert info["app_cred_id"] is None
    assert info["expires_at"] > info["issued_at"]
    by_id = await tokens.issue(user_id=demo["user"]["id"], password=DEMO_PASSWORD)
    assert by_id["user"]["name"] == "demo"
    unscoped = await login(tokens, "demo", DEMO_PASSWORD, unscoped=True)
    assert unscoped["project"] is None and unscoped["roles"] == []
    assert (await tokens.validate(token=unscoped["token"]))["project_id"] is None


async def table_names(store: Store) -> set[str]:
    sql = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
        "postgresql": "SELECT table_name AS name FROM information_schema.tables"
        " WHERE table_schema = current_schema()",
    }[store.dialect]
    return {row["name"] for row in await store.fetchall(sql)}


async def test_no_token_is_stored(identity_actor) -> None:
    tables = await table_names(identity_actor.shared.store)
    assert "tokens" not in tables


async def test_every_login_failure_gets_the_same_answer(
    tokens: Tokens, directory: IdentityAdmin, identity_actor
) -> None:
    with request_scope(context=await admin_context(tokens)):
        await directory.create_project(name="closed")
        await directory.create_user(name="gone", password="pw-gone", default_project="demo")
        await directory.grant_role(user="gone", project="demo", role="member")
        await directory.create_user(name="norole", password="pw-norole")
        await directory.grant_role(user="demo", project="closed", role="member")
        await directory.update_user(user_id="gone", enabled=False)
        await directory.update_project(project_id="closed", enabled=False)
    attempts: dict[str, dict[str, Any]] = {
        "wrong password": {"username": "demo", "password": "nope"},
        "unknown user": {"username": "nobody", "password": "nope"},
        "unknown user id": {"user_id": "0" * 32, "password": "nope"},
        "disabled user": {"username": "gone", "password": "pw-gone"},
        "disabled project": {"username": "demo", "password": DEMO_PASSWORD, "project_name": "closed"},
        "unknown project": {"username": "demo", "password": DEMO_PASSWORD, "project_name": "nowhere"},
        "no role": {"username": "norole", "password": "pw-norole", "project_name": "demo"},
    }
    messages = {}
    for what, arguments in attempts.items():
        with pytest.raises(Unauthorized) as error:
            await tokens.issue(**arguments, source="192.0.2.1")
        messages[what] = error.value.message
    assert set(messages.values()) == {AUTH_FAILED}, messages


FAST = Throttling(pair_free=3, source_free=8, base=0.2, cap=0.4, account_free=100)
"""Short refusals, so that a test can outwait them."""


async def throttled_for(attempt: Awaitable[Any]) -> int:
    """The Retry-After a refused login gives (fails the test if it is not refused)."""
    with pytest.raises(LoginThrottled) as refusal:
        await attempt
    return refusal.value.retry_after


async def test_failures_throttle_that_source_for_that_user_and_never_lock_anyone_out(
    tokens: Tokens, start_actor, config
) -> None:
    await start_actor(IdentityActor, config, throttling=FAST)
    attacker, elsewhere = "192.0.2.66", "198.51.100.7"
    for _ in range(FAST.pair_free + 1):  # the last one earns the first refusal
        with pytest.raises(Unauthorized):
            await tokens.issue(username="admin", password="guess", source=attacker)
    assert await throttled_for(tokens.issue(username="admin", password=ADMIN_PASSWORD, source=attacker)) == 1
    # the admin itself, from any other address, at once; the attacker's address for other users too
    assert (await tokens.issue(username="admin", password=ADMIN_PASSWORD, source=elsewhere))["user"]["name"]
    await tokens.issue(username="demo", password=DEMO_PASSWORD, source=attacker)
    # an unknown user is throttled exactly alike: a refusal says nothing about who exists
    for _ in range(FAST.pair_free + 1):
        with pytest.raises(Unauthorized):
            await tokens.issue(username="nobody", password="guess", source=elsewhere)
    await throttled_for(tokens.issue(username="nobody", password="guess", source=elsewhere))

    async def admitted_again() -> bool:
        try:
            await tokens.issue(username="admin", password=ADMIN_PASSWORD, source=attacker)
        except LoginThrottled:
            return False
        return True

    await poll_until(admitted_again, 5)  # a refusal ends; a right password forgets that address's failures
    for _ in range(FAST.pair_free):
        with pytest.raises(Unauthorized):
            await tokens.issue(username="admin", password="guess", source=attacker)
    await tokens.issue(username="admin", password=ADMIN_PASSWORD, source=attacker)


async def test_a_spraying_source_is_refused_for_everyone_and_only_it(
    tokens: Tokens, start_actor, config
) -> None:
    await start_actor(IdentityActor, config, throttling=FAST)
    sprayer = "2001:db8:1:2::99"
    for number in range(FAST.source_free + 1):  # one guess per user: no pair is throttled
        with pytest.raises(Unauthorized):
            await tokens.issue(username=f"user-{number}", password="guess", source=sprayer)
    await throttled_for(tokens.issue(username="demo", password=DEMO_PASSWORD, source=sprayer))
    # its /64 is one source (a host has all of it); another network is not
    await throttled_for(tokens.issue(username="demo", password=DEMO_PASSWORD, source="2001:db8:1:2::100"))
    await tokens.issue(username="demo", password=DEMO_PASSWORD, source="2001:db8:1:3::99")
    await tokens.issue(username="demo", password=DEMO_PASSWORD)  # a bus caller is a source of its own


def test_refusals_double_with_each_failure_up_to_the_cap_and_end_after_the_window() -> None:
    """The throttle's arithmetic, on a clock the test moves."""
    now = [1000.0]
    settings = Throttling(
        pair_free=2, source_free=100, base=1.0, cap=8.0, window=60.0, account_free=1, tarpit_base=0.5,
        tarpit_cap=1.0,
    )  # fmt: skip
    throttle = LoginThrottle(settings, clock=lambda: now[0])
    refusals, tarpits = [], []
    for _ in range(7):
        throttle.check("name:admin", "192.0.2.1")  # the last refusal is over
        tarpits.append(throttle.failed("name:admin", "192.0.2.1"))
        try:
            throttle.check("name:admin", "192.0.2.1")
            refusals.append(0)
        except LoginThrottled as refusal:
            refusals.append(refusal.retry_after)
        now[0] += refusals[-1]
    assert refusals == [0, 0, 1, 2, 4, 8, 8]
    assert tarpits == [0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]  # the tarpit is bounded
    throttle.check("name:demo", "192.0.2.1")  # only that user from there
    now[0] += 61.0  # past the window: forgotten
    throttle.check("name:admin", "192.0.2.1")
    throttle.purge()
    assert len(throttle.pairs) == len(throttle.sources) == len(throttle.accounts) == 0
    throttle.failed("name:demo", "192.0.2.1")
    throttle.succeeded("name:demo", "192.0.2.1")  # a success forgets the pair, not the source's failures
    assert len(throttle.pairs) == 0 and len(throttle.sources) == 1


def test_the_tables_are_bounded_and_hold_no_names() -> None:
    table = StrikeTable(free=1, base=1.0, cap=2.0, window=60.0, max_entries=100)
    for number in range(1000):
        table.fail(_key(f"name:{'x' * 200}{number}", "192.0.2.1"), 0.0)
    assert len(table) == 100
    assert all(len(key) == 16 for key in table._entries)


def _key(account: str, source: str) -> bytes:
    from actors.identity.throttle import _digest

    return _digest(account, source)


def test_sources_are_addresses_and_ipv6_hosts() -> None:
    assert source_key("127.0.0.2") == "127.0.0.2"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff") == "2001:db8::/64"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key(None) == source_key("") == "bus"


async def test_a_right_password_is_accepted_at_once_while_many_sources_fail_for_the_user(
    tokens: Tokens, start_actor, config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``account_free`` failures (any sources) failed attempts are held a little (the tarpit);
    the right password is not, and nothing is refused to a source that has not failed."""
    actor = await start_actor(IdentityActor, config, throttling=Throttling(account_free=2, tarpit_base=0.05))
    held: list[float] = []
    hold = actor.checks.tarpit.hold

    async def recording(seconds: float) -> None:
        held.append(seconds)
        await hold(seconds)

    monkeypatch.setattr(actor.checks.tarpit, "hold", recording)
    for number in range(5):
        with pytest.raises(Unauthorized):
            await tokens.issue(username="admin", password="guess", source=f"192.0.2.{number}")
    assert held == [0, 0, 0.05, 0.1, 0.2]
    held.clear()
    await tokens.issue(username="admin", password=ADMIN_PASSWORD, source="198.51.100.1")
    assert held == []


async def test_password_checks_are_bounded_per_source_and_in_all_and_validation_goes_on(
    tokens: Tokens, start_actor, config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source's logins beyond ``per_source`` are refused at once, without a check; past
    ``max_pending`` everyone's are, Overloaded; tokens are validated meanwhile."""
    import actors.identity.tokens as tokens_module

    checks = PasswordChecks(threads=1, per_source=2, max_pending=3, max_wait=30)
    await start_actor(IdentityActor, config, checks=checks)
    token = (await tokens.issue(username="demo", password=DEMO_PASSWORD))["token"]
    gate, checked = threading.Event(), []

    def held(password: str, stored: str) -> bool:
        checked.append(password)
        gate.wait(30)
        return check_password(password, stored)

    monkeypatch.setattr(tokens_module, "check_password", held)
    flood = [
        asyncio.create_task(tokens.issue(username="demo", password="guess", source="192.0.2.66"))
        for _ in range(2)
    ]
    async with asyncio.timeout(10):
        while checks.in_flight("192.0.2.66") < 2:
            await asyncio.sleep(0.01)
    await throttled_for(tokens.issue(username="demo", password="guess", source="192.0.2.66"))
    valid = asyncio.create_task(
        tokens.issue(username="admin", password=ADMIN_PASSWORD, source="198.51.100.1")
    )
    async with asyncio.timeout(10):
        while checks.pending < 3:
            await asyncio.sleep(0.01)
    with pytest.raises(Overloaded):  # three wait or hash already
        await tokens.issue(username="demo", password=DEMO_PASSWORD, source="198.51.100.2")
    assert (await tokens.validate(token=token))["user_name"] == "demo"  # the actor still serves
    assert len(checked) == 1  # one thread: the refused logins were never checked
    gate.set()
    assert (await valid)["user"]["name"] == "admin"
    for attempt in flood:
        with pytest.raises(Unauthorized):
            await attempt
    assert checks.pending == 0 and checks.in_flight("192.0.2.66") == 0


async def test_failed_logins_write_nothing(tokens: Tokens, identity_actor) -> None:
    """Throttling lives in memory, in bounded tables: a flood of invented names fills no disk."""
    before = await snapshot(identity_actor)
    for number in range(30):
        with pytest.raises((Unauthorized, LoginThrottled)):
            await tokens.issue(username=f"invented-{number}", password="guess", source="192.0.2.9")
    assert await snapshot(identity_actor) == before
    tables = await table_names(identity_actor.shared.store)
    assert {"login_failures", "lockouts"}.isdisjoint(tables)


async def test_every_failed_login_runs_exactly_one_scrypt(
    tokens: Tokens, start_actor, config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same work for every failure that is checked (the timing side of "no hint"), counted rather
    than timed; a refused one runs none."""
    import actors.identity.tokens as tokens_module

    actor = await start_actor(IdentityActor, config, throttling=Throttling(pair_free=2))
    checked: list[str] = []

    def counting(password: str, stored: str) -> bool:
        checked.append(stored)
        return check_password(password, stored)

    monkeypatch.setattr(tokens_module, "check_password", counting)
    for user, password in (
        ("admin", "wrong"),
        ("nobody", "wrong"),
        ("demo", DEMO_PASSWORD + "!"),
        ("demo", "wrong"),
    ):
        checked.clear()
        with pytest.raises(Unauthorized):
            await login(tokens, user, password)
        assert len(checked) == 1, (user, password)
        assert (checked[0] == actor.shared.dummy_hash) == (user == "nobody")
    with pytest.raises(Unauthorized):
        await login(tokens, "demo", "wrong")  # the third: demo is refused from here from now on
    checked.clear()
    with pytest.raises(LoginThrottled):
        await login(tokens, "demo", DEMO_PASSWORD)
    assert checked == []


def scrypt_hash(password: str) -> str:
    """A password hashed as aiostack hashed them before argon2id (scrypt, N=2^14)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${2**14}$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_passwords_are_stored_as_argon2id_hashes_with_owasps_parameters() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and "s3cret" not in stored
    assert check_password("s3cret", stored) and not needs_rehash(stored)
    assert not check_password("s3cret!", stored)
    assert not check_password("s3cret", "garbage")
    old = scrypt_hash("s3cret")
    assert check_password("s3cret", old) and not check_password("s3cret!", old) and needs_rehash(old)


async def test_an_old_scrypt_hash_is_replaced_by_argon2id_at_the_next_good_login_only(
    identity_actor: IdentityActor, tokens: Tokens
) -> None:
    store = identity_actor.shared.store
    old = scrypt_hash(DEMO_PASSWORD)
    await store.execute("UPDATE users SET password_hash = ? WHERE name = ?", (old, "demo"))
    with pytest.raises(Unauthorized):
        await login(tokens, "demo", "not-the-password")
    assert (await store.fetchone("SELECT password_hash FROM users WHERE name = ?", ("demo",)))[
        "password_hash"
    ] == old
    await login(tokens, "demo", DEMO_PASSWORD)
    upgraded = (await store.fetchone("SELECT password_hash FROM users WHERE name = ?", ("demo",)))[
        "password_hash"
    ]
    assert upgraded.startswith("$argon2id$") and check_password(DEMO_PASSWORD, upgraded)
    await login(tokens, "demo", DEMO_PASSWORD)


# -- tokens -----------------------------------------------------------------------------------


async def test_a_token_expires(tokens: Tokens, start_actor, config) -> None:
    await start_actor(IdentityActor, config, token_ttl=1.0)
    issued = await login(tokens, "demo", DEMO_PASSWORD)
    assert issued["expires_at"] - issued["issued_at"] == pytest.approx(1.0)
    await tokens.validate(token=issued["token"])

    async def expired() -> bool:
        try:
            await tokens.validate(token=issued["token"])
        except Unauthorized:
            return True
        return False

    await poll_until(expired, max(issued["expires_at"] - time.time(), 0) + 2)
    assert time.time() >= issued["expires_at"]


async def test_malformed_tampered_and_foreign_tokens_are_refused(tokens: Tokens, identity_actor) -> None:
    issued = await login(tokens, "demo", DEMO_PASSWORD)
    token = issued["token"]
    tampered = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    foreign = Fernet(Fernet.generate_key()).encrypt(b"whatever").decode().rstrip("=")
    junk_payload = identity_actor.shared.keys.encrypt(b"\x93\x01\x02\x03")
    for bad in ("not-a-token", "", "x" * 5000, tampered, foreign, junk_payload, token + "é"):
        assert await refused(tokens, bad) == TOKEN_INVALID
    with pytest.raises(InvalidRequest, match=r"\$\.token"):  # not a string: refused at dispatch
        await tokens.validate(token=12)


async def test_rescope_with_a_token(tokens: Tokens, directory: IdentityAdmin, identity_actor) -> None:
    with request_scope(context=await admin_context(tokens)):
        await directory.create_project(name="team")
        await directory.grant_role(user="demo", project="team", role="reader")
    unscoped = await login(tokens, "demo", DEMO_PASSWORD, unscoped=True)
    team = await tokens.issue_with_token(token=unscoped["token"], project_name="team")
    assert team["project"]["name"] == "team" and [r["name"] for r in team["roles"]] == ["reader"]
    assert team["methods"] == ["token", "password"]
    assert team["audit_ids"] == [team["audit_id"], unscoped["audit_id"]]
    assert team["audit_id"] != unscoped["audit_id"]
    assert team["expires_at"] <= unscoped["expires_at"]
    info = await tokens.validate(token=team["token"])
    assert (info["project_name"], info["roles"], info["methods"]) == (
        "team",
        ["reader"],
        ["token", "password"],
    )
    demo_project = (await login(tokens, "demo", DEMO_PASSWORD))["project"]["id"]
    again = await tokens.issue_with_token(token=team["token"], project_id=demo_project)
    assert again["project"]["name"] == "demo" and [r["name"] for r in again["roles"]] == ["member"]
    assert again["audit_ids"][1] == unscoped["audit_id"]  # the chain keeps its root
    assert again["methods"] == ["token", "password"]
    same_scope = await tokens.issue_with_token(token=team["token"])
    assert same_scope["project"]["name"] == "team"
    for arguments in (
        {"token": unscoped["token"], "project_name": "admin"},  # no role there
        {"token": unscoped["token"], "project_name": "nowhere"},
        {"token": "garbage", "project_name": "demo"},
    ):
        with pytest.raises(Unauthorized):
            await tokens.issue_with_token(**arguments)


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


async def test_key_repository_layout_and_permissions(config, identity_actor) -> None:
    directory = config.data_dir / "keys" / "token"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert key_numbers(config) == [0, 1]
    for number in (0, 1):
        assert stat.S_IMODE(key_file(config, number).stat().st_mode) == 0o600


async def test_rotation_keeps_old_tokens_until_their_key_leaves(
    tokens: Tokens, config, identity_actor
) -> None:
    first = await login(tokens, "demo", DEMO_PASSWORD)
    assert opens(config, 1, first["token"])
    staged = key_file(config, 0).read_bytes()
    admin = await admin_context(tokens)
    with request_scope(context=admin):
        assert await tokens.rotate_keys() == {"primary": 2, "keys": [0, 1, 2]}
    assert key_file(config, 2).read_bytes() == staged  # the staged key became the primary
    assert stat.S_IMODE(key_file(config, 0).stat().st_mode) == 0o600
    await tokens.validate(token=first["token"])
    second = await login(tokens, "demo", DEMO_PASSWORD)
    assert opens(config, 2, second["token"]) and not opens(config, 1, second["token"])
    with request_scope(context=admin):
        assert await tokens.rotate_keys() == {"primary": 3, "keys": [0, 2, 3]}
    assert await refused(tokens, first["token"]) == TOKEN_INVALID  # its key is gone
    await tokens.validate(token=second["token"])
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    with request_scope(context=context_of(demo)), pytest.raises(Forbidden):
        await tokens.rotate_keys()


async def test_replicas_on_one_data_dir_agree_on_keys(start_actor, config) -> None:
    one = (await start_actor(IdentityActor, config)).tokens
    two = (await start_actor(IdentityActor, config)).tokens
    before = await two.issue(username="demo", password=DEMO_PASSWORD)
    await one.rotate_keys()
    after = await one.issue(username="demo", password=DEMO_PASSWORD)
    assert (await two.validate(token=after["token"]))["user_name"] == "demo"  # two's staged key opens it
    await one.validate(token=before["token"])
    await one.rotate_keys()
    newest = await one.issue(username="demo", password=DEMO_PASSWORD)
    await two.validate(token=newest["token"])  # two re-reads the repository
    with pytest.raises(Unauthorized):
        await two.validate(token=before["token"])  # key 1 left the repository with the second rotation
    from_two = await two.issue(username="demo", password=DEMO_PASSWORD)
    assert opens(config, 3, from_two["token"])  # two seals with the primary one made


# -- revocation -------------------------------------------------------------------------------


async def test_revocation_by_token_user_and_project_is_enforced_and_published(
    tokens: Tokens, directory: IdentityAdmin, identity_actor, revocations
) -> None:
    admin = await admin_context(tokens)
    with request_scope(context=admin):
        await directory.create_user(name="alice", password="pw-alice", default_project="demo")
        await directory.grant_role(user="alice", project="demo", role="member")
    one, two = await login(tokens, "demo", DEMO_PASSWORD), await login(tokens, "demo", DEMO_PASSWORD)
    alice = await login(tokens, "alice", "pw-alice")
    with request_scope(context=context_of(alice)), pytest.raises(Forbidden):
        await tokens.revoke_token(token=one["token"])
    with request_scope(context=context_of(one)):
        answer = await tokens.revoke_token(token=one["token"])
        with pytest.raises(Forbidden):
            await tokens.revoke_user(user_id=alice["user"]["id"])
    event = await published(revocations, "token", one["audit_id"])
    assert event == answer and set(event) == {"kind", "id", "issued_before"}
    assert isinstance(event["issued_before"], float)
    await refused(tokens, one["token"])
    await tokens.validate(token=two["token"])

    with request_scope(context=admin):
        await tokens.revoke_user(user_id=one["user"]["id"])
    await published(revocations, "user", one["user"]["id"])
    await refused(tokens, two["token"])
    fresh = await login(tokens, "demo", DEMO_PASSWORD)
    await tokens.validate(token=fresh["token"])

    with request_scope(context=admin):
        await tokens.revoke_project(project_id=fresh["project"]["id"])
    await published(revocations, "project", fresh["project"]["id"])
    await refused(tokens, fresh["token"])
    await refused(tokens, alice["token"])
    unscoped = await login(tokens, "demo", DEMO_PASSWORD, unscoped=True)
    await tokens.validate(token=unscoped["token"])
    listed = await tokens.revocations()
    assert {(r["kind"], r["id"]) for r in listed} >= {
        ("token", one["audit_id"]),
        ("user", one["user"]["id"]),
        ("project", fresh["project"]["id"]),
    }
    with request_scope(context=admin), pytest.raises(NotFound):
        await tokens.revoke_user(user_id="nobody")


async def test_revocations_expire_with_the_longest_token_lifetime_and_stale_window(
    tokens: Tokens, start_actor, config
) -> None:
    actor = await start_actor(IdentityActor, config, token_ttl=0.5, stale_window=0.5)
    await actor.tokens.revoke_user(user_id="demo")
    await asyncio.sleep(0.6)  # past the tokens' lifetime: a service token may still vouch for one
    assert len(await tokens.revocations()) == 1
    await asyncio.sleep(0.5)
    assert await tokens.revocations() == []
    await actor.tokens.purge(time.time())
    assert await actor.shared.store.fetchall("SELECT * FROM revocations") == []


async def test_disabling_a_user_or_project_stops_its_tokens(
    tokens: Tokens, directory: IdentityAdmin, identity_actor, revocations
) -> None:
    admin = await admin_context(tokens)
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    with request_scope(context=admin):
        await directory.update_user(user_id="demo", enabled=False)
    await published(revocations, "user", demo["user"]["id"])
    await refused(tokens, demo["token"])
    with request_scope(context=admin):
        await directory.update_user(user_id="demo", enabled=True)
    await refused(tokens, demo["token"])  # re-enabling does not bring old tokens back
    again = await login(tokens, "demo", DEMO_PASSWORD)
    with request_scope(context=admin):
        await directory.update_project(project_id="demo", enabled=False)
    await published(revocations, "project", again["project"]["id"])
    await refused(tokens, again["token"])
    with request_scope(context=admin):
        await directory.update_project(project_id="demo", enabled=True)
    await tokens.validate(token=(await login(tokens, "demo", DEMO_PASSWORD))["token"])


async def test_password_change_and_deletion_end_tokens(
    tokens: Tokens, directory: IdentityAdmin, identity_actor, revocations
) -> None:
    admin = await admin_context(tokens)
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    with request_scope(context=admin):
        await directory.update_user(user_id="demo", password="new-secret")
    await refused(tokens, demo["token"])
    with pytest.raises(Unauthorized):
        await login(tokens, "demo", DEMO_PASSWORD)
    fresh = await login(tokens, "demo", "new-secret")
    with request_scope(context=admin):
        await directory.delete_user(user_id="demo")
    await refused(tokens, fresh["token"])
    await published(revocations, "user", demo["user"]["id"])


async def test_a_user_changes_its_own_password_with_the_original(
    tokens: Tokens, identity_actor, revocations
) -> None:
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    user = demo["user"]["id"]
    with pytest.raises(Unauthorized) as error:
        await tokens.change_password(user_id=user, original_password="wrong", password="new-secret")
    assert error.value.message == AUTH_FAILED
    assert (await tokens.validate(token=demo["token"]))["user_id"] == user  # nothing changed
    with pytest.raises(Unauthorized):
        await tokens.change_password(user_id="nobody", original_password=DEMO_PASSWORD, password="x")
    with pytest.raises(InvalidRequest):
        await tokens.change_password(user_id=user, original_password=DEMO_PASSWORD, password=" ")

    await tokens.change_password(user_id=user, original_password=DEMO_PASSWORD, password="new-secret")
    await refused(tokens, demo["token"])
    await published(revocations, "user", user)
    with pytest.raises(Unauthorized):
        await login(tokens, "demo", DEMO_PASSWORD)
    await login(tokens, "demo", "new-secret")


# -- system scope -----------------------------------------------------------------------------


async def test_system_scoped_tokens_carry_the_roles_on_the_system(
    tokens: Tokens, directory: IdentityAdmin, identity_actor
) -> None:
    issued = await login(tokens, "admin", ADMIN_PASSWORD, system=True)  # the bootstrap gave it
    assert issued["system"] is True and issued["project"] is None
    assert [role["name"] for role in issued["roles"]] == ["admin"]
    info = await tokens.validate(token=issued["token"])
    assert set(info) == VALIDATE_KEYS
    assert info["project_id"] is None and info["roles"] == ["system:admin"]
    ctx = context_of(issued)
    assert allowed("identity:admin", ctx)
    assert not any(allowed(op, ctx) for op in ("compute:read", "image:read", "network:write", "volume:read"))
    with request_scope(context=ctx):
        assert {user["name"] for user in await directory.list_users()} >= {"admin", "demo"}
    project_scoped = await login(tokens, "admin", ADMIN_PASSWORD)
    assert project_scoped["system"] is False and project_scoped["project"] is not None

    with pytest.raises(Unauthorized) as error:
        await login(tokens, "demo", DEMO_PASSWORD, system=True)
    assert error.value.message == AUTH_FAILED
    for other_scope in ({"project_name": "admin"}, {"unscoped": True}):
        with pytest.raises(InvalidRequest):
            await login(tokens, "admin", ADMIN_PASSWORD, system=True, **other_scope)

    with request_scope(context=ctx):
        await directory.grant_system_role(user="demo", role="reader")
    reader = await login(tokens, "demo", DEMO_PASSWORD, system=True)
    assert [role["name"] for role in reader["roles"]] == ["reader"]
    with request_scope(context=context_of(reader)):  # a system reader reads, and changes nothing
        assert {user["name"] for user in await directory.list_users()} >= {"admin", "demo"}
        assert [a["role_name"] for a in await directory.list_role_assignments(scope="system")] == [
            "admin",
            "reader",
        ]
        assert len(await directory.list_user_projects(user_id="admin")) == 1
        with pytest.raises(Forbidden):
            await directory.create_project(name="by-a-reader")
        with pytest.raises(Forbidden):
            await directory.grant_system_role(user="demo", role="admin")
    with request_scope(context=ctx):
        await directory.revoke_system_role(user="demo", role="reader")
        with pytest.raises(NotFound):
            await directory.revoke_system_role(user="demo", role="reader")
    assert await refused(tokens, reader["token"]) == TOKEN_INVALID


async def test_groups_give_roles_on_the_system_and_rescoping_reaches_it(
    tokens: Tokens, directory: IdentityAdmin, identity_actor
) -> None:
    admin = await admin_context(tokens)
    with request_scope(context=admin):
        group = await directory.create_group(name="operators")
        await directory.add_user_to_group(group_id=group["id"], user_id="demo")
        await directory.grant_group_system_role(group="operators", role="member")
        assignments = await directory.list_role_assignments(scope="system", effective=True, user_id="x")
        assert assignments == []
        demo_id = (await directory.get_user(user_id="demo"))["id"]
        (through,) = await directory.list_role_assignments(scope="system", effective=True, user_id=demo_id)
        assert through["project_id"] is None and through["via_group"] == group["id"]
        assert through["role_name"] == "member"
        (direct,) = await directory.list_role_assignments(scope="system", group_id=group["id"])
        assert direct["group_name"] == "operators" and direct["user_id"] is None
        projects = await directory.list_role_assignments(scope="project", user_id=demo_id)
        assert [a["project_name"] for a in projects] == ["demo"]

    unscoped = await login(tokens, "demo", DEMO_PASSWORD, unscoped=True)
    system = await tokens.issue_with_token(token=unscoped["token"], system=True)
    assert system["system"] and [role["name"] for role in system["roles"]] == ["member"]
    assert system["audit_ids"][1] == unscoped["audit_id"]
    again = await tokens.issue_with_token(token=system["token"])
    assert again["system"] and again["project"] is None
    back = await tokens.issue_with_token(token=system["token"], project_name="demo")
    assert not back["system"] and back["project"] and back["project"]["name"] == "demo"
    with request_scope(context=admin):
        await directory.revoke_group_system_role(group="operators", role="member")
    with pytest.raises(Unauthorized):
        await tokens.issue_with_token(token=unscoped["token"], system=True)


async def test_an_existing_admin_gets_the_admin_role_on_the_system_from_the_migration(
    tokens: Tokens, start_actor, config
) -> None:
    """A store made before system scope (its first three migrations), with an admin and a demo
    user: the fourth gives the admin the admin role on the system, as a first start does."""
    before = open_store(config, "identity", MIGRATIONS[:3])
    await before.open()
    try:
        for name in ("admin", "demo"):
            await before.execute(
                "INSERT INTO users (id, name, password_hash, created_at) VALUES (?, ?, ?, ?)",
                (f"{name}-id", name, hash_password(f"{name}-pw"), "2026-01-01T00:00:00Z"),
            )
        await before.execute("INSERT INTO roles (id, name) VALUES ('admin-role', 'admin')")
    finally:
        await before.close()
    await start_actor(IdentityActor, config)
    issued = await login(tokens, "admin", "admin-pw", system=True)
    assert [role["name"] for role in issued["roles"]] == ["admin"]
    with pytest.raises(Unauthorized):
        await login(tokens, "demo", "demo-pw", system=True)


def test_a_token_sealed_before_system_scope_is_still_read() -> None:
    version_1 = msgpack.packb([1, "user", ["password"], "project", ["audit"], 1.0, 2.0, None])
    payload = TokenPayload.unpack(version_1)
    assert payload.project_id == "project" and payload.system is False
    system = TokenPayload("user", ("password",), None, ("audit",), 1.0, 2.0, None, True)
    assert TokenPayload.unpack(system.pack()) == system
    for malformed in (
        [2, "user", ["password"], "project", ["audit"], 1.0, 2.0, None, True],  # both scopes
        [2, "user", ["password"], None, ["audit"], 1.0, 2.0, None, "yes"],
        [2, "user", ["password"], None, ["audit"], 1.0, 2.0, None],
        [[2], "user"],
    ):
        with pytest.raises(ValueError):
            TokenPayload.unpack(msgpack.packb(malformed))


# -- roles, and a user's projects -------------------------------------------------------------


async def test_roles_are_renamed_and_deleted_with_their_assignments(
    tokens: Tokens, directory: IdentityAdmin, identity_actor
) -> None:
    admin = await admin_context(tokens)
    with request_scope(context=admin):
        role = await directory.create_role(name="observer")
        renamed = await directory.update_role(role_id=role["id"], name="watcher", description="eyes")
        assert renamed == {"id": role["id"], "name": "watcher", "description": "eyes"}
        assert await directory.get_role(role_id="watcher") == renamed
        with pytest.raises(Conflict):
            await directory.update_role(role_id="watcher", name="member")
        for name in ("system:admin", "system:"):
            with pytest.raises(InvalidRequest):
                await directory.create_role(name=name)
            with pytest.raises(InvalidRequest):
                await directory.update_role(role_id="watcher", name=name)
        assert await directory.get_role(role_id="watcher") == renamed
        await directory.grant_role(user="demo", project="demo", role="watcher")
        await directory.grant_system_role(user="demo", role="watcher")
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    assert {r["name"] for r in demo["roles"]} == {"member", "watcher"}
    with request_scope(context=admin):
        await directory.delete_role(role_id="watcher")
        with pytest.raises(NotFound):
            await directory.delete_role(role_id="watcher")
        remaining = await directory.list_role_assignments()
        assert role["id"] not in {a["role_id"] for a in remaining}
    assert (await tokens.validate(token=demo["token"]))["roles"] == ["member"]
    with pytest.raises(Unauthorized):
        await login(tokens, "demo", DEMO_PASSWORD, system=True)


async def test_a_user_lists_its_own_projects_and_only_its_own(
    tokens: Tokens, directory: IdentityAdmin, identity_actor
) -> None:
    admin = await admin_context(tokens)
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    with request_scope(context=admin):
        await directory.create_project(name="shared")
        group = await directory.create_group(name="sharers")
        await directory.add_user_to_group(group_id=group["id"], user_id="demo")
        await directory.grant_group_role(group="sharers", project="shared", role="reader")
        await directory.grant_system_role(user="demo", role="reader")  # not a project
        assert [p["name"] for p in await directory.list_user_projects(user_id="demo")] == ["demo", "shared"]
        with pytest.raises(NotFound):
            await directory.list_user_projects(user_id="nobody")
    with request_scope(context=context_of(demo)):
        mine = await directory.list_user_projects(user_id=demo["user"]["id"])
        assert [p["name"] for p in mine] == ["demo", "shared"]
        assert await directory.list_user_projects(user_id="demo") == mine  # by name too
        for other in (admin.user_id or "", "admin", "nobody"):  # another user and no user alike
            with pytest.raises(Forbidden):
                await directory.list_user_projects(user_id=other)


# -- groups -----------------------------------------------------------------------------------


async def test_groups_give_their_members_roles(
    tokens: Tokens, directory: IdentityAdmin, identity_actor
) -> None:
    admin = await admin_context(tokens)
    with request_scope(context=admin):
        await directory.create_project(name="lab")
        await directory.create_user(name="carol", password="pw-carol")
        await directory.create_group(name="devs", description="developers")
        await directory.grant_group_role(group="devs", project="lab", role="member")
    with pytest.raises(Unauthorized):
        await login(tokens, "carol", "pw-carol", project_name="lab")
    with request_scope(context=admin):
        await directory.add_user_to_group(group_id="devs", user_id="carol")
        assert await directory.check_user_in_group(group_id="devs", user_id="carol")
    carol = await login(tokens, "carol", "pw-carol", project_name="lab")
    assert [r["name"] for r in carol["roles"]] == ["member"]
    with request_scope(context=admin):
        await directory.grant_role(user="carol", project="lab", role="reader")
    assert (await tokens.validate(token=carol["token"]))["roles"] == ["member", "reader"]
    with request_scope(context=admin):
        effective = await directory.list_role_assignments(user_id=carol["user"]["id"], effective=True)
        group_rows = await directory.list_role_assignments(project_id=carol["project"]["id"])
        members = await directory.list_group_users(group_id="devs")
    assert sorted((a["role_name"], a["via_group"] is not None) for a in effective) == [
        ("member", True),
        ("reader", False),
    ]
    assert {(a["role_name"], a["user_id"] is None, a["group_id"] is None) for a in group_rows} == {
        ("member", True, False),
        ("reader", False, True),
    }
    assert [u["name"] for u in members] == ["carol"]
    with request_scope(context=admin):
        await directory.remove_user_from_group(group_id="devs", user_id="carol")
    assert (await tokens.validate(token=carol["token"]))["roles"] == ["reader"]
    with request_scope(context=admin):
        await directory.revoke_role(user="carol", project="lab", role="reader")
    await refused(tokens, carol["token"])  # no role left on the project
    with request_scope(context=admin):
        with pytest.raises(NotFound):
            await directory.remove_user_from_group(group_id="devs", user_id="carol")
        await directory.delete_group(group_id="devs")
        assert await directory.list_groups() == []


# -- application credentials --------------------------------------------------------------------


async def test_application_credentials(
    tokens: Tokens, directory: IdentityAdmin, credentials: ApplicationCredentials, identity_actor
) -> None:
    admin_ctx = await admin_context(tokens)
    with request_scope(context=admin_ctx):
        await directory.grant_role(user="demo", project="demo", role="reader")
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    with request_scope(context=context_of(demo)):
        created = await credentials.create_application_credential(
            name="ci", roles=["reader"], description="CI"
        )
        full = await credentials.create_application_credential(name="all")
        with pytest.raises(Forbidden):
            await credentials.create_application_credential(name="x", roles=["admin"])
        with pytest.raises(Conflict):
            await credentials.create_application_credential(name="ci")
        with pytest.raises(InvalidRequest):
            await credentials.create_application_credential(name="y", expires_at="yesterday")
        listed = await credentials.list_application_credentials(user_id=demo["user"]["id"])
    assert [r["name"] for r in created["roles"]] == ["reader"]
    assert sorted(r["name"] for r in full["roles"]) == ["member", "reader"]
    assert created["project_id"] == demo["project"]["id"] and len(created["secret"]) >= 32
    assert [c["name"] for c in listed] == ["all", "ci"] and all("secret" not in c for c in listed)
    row = await identity_actor.shared.store.fetchone(
        "SELECT secret_hash FROM app_creds WHERE id = ?", (created["id"],)
    )
    assert row["secret_hash"].startswith("$argon2id$") and created["secret"] not in row["secret_hash"]

    issued = await tokens.issue_with_application_credential(
        app_cred_id=created["id"], secret=created["secret"]
    )
    assert issued["methods"] == ["application_credential"]
    assert [r["name"] for r in issued["roles"]] == ["reader"]
    assert issued["application_credential"]["id"] == created["id"]
    info = await tokens.validate(token=issued["token"])
    assert info["app_cred_id"] == created["id"] and info["roles"] == ["reader"]
    for arguments in (
        {"app_cred_id": created["id"], "secret": "wrong"},
        {"app_cred_id": "nope", "secret": "x"},
    ):
        with pytest.raises(Unauthorized) as error:
            await tokens.issue_with_application_credential(**arguments)
        assert error.value.message == AUTH_FAILED
    with request_scope(context=context_of(issued)), pytest.raises(Forbidden):
        await credentials.create_application_credential(name="nested")
    with pytest.raises(Forbidden):
        await tokens.issue_with_token(token=issued["token"], project_name="demo")

    admin = await login(tokens, "admin", ADMIN_PASSWORD)
    with request_scope(context=context_of(admin)), pytest.raises(Forbidden):
        await credentials.create_application_credential(name="admin-on-own", roles=["reader"])
    with request_scope(context=admin_ctx):
        await directory.create_user(name="eve", password="pw-eve", default_project="demo")
        await directory.grant_role(user="eve", project="demo", role="member")
    eve = await login(tokens, "eve", "pw-eve")
    with request_scope(context=context_of(eve)):
        with pytest.raises(Forbidden):
            await credentials.list_application_credentials(user_id=demo["user"]["id"])
        with pytest.raises(Forbidden):
            await credentials.delete_application_credential(
                user_id=demo["user"]["id"], app_cred_id=created["id"]
            )

    with request_scope(context=context_of(demo)):
        await credentials.delete_application_credential(user_id=demo["user"]["id"], app_cred_id=created["id"])
    await refused(tokens, issued["token"])
    with pytest.raises(Unauthorized):
        await tokens.issue_with_application_credential(app_cred_id=created["id"], secret=created["secret"])
    with request_scope(context=admin_ctx):
        await directory.revoke_role(user="demo", project="demo", role="reader")
    from_full = await tokens.issue_with_application_credential(app_cred_id=full["id"], secret=full["secret"])
    assert [r["name"] for r in from_full["roles"]] == ["member"]  # only roles the user still holds


async def test_an_expired_application_credential_is_refused(
    tokens: Tokens, credentials: ApplicationCredentials, identity_actor
) -> None:
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    with request_scope(context=context_of(demo)):
        cred = await credentials.create_application_credential(name="short", expires_at=time.time() + 1.0)
    assert cred["expires_at"] is not None

    async def log_in() -> Token:
        return await tokens.issue_with_application_credential(app_cred_id=cred["id"], secret=cred["secret"])

    issued = await log_in()
    assert issued["expires_at"] <= cred["expires_at"]

    async def expired() -> bool:
        try:
            await log_in()
        except Unauthorized:
            return True
        return False

    await poll_until(expired, max(cred["expires_at"] - time.time(), 0) + 2)
    await refused(tokens, issued["token"])


# -- administration -------------------------------------------------------------------------------


async def test_administration_round_trip_and_bad_input_changes_nothing(
    tokens: Tokens, directory: IdentityAdmin, identity_actor
) -> None:
    with request_scope(context=await admin_context(tokens)):
        project = await directory.create_project(name="ops", description="operations")
        assert project["enabled"] is True and project["domain_id"] == "default"
        assert (await directory.get_project(project_id=project["id"]))["name"] == "ops"
        renamed = await directory.update_project(project_id=project["id"], name="ops2")
        assert renamed["name"] == "ops2"
        before = await directory.list_projects()
        for bad in (
            lambda: directory.create_project(name=""),
            lambda: directory.create_project(name="x" * 300),
            lambda: directory.create_project(name="ok", enabled="yes"),
            lambda: directory.create_project(name="ok", domain_id="other"),
            lambda: directory.update_project(project_id=project["id"], name="fine", enabled="no"),
            lambda: directory.create_user(name="u", password=""),
            lambda: directory.update_user(user_id="demo", name="renamed", enabled=1),
            lambda: directory.create_group(name=5),
            lambda: directory.create_role(name=" "),
        ):
            with pytest.raises(InvalidRequest):
                await bad()
        assert await directory.list_projects() == before
        assert [u["name"] for u in await directory.list_users()] == ["admin", "aiostack-service", "demo"]
        with pytest.raises(Conflict):
            await directory.create_project(name="demo")
        with pytest.raises(NotFound):
            await directory.grant_role(user="demo", project="ops2", role="nope")
        role = await directory.create_role(name="auditor")
        assert "auditor" in [r["name"] for r in await directory.list_roles()]
        assert (await directory.get_role(role_id=role["id"]))["name"] == "auditor"
        user = await directory.create_user(name="dave", password="pw-dave", description="d")
        assert "password_hash" not in user and user["enabled"] is True
        await directory.grant_role(user=user["id"], project=project["id"], role="auditor")
    dave = await login(tokens, "dave", "pw-dave", project_id=project["id"])
    with request_scope(context=await admin_context(tokens)):
        await directory.delete_project(project_id=project["id"])
        assert await directory.list_role_assignments(user_id=user["id"]) == []
    await refused(tokens, dave["token"])


Attempt = Callable[[Any], Awaitable[Any]]


@pytest.mark.parametrize(
    ("facet", "attempt"),
    [
        pytest.param(IdentityAdmin, lambda api: api.create_project(name="sneaky"), id="create_project"),
        pytest.param(IdentityAdmin, lambda api: api.list_projects(), id="list_projects"),
        pytest.param(
            IdentityAdmin,
            lambda api: api.update_project(project_id="demo", enabled=False),
            id="update_project",
        ),
        pytest.param(IdentityAdmin, lambda api: api.delete_project(project_id="demo"), id="delete_project"),
        pytest.param(
            IdentityAdmin, lambda api: api.create_user(name="sneaky", password="pw"), id="create_user"
        ),
        pytest.param(IdentityAdmin, lambda api: api.get_user(user_id="admin"), id="get_user"),
        pytest.param(
            IdentityAdmin, lambda api: api.update_user(user_id="admin", password="mine"), id="update_user"
        ),
        pytest.param(IdentityAdmin, lambda api: api.list_groups(), id="list_groups"),
        pytest.param(
            IdentityAdmin,
            lambda api: api.add_user_to_group(group_id="g", user_id="demo"),
            id="add_user_to_group",
        ),
        pytest.param(IdentityAdmin, lambda api: api.create_role(name="boss"), id="create_role"),
        pytest.param(
            IdentityAdmin,
            lambda api: api.grant_role(user="demo", project="admin", role="admin"),
            id="grant_role",
        ),
        pytest.param(
            IdentityAdmin,
            lambda api: api.grant_group_role(group="g", project="admin", role="admin"),
            id="grant_group_role",
        ),
        pytest.param(IdentityAdmin, lambda api: api.list_role_assignments(), id="list_role_assignments"),
        pytest.param(Tokens, lambda api: api.revoke_project(project_id="admin"), id="revoke_project"),
    ],
)
async def test_only_admins_administer(
    bus: Bus, tokens: Tokens, identity_actor, facet: type[ServiceAPI], attempt: Attempt
) -> None:
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    with request_scope(context=context_of(demo)), pytest.raises(Forbidden):
        await attempt(facet.client(bus))


async def test_existing_callers_keep_working(bus: Bus, tokens: Tokens, identity_actor) -> None:
    """The wire format is the handlers' keyword arguments as a map, as before the typed APIs."""
    demo = await login(tokens, "demo", DEMO_PASSWORD)
    member = Context(demo["user"]["id"], demo["project"]["id"], ("member",), demo["token"])
    with request_scope(context=member), pytest.raises(Forbidden):
        await bus.call("identity.create_project", {"name": "sneaky"})
    admin = await login(tokens, "admin", ADMIN_PASSWORD)
    with request_scope(context=context_of(admin)):
        await bus.call("identity.create_project", {"name": "team"})
        await bus.call("identity.create_user", {"name": "alice", "password": "pw", "default_project": "team"})
        await bus.call("identity.grant_role", {"user": "alice", "project": "team", "role": "member"})
    alice = await bus.call("identity.issue", {"username": "alice", "password": "pw"})
    assert alice["project"]["name"] == "team"


# -- argument checks ----------------------------------------------------------------------------

# every table of the store: a refused call must leave each as it was
TABLES = (
    "projects",
    "users",
    "roles",
    "assignments",
    "user_groups",
    "group_members",
    "group_assignments",
    "app_creds",
    "revocations",
)


async def snapshot(actor: IdentityActor) -> dict[str, list[dict[str, Any]]]:
    return {
        table: await actor.shared.store.fetchall(f"SELECT * FROM {table} ORDER BY rowid") for table in TABLES
    }


@pytest.mark.parametrize(
    ("facet", "attempt", "named"),
    [
        # wrong types
        pytest.param(IdentityAdmin, lambda api: api.create_project(name=5), "`str`, got `int` - at `$.name`"),
        pytest.param(
            IdentityAdmin, lambda api: api.create_project(name="lab", enabled="yes"), "`bool`, got `str`"
        ),
        pytest.param(IdentityAdmin, lambda api: api.update_user(user_id="demo", enabled=1), "at `$.enabled`"),
        pytest.param(IdentityAdmin, lambda api: api.list_projects(enabled="no"), "at `$.enabled`"),
        pytest.param(Tokens, lambda api: api.issue(username="demo", password=None), "at `$.password`"),
        pytest.param(
            Tokens, lambda api: api.issue(username="demo", password="pw", unscoped="yes"), "at `$.unscoped`"
        ),
        pytest.param(Tokens, lambda api: api.revoke_user(user_id=["demo"]), "at `$.user_id`"),
        pytest.param(
            ApplicationCredentials,
            lambda api: api.create_application_credential(name="ci", expires_at=True),
            "at `$.expires_at`",
        ),
        pytest.param(
            ApplicationCredentials,
            lambda api: api.create_application_credential(name="ci", roles=[{"id": 5}]),
            "at `$.roles[0].id`",
        ),
        # out of bounds
        pytest.param(IdentityAdmin, lambda api: api.create_user(name="x" * 256), "at `$.name`"),
        pytest.param(
            IdentityAdmin, lambda api: api.create_user(name="bob", password="   "), "at `$.password`"
        ),
        pytest.param(
            IdentityAdmin, lambda api: api.create_role(name="r", description="d" * 1025), "`$.description`"
        ),
        pytest.param(
            IdentityAdmin, lambda api: api.create_group(name="g", domain_id="other"), "`$.domain_id`"
        ),
        pytest.param(IdentityAdmin, lambda api: api.list_role_assignments(role_id=""), "at `$.role_id`"),
        pytest.param(Tokens, lambda api: api.revoke_project(project_id=""), "at `$.project_id`"),
        pytest.param(
            ApplicationCredentials,
            lambda api: api.create_application_credential(name="ci", roles=[]),
            "at `$.roles`",
        ),
        # missing
        pytest.param(IdentityAdmin, lambda api: api.create_project(description="no name"), "field `name`"),
        pytest.param(IdentityAdmin, lambda api: api.grant_role(user="demo", project="demo"), "field `role`"),
        pytest.param(Tokens, lambda api: api.validate(), "field `token`"),
        pytest.param(
            Tokens, lambda api: api.issue_with_application_credential(app_cred_id="x"), "field `secret`"
        ),
        # unknown
        pytest.param(
            IdentityAdmin, lambda api: api.create_project(name="lab", colour="red"), "field `colour`"
        ),
        pytest.param(
            Tokens, lambda api: api.issue(username="demo", password="pw", scope="all"), "field `scope`"
        ),
        pytest.param(
            ApplicationCredentials,
            lambda api: api.list_application_credentials(user_id="demo", secret="x"),
            "field `secret`",
        ),
    ],
)
async def test_wrong_missing_or_unknown_arguments_are_refused_naming_the_field_and_change_nothing(
    bus: Bus,
    tokens: Tokens,
    identity_actor: IdentityActor,
    facet: type[ServiceAPI],
    attempt: Attempt,
    named: str,
) -> None:
    admin = await admin_context(tokens)  # the refusal comes before any check of the caller's rights
    before = await snapshot(identity_actor)
    with request_scope(context=admin), pytest.raises(InvalidRequest) as refusal:
        await attempt(facet.client(bus))
    assert named in refusal.value.message
    assert refusal.value.message.startswith("identity.")
    assert await snapshot(identity_actor) == before


def test_key_files_are_private_even_with_a_loose_umask(tmp_path) -> None:
    from actors.identity.keys import KeyRepository

    previous = os.umask(0)
    try:
        repository = KeyRepository(tmp_path / "keys" / "token")
        asyncio.run(repository.setup())
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "keys" / "token").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "keys" / "token").iterdir())
