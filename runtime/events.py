"""State-change events: published on ``<prefix>.evt.<kind>.<project>.<id>`` and kept in the
event stream (docs/EVENTS.md is the subscribers' reference). A host's own events (a node's
domain events) end with the host, ``<prefix>.evt.domain.<project>.<id>.<host>``, so the bus's
permissions let a node publish them only for its own hosts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bus import Bus, current

NO_PROJECT = "_"
"""The project token of events that belong to no project (hosts)."""


def event_subject(kind: str, project_id: str | None, resource_id: str, host: str | None = None) -> str:
    subject = f"evt.{kind}.{project_id or NO_PROJECT}.{resource_id}"
    return f"{subject}.{host}" if host is not None else subject


def host_event_filter(kind: str, host: str) -> str:
    """The subjects of one host's events of a kind (what that host alone may publish)."""
    return f"evt.{kind}.*.*.{host}"


def event_filter(kind: str | None = None, project_id: str | None = None) -> str:
    """The subject filter of the events of one kind (every kind: None) and one project (every: None)."""
    if kind is None:
        return "evt.>"
    return f"evt.{kind}.{project_id}.>" if project_id is not None else f"evt.{kind}.>"


async def publish_event(
    bus: Bus,
    kind: str,
    resource_id: str,
    project_id: str | None,
    event_type: str,
    state: Mapping[str, Any],
    *,
    message_id: str | None = None,
    host: str | None = None,
) -> int:
    """Publish one state change on ``<prefix>.evt.<kind>.<project>.<id>`` (``.<host>`` after it
    for a host's own events).

    The body: ``{kind, id, project, type, ts, request_id, state}``; ``state`` is the
    resource's new state as its actor shows it. Returns the event's sequence in the event
    stream, once the stream has stored it (docs/EVENTS.md). ``message_id``: the same id
    published twice within the stream's duplicate window is kept once (``Bus.publish_event``).
    """
    cur = current.get()
    return await bus.publish_event(
        event_subject(kind, project_id, resource_id, host),
        {
            "kind": kind,
            "id": resource_id,
            "project": project_id or NO_PROJECT,
            "type": event_type,
            "ts": time.time(),
            "request_id": cur.request_id if cur else None,
            "state": state,
        },
        message_id=message_id,
    )
