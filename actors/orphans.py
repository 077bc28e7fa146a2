"""The owners' orphan sweep: release what instances that no longer exist still hold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from api.conductor import ConductorForOwners
from bus import AiostackError, Bus, request_scope

log = logging.getLogger(__name__)

ORPHAN_SWEEP_INTERVAL = 60.0
FACETS = (ConductorForOwners,)
"""What an owner's sweep calls (its NATS permissions follow from it: deploy/credentials.py)."""


async def sweep_orphans_forever(
    bus: Bus,
    holders: Callable[[], Awaitable[list[str]]],
    release: Callable[[str], Awaitable[Any]],
    what: str,
    interval: float = ORPHAN_SWEEP_INTERVAL,
) -> None:
    """At start and then every ``interval``: ask the conductor which of the instances ``holders()``
    names are gone, and ``release`` what each held (net: ports, scheduler: claims, volume:
    attachments). Until the conductor answers, try again every few seconds."""
    conductor = ConductorForOwners.client(bus)
    while True:
        try:
            instance_uuids = sorted(set(await holders()))
            live = set(await conductor.live_instances(instance_uuids=instance_uuids))
            for instance_uuid in instance_uuids:
                if instance_uuid not in live:
                    log.warning(
                        "releasing the %s of instance %s, which no longer exists", what, instance_uuid
                    )
                    with request_scope():
                        await release(instance_uuid)
        except AiostackError as exc:
            log.info("orphan sweep of %s postponed: %s", what, exc)
            await asyncio.sleep(min(interval, 3.0))
            continue
        await asyncio.sleep(interval)
