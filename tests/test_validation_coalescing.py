"""Requests that miss the token cache at the same time on the same token ask the identity actor
once between them: a burst of requests with a new token (or a flood with a bad one) costs one
validation, not one each."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.identity.actor import IdentityActor
from api.identity import Tokens
from bus import Bus, Unauthorized
from runtime.auth import TokenValidator
from tests.helpers import DEMO_PASSWORD


class Counting:
    """A ``TokenValidation`` client that counts the calls it passes on."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, 0

    async def validate(self, *, token: str, service_token: str | None = None) -> Any:
        self.calls += 1
        return await self.client.validate(token=token, service_token=service_token)


async def test_concurrent_misses_on_one_token_ask_once(bus: Bus, start_actor, config) -> None:
    await start_actor(IdentityActor, config)
    token = (await Tokens.client(bus).issue(username="demo", password=DEMO_PASSWORD))["token"]
    validator = TokenValidator(bus)
    await validator.start()
    counting = validator.identity = Counting(validator.identity)

    identities = await asyncio.gather(*(validator.validate(token) for _ in range(100)))
    assert counting.calls == 1 and len({id(identity) for identity in identities}) == 1
    assert identities[0].context.user_id is not None
    await asyncio.gather(*(validator.validate(token) for _ in range(100)))
    assert counting.calls == 1  # cached since

    bad = [validator.validate("not-a-token") for _ in range(50)]
    answers = await asyncio.gather(*bad, return_exceptions=True)
    assert all(isinstance(answer, Unauthorized) for answer in answers)
    assert counting.calls == 2
    with pytest.raises(Unauthorized):  # a refusal is not cached: asked again
        await validator.validate("not-a-token")
    assert counting.calls == 3


async def test_a_caller_that_gives_up_leaves_the_answer_to_the_others(bus: Bus, start_actor, config) -> None:
    await start_actor(IdentityActor, config)
    token = (await Tokens.client(bus).issue(username="demo", password=DEMO_PASSWORD))["token"]
    validator = TokenValidator(bus)
    await validator.start()
    counting = validator.identity = Counting(validator.identity)
    impatient = asyncio.create_task(validator.validate(token))
    patient = asyncio.create_task(validator.validate(token))
    await asyncio.sleep(0)
    impatient.cancel()
    assert (await patient).context.user_id is not None
    assert impatient.cancelled() and counting.calls == 1
    await validator.validate(token)
    assert counting.calls == 1
