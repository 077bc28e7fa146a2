"""``runtime.holds.BoundedHolds``: held answers (a failed login's tarpit, a throttled login's 429)
never pile up past their bound; past it an answer goes at once."""

from __future__ import annotations

import asyncio

from runtime.holds import BoundedHolds


async def test_answers_past_the_bound_are_not_held_and_a_hold_ended_frees_its_place() -> None:
    holds = BoundedHolds(2)
    first = [asyncio.create_task(holds.hold(3600)) for _ in range(2)]
    await asyncio.sleep(0)
    assert holds.held == 2
    await asyncio.wait_for(holds.hold(3600), timeout=60)  # the third is not held: it returns
    assert holds.held == 2
    for task in first:
        task.cancel()
    await asyncio.gather(*first, return_exceptions=True)
    assert holds.held == 0  # a cancelled hold gives its place back
    held = asyncio.create_task(holds.hold(3600))
    await asyncio.sleep(0)
    assert holds.held == 1 and not held.done()
    held.cancel()
    await asyncio.gather(held, return_exceptions=True)
    assert holds.held == 0


async def test_no_hold_for_nothing() -> None:
    holds = BoundedHolds(1)
    await holds.hold(0)
    await holds.hold(-1)
    assert holds.held == 0
