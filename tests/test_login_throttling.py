"""Login abuse against a real `aiostack up`: guessing the admin's password and a flood of wrong
logins are refused for the address they come from, and nobody else notices.

The attacker binds its client sockets to another loopback address (127.0.0.2, 127.0.0.3: all
of 127/8 is this host), as a second machine would be; the gateway counts by the socket's peer
address, never by a header.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from aiostack.client import password_auth
from deploy.launch import RunningCloud, aiostack_up

PASSWORDS = {"AIOSTACK_ADMIN_PASSWORD": "admin-pw-throttle", "AIOSTACK_DEMO_PASSWORD": "demo-pw-throttle"}
ADMIN_PASSWORD = PASSWORDS["AIOSTACK_ADMIN_PASSWORD"]
AUTH = "/identity/v3/auth/tokens"
FLOOD = 300


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cloud(tmp_path_factory: Any) -> AsyncIterator[RunningCloud]:
    async with aiostack_up(tmp_path_factory.mktemp("throttling"), env=PASSWORDS) as running:
        yield running


def from_address(address: str, connections: int = 100) -> aiohttp.ClientSession:
    """A client whose sockets come from ``address`` (loopback only)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), limit=connections))


async def login(
    session: aiohttp.ClientSession, url: str, user: str, password: str, **headers: str
) -> tuple[int, dict[str, Any], str | None]:
    """A password login on the user's own project: status, body, token."""
    async with session.post(
        url + AUTH, json=password_auth(user, password, user), headers=headers
    ) as response:
        return response.status, await response.json(), response.headers.get("X-Subject-Token")


async def test_guessing_the_admins_password_throttles_the_guesser_not_the_admin(cloud: RunningCloud) -> None:
    url = cloud.gateway_url
    async with from_address("127.0.0.2") as attacker, from_address("127.0.0.1") as admin:
        statuses, waits = [], []
        for _ in range(15):  # each refusal is held up to 1 s: about 10 s of guessing
            body = password_auth("admin", "guess", "admin")
            headers = {"X-Forwarded-For": "127.0.0.1"}  # not believed
            async with attacker.post(url + AUTH, json=body, headers=headers) as response:
                statuses.append(response.status)
                assert (await response.json())["error"]["code"] == response.status
                if response.status == 429:
                    waits.append(int(response.headers["Retry-After"]))
        # five free failures, the sixth earns a refusal; from then on nearly every attempt is
        # refused unchecked, for longer and longer (1, 2, 4 s...): one is checked as each ends
        assert statuses[:6] == [401] * 6 and set(statuses) == {401, 429}, statuses
        assert statuses[6:].count(401) <= 3 and max(waits) >= 4, (statuses, waits)
        # right after a checked failure (which earns the next, longer refusal), the right password
        # from the attacker's address is refused too, with a time to come back
        while (await login(attacker, url, "admin", "guess"))[0] != 401:
            pass
        async with attacker.post(url + AUTH, json=password_auth("admin", ADMIN_PASSWORD, "admin")) as refused:
            assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
        # the admin, from its own address, logs in at once and works; so does anyone else
        status, body, token = await login(admin, url, "admin", ADMIN_PASSWORD)
        assert status == 201 and token, body
        async with admin.get(f"{url}/identity/v3/users", headers={"X-Auth-Token": token}) as listing:
            assert listing.status == 200
        assert (await login(admin, url, "demo", PASSWORDS["AIOSTACK_DEMO_PASSWORD"]))[0] == 201
        # from the attacker's address another user is not refused: the throttle is per user there
        assert (await login(attacker, url, "demo", PASSWORDS["AIOSTACK_DEMO_PASSWORD"]))[0] == 201


async def test_a_flood_of_wrong_logins_is_refused_while_a_valid_login_succeeds(cloud: RunningCloud) -> None:
    url = cloud.gateway_url
    async with from_address("127.0.0.3", connections=FLOOD) as attacker, from_address("127.0.0.1") as user:
        status, _, demo_token = await login(user, url, "demo", PASSWORDS["AIOSTACK_DEMO_PASSWORD"])
        assert status == 201 and demo_token
        started = asyncio.Event()

        async def wrong() -> int:
            started.set()
            return (await login(attacker, url, "admin", "guess"))[0]

        flood = [asyncio.create_task(wrong()) for _ in range(FLOOD)]
        await started.wait()
        # meanwhile: a valid login from another address, and requests with tokens, cached and new
        status, body, admin_token = await login(user, url, "admin", ADMIN_PASSWORD)
        assert status == 201 and admin_token, body
        for token in (demo_token, admin_token):
            async with user.get(f"{url}/compute/v2.1/flavors", headers={"X-Auth-Token": token}) as listing:
                assert listing.status == 200
        statuses = Counter(await asyncio.gather(*flood))
    assert set(statuses) <= {401, 429}, statuses
    # at most 4 checks in flight from one address and 5 free failures per user: 9 checked (401),
    # and one more each time a refusal (1 s, 2 s, 4 s...) ends while the flood lasts; everything
    # else was refused without a password check
    assert statuses[401] <= 15 and statuses[429] >= FLOOD - 15, statuses
