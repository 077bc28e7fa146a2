"""The owners' orphan sweep: release what instances that no longer exist still hold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from api.conductor import ConductorForOwners
from bus import AiostackError, Bus, request_scope

log = logging.getLogger(__name__)

ORPHAN_SWEEP_INTERVAL = 60.0
CHUNK = 500
"""Instance ids per question (to the conductor, or the owner's store): messages and statements
stay small however many instances there are."""
FACETS = (ConductorForOwners,)
"""What an owner's sweep calls (its NATS permissions follow from it: deploy/credentials.py)."""

Holders = Callable[[Sequence[str] | None], Awaitable[list[str]]]
"""The instances the owner holds something for: all (None), or those of the ids given."""


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]


async def sweep_orphans_forever(
    bus: Bus,
    holders: Holders,
    release: Callable[[str], Awaitable[Any]],
    what: str,
    interval: float = ORPHAN_SWEEP_INTERVAL,
) -> None:
    """At start: ask the conductor which of the instances ``holders(None)`` names are gone, and
    ``release`` what each held (net: ports, scheduler: claims, volume: attachments). Then every
    ``interval``: the same for the instances deleted since (``deleted_since``), those alone however
    many live. Until the conductor answers, try again every few seconds."""
    conductor = ConductorForOwners.client(bus)
    since: str | None = None
    while True:
        try:
            if since is None:
                since = await _sweep_all(conductor, holders, release, what)
            else:
                since = await _sweep_deleted(conductor, holders, release, what, since)
        except AiostackError as exc:
            log.info("orphan sweep of %s postponed: %s", what, exc)
            await asyncio.sleep(min(interval, 3.0))
            continue
        await asyncio.sleep(interval)


async def _sweep_all(
    conductor: ConductorForOwners, holders: Holders, release: Callable[[str], Awaitable[Any]], what: str
) -> str:
    """Every instance held (read before the conductor is asked: what is made meanwhile belongs to
    an instance that exists), asked about; the time to ask for deletions from next."""
    held = sorted(set(await holders(None)))
    since = (await conductor.deleted_since(since=None))["until"]
    live: set[str] = set()
    for chunk in _chunks(held):
        live.update(await conductor.live_instances(instance_uuids=list(chunk)))
    await _release(release, what, [instance_uuid for instance_uuid in held if instance_uuid not in live])
    return since


async def _sweep_deleted(
    conductor: ConductorForOwners,
    holders: Holders,
    release: Callable[[str], Awaitable[Any]],
    what: str,
    since: str,
) -> str:
    """The instances deleted since ``since`` that still hold something; the time to ask from next."""
    deletions = await conductor.deleted_since(since=since)
    for chunk in _chunks(sorted(deletions["instance_uuids"])):
        await _release(release, what, sorted(await holders(chunk)))
    return deletions["until"]


async def _release(release: Callable[[str], Awaitable[Any]], what: str, instance_uuids: list[str]) -> None:
    for instance_uuid in instance_uuids:
        log.warning("releasing the %s of instance %s, which no longer exists", what, instance_uuid)
        with request_scope():
            await release(instance_uuid)
