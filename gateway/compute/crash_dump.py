"""The ``trigger_crash_dump`` server action (Nova 2.17): an NMI into the guest, through its node.

Before 2.17 the action does not exist: 404 with no more said, as Nova answers an action of a
later microversion. From 2.17: 202 once the guest got its NMI; 409 for a server not active,
paused, resized or in error (or busy, locked, never launched), 400 "Triggering crash dump is not
supported" when its host's driver cannot inject one.
"""

from __future__ import annotations

from aiohttp import web

from bus import NotFound
from gateway.compute.common import compute
from gateway.versions import microversion

CRASH_DUMP_SINCE = (2, 17)


async def trigger_crash_dump(request: web.Request, server_id: str) -> None:
    """:raises NotFound: before 2.17 (Nova's answer to an action its microversion lacks), or no
    such server."""
    if microversion(request) < CRASH_DUMP_SINCE:
        raise NotFound("The resource could not be found.")
    await compute(request).trigger_crash_dump(instance_uuid=server_id)
