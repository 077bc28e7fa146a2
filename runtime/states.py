"""The state vocabulary shared by the conductor and the nodes: an instance's states, as Nova
names them, and libvirt's lifecycle events.

``VmState`` and ``TaskState`` are what the conductor stores and every instance view and
event carries (their values are the strings of the store and the wire); ``PowerState`` is
Nova's power-state numbering. Which state an action or a lifecycle event leads to is the
conductor's (``actors/conductor/states.py``).
"""

from __future__ import annotations

import enum

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


class Lifecycle(enum.IntEnum):
    """libvirt's domain lifecycle events (``VIR_DOMAIN_EVENT_*``): ``LIFECYCLE_EVENTS`` as numbers."""

    DEFINED = 0
    UNDEFINED = 1
    STARTED = 2
    SUSPENDED = 3
    RESUMED = 4
    STOPPED = 5
    SHUTDOWN = 6
    PMSUSPENDED = 7
    CRASHED = 8


class VmState(enum.StrEnum):
    """Nova's ``vm_state``: what the instance is, between tasks."""

    BUILDING = "building"
    ACTIVE = "active"
    STOPPED = "stopped"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    RESIZED = "resized"
    """A resize (or cold migration) is done and waits to be confirmed or reverted."""
    SHELVED = "shelved"
    """Shelved: its disk saved as an image, its domain shut off (still defined) on its host."""
    SHELVED_OFFLOADED = "shelved_offloaded"
    """Shelved and offloaded: no host, no domain, no claim; its ports and volumes kept."""
    ERROR = "error"
    DELETED = "deleted"


class TaskState(enum.StrEnum):
    """Nova's ``task_state``: the task the instance is in the middle of (none: ``None``)."""

    SCHEDULING = "scheduling"
    SPAWNING = "spawning"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    REBOOTING = "rebooting"
    REBOOTING_HARD = "rebooting_hard"
    DELETING = "deleting"
    PAUSING = "pausing"
    UNPAUSING = "unpausing"
    SUSPENDING = "suspending"
    RESUMING = "resuming"
    REBUILDING = "rebuilding"
    REBUILD_SPAWNING = "rebuild_spawning"
    """An evacuate's second step: the destination's node builds the domain again."""
    IMAGE_SNAPSHOT = "image_snapshot"
    RESIZE_PREP = "resize_prep"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_MIGRATED = "resize_migrated"
    RESIZE_FINISH = "resize_finish"
    RESIZE_REVERTING = "resize_reverting"
    RESIZE_CONFIRMING = "resize_confirming"
    RESOURCES_CLAIMING = "resources_claiming"
    """A live change of vCPUs and RAM (aiostack's ``setResources``): the conductor claims the size."""
    RESOURCES_CHANGING = "resources_changing"
    """A live change of vCPUs and RAM: the node gives the running domain the new size."""
    MIGRATING = "migrating"
    """A live migration, from its claim to its end (its step: the instance's ``migration_step``)."""
    SHELVING = "shelving"
    SHELVING_IMAGE_PENDING_UPLOAD = "shelving_image_pending_upload"
    SHELVING_IMAGE_UPLOADING = "shelving_image_uploading"
    SHELVING_OFFLOADING = "shelving_offloading"
    UNSHELVING = "unshelving"


RESIZE_TASKS = frozenset(
    {
        TaskState.RESIZE_PREP,
        TaskState.RESIZE_MIGRATING,
        TaskState.RESIZE_MIGRATED,
        TaskState.RESIZE_FINISH,
        TaskState.RESIZE_REVERTING,
        TaskState.RESIZE_CONFIRMING,
    }
)
"""Every task of a resize (the conductor, the node's reconcile and the audit read them so)."""
LIVE_RESOURCE_TASKS = frozenset({TaskState.RESOURCES_CLAIMING, TaskState.RESOURCES_CHANGING})
"""Every task of a live change of vCPUs and RAM."""
SHELVE_TASKS = frozenset(
    {
        TaskState.SHELVING,
        TaskState.SHELVING_IMAGE_PENDING_UPLOAD,
        TaskState.SHELVING_IMAGE_UPLOADING,
        TaskState.SHELVING_OFFLOADING,
    }
)
"""The tasks of a shelve and of its offload (the domain is powered off, snapshotted, removed)."""


class PowerState(enum.IntEnum):
    """Nova's ``power_state`` numbers: what the hypervisor last said of the domain."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7
