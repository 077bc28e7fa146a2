"""The validation cache: hits cost no bus trip; revocation, disablement and expiry are honoured quickly."""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp

from actors.identity.actor import IdentityActor
from api.identity import IdentityAdmin, Token, Tokens
from bus import Bus, Context, Unauthorized, request_scope
from runtime.auth import TokenValidator
from tests.helpers import Api

CACHE_IN_ANOTHER_PROCESS = """
import asyncio, sys, time
from runtime.auth import TokenValidator
from bus import Bus, Unauthorized

async def main(url, token):
    async with await Bus.connect(url) as bus:
        validator = TokenValidator(bus)
        await validator.start()
        await validator.validate(token)
        print("cached", flush=True)
        while True:
            try:
                await validator.validate(token)
            except Unauthorized:
                print("refused", time.time(), flush=True)
                return
            await asyncio.sleep(0.01)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def issue(bus: Bus, username: str, password: str) -> Token:
    return await Tokens.client(bus).issue(username=username, password=password)


async def test_a_cache_hit_costs_no_bus_round_trip(bus: Bus, start_actor, config) -> None:
    identity_actor = await start_actor(IdentityActor, config)
    issued = await issue(bus, "demo", "demo-secret")
    validator = TokenValidator(bus)
    await validator.start()
    first = await validator.validate(issued["token"])
    await identity_actor.stop()  # nobody answers TokenValidation.validate any more
    assert await validator.validate(issued["token"]) == first


async def test_a_revocation_reaches_a_cache_in_another_process_within_a_second(
    bus: Bus, start_actor, config
) -> None:
    await start_actor(IdentityActor, config)
    issued = await issue(bus, "demo", "demo-secret")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CACHE_IN_ANOTHER_PROCESS,
        config.nats_url,
        issued["token"],
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert (await asyncio.wait_for(process.stdout.readline(), 30)).strip() == b"cached"
        admin = await issue(bus, "admin", "admin-secret")
        admin_ctx = Context(admin["user"]["id"], admin["project"]["id"], ("admin",), admin["token"])
        revoked_at = time.time()
        with request_scope(context=admin_ctx):
            await Tokens.client(bus).revoke_user(user_id=issued["user"]["id"])
        line = (await asyncio.wait_for(process.stdout.readline(), 5)).decode().split()
        assert line[0] == "refused"
        assert float(line[1]) - revoked_at < 1.0
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_an_expired_token_is_refused_within_a_second(bus: Bus, start_actor, config) -> None:
    await start_actor(IdentityActor, config, token_ttl=1.0)
    issued = await issue(bus, "demo", "demo-secret")
    validator = TokenValidator(bus)
    await validator.start()
    await validator.validate(issued["token"])
    async with asyncio.timeout(issued["expires_at"] - time.time() + 5):
        while True:
            try:
                await validator.validate(issued["token"])
            except Unauthorized:
                break
            await asyncio.sleep(0.01)
    assert time.time() - issued["expires_at"] < 1.0


async def test_a_disabled_users_token_stops_working_at_the_gateway(bus: Bus, cloud, gateway_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        api = Api(session, gateway_url)
        await api.login()
        assert (await api.get("/compute/v2.1/servers"))[0] == 200
        admin = await issue(bus, "admin", "admin-secret")
        admin_ctx = Context(admin["user"]["id"], admin["project"]["id"], ("admin",), admin["token"])
        demo_id = (await issue(bus, "demo", "demo-secret"))["user"]["id"]
        with request_scope(context=admin_ctx):
            await IdentityAdmin.client(bus).update_user(user_id=demo_id, enabled=False)
        async with asyncio.timeout(1):
            while (await api.get("/compute/v2.1/servers"))[0] != 401:
                await asyncio.sleep(0.01)
        with request_scope(context=admin_ctx):
            await IdentityAdmin.client(bus).update_user(user_id=demo_id, enabled=True)
        assert (await api.get("/compute/v2.1/servers"))[0] == 401  # revoked tokens stay revoked
        await api.login()
        assert (await api.get("/compute/v2.1/servers"))[0] == 200
