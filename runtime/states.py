"""The state vocabulary shared by the conductor and the nodes: libvirt's lifecycle events."""

from __future__ import annotations

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
