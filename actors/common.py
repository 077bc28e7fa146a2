"""What every actor does the same way: who is calling, what they may see, how events look."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from bus import AiostackError, Bus, Context, NotFound, Unauthorized, current, request_scope

log = logging.getLogger(__name__)

# libvirt's domain lifecycle events (VIR_DOMAIN_EVENT_*), in libvirt's numbering
LIFECYCLE_EVENTS = (
    "DEFINED",
    "UNDEFINED",
    "STARTED",
    "SUSPENDED",
    "RESUMED",
    "STOPPED",
    "SHUTDOWN",
    "PMSUSPENDED",
    "CRASHED",
)


def lifecycle_name(event: int) -> str:
    return LIFECYCLE_EVENTS[event] if 0 <= event < len(LIFECYCLE_EVENTS) else str(event)


def caller() -> Context | None:
    """The context of the request being handled (None for a service-internal call)."""
    cur = current.get()
    return cur.context if cur is not None else None


def require_caller() -> Context:
    """The calling user's context; ``Unauthorized`` when the message acts for no one."""
    ctx = caller()
    if ctx is None or ctx.user_id is None:
        raise Unauthorized("this operation needs a user context")
    return ctx


def sees_all(ctx: Context | None) -> bool:
    """Service-internal calls (no user) and admins see every project."""
    return ctx is None or ctx.user_id is None or ctx.is_admin


def check_visible(kind: str, resource_id: str, owner: str | None, *, public: bool = False) -> None:
    """Raise ``NotFound`` (never Forbidden: no existence leak) unless the caller may see it."""
    ctx = caller()
    if public or sees_all(ctx) or (ctx is not None and owner == ctx.project_id):
        return
    raise NotFound(f"{kind} {resource_id} could not be found")


def new_uuid() -> str:
    return str(uuid.uuid4())


def utcnow() -> str:
    """ISO 8601 UTC timestamp with a ``Z``, as OpenStack APIs show them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def publish_event(
    bus: Bus, kind: str, resource_id: str, project_id: str | None, event_type: str, state: dict[str, Any]
) -> int:
    """Publish one state change on ``<prefix>.evt.<kind>.<project>.<id>``.

    The body: ``{kind, id, project, type, ts, request_id, state}``; ``state`` is the
    resource's new state as its actor shows it. Returns the event's sequence in the event
    stream, once the stream has stored it (docs/EVENTS.md).
    """
    cur = current.get()
    project = project_id or "_"
    return await bus.publish_event(
        f"evt.{kind}.{project}.{resource_id}",
        {
            "kind": kind,
            "id": resource_id,
            "project": project,
            "type": event_type,
            "ts": time.time(),
            "request_id": cur.request_id if cur else None,
            "state": state,
        },
    )


ORPHAN_SWEEP_INTERVAL = 60.0


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
    while True:
        try:
            instance_uuids = sorted(set(await holders()))
            live = set(await bus.call("conductor.live_instances", {"instance_uuids": instance_uuids}))
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
