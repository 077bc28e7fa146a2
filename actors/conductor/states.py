"""The conductor's state machine: what each action, and each word from a node, does to an instance.

An instance is a ``vm_state`` (what it is) and a ``task_state`` (the task it is in the middle
of, or None). ``transition`` is the one place that decides a change of either: every state
change of the conductor goes through it. It is pure (no store, no bus): given the states an
instance is in and a *trigger*, it answers the states it goes to, or None when the trigger
is refused (an action: ``Conflict``) or changes nothing (a node's report). Its table is
``tests/actors/test_conductor_states.py``.

Triggers:

* ``Action``: what a user starts (and ``instance_actions.action`` records). An action on a
  running task is refused, but ``delete``, which may start from anything and, asked again,
  leads where it already is;
* ``Lifecycle``: libvirt's lifecycle events of the instance's domain, which finish the tasks
  (ACTIVE, SHUTOFF, DELETED come from them, never from assuming that a libvirt call worked);
* ``Report``: what else the conductor learns: a host claimed, a build failed or stalled, a
  power state seen without an event, a task libvirt reports nothing for, a domain missing.

+-------------+-------------------------------------------+--------------------+----------------------+
| action      | from vm_state (task_state None)           | task while it runs | finished by          |
+=============+===========================================+====================+======================+
| stop        | active, paused, suspended, error          | powering-off       | STOPPED -> stopped   |
| start       | stopped                                   | powering-on        | STARTED -> active    |
| reboot      | active                                    | rebooting          | task_done            |
| reboot_hard | active, stopped, paused, suspended, error | rebooting_hard     | STARTED -> active    |
| pause       | active                                    | pausing            | SUSPENDED -> paused  |
| unpause     | paused                                    | unpausing          | RESUMED -> active    |
| suspend     | active                                    | suspending         | STOPPED -> suspended |
| resume      | suspended                                 | resuming           | STARTED -> active    |
| rebuild     | active, stopped, error                    | rebuilding         | STARTED -> active,   |
|             |                                           |                    | task_done (stopped)  |
| createImage | active, stopped, paused, suspended        | image_snapshot     | task_done            |
| evacuate    | active, stopped, error                    | rebuilding,        | STARTED -> active,   |
|             |                                           | rebuild_spawning   | not_running: stopped |
| delete      | any (any task)                            | deleting           | UNDEFINED -> deleted |
+-------------+-------------------------------------------+--------------------+----------------------+

A resize (``resize.py``) runs as Nova's: ``resize`` from active or stopped is resize_prep
(the conductor claims the new flavor), ``RESIZE_CLAIMED`` resize_migrating (the node powers the
domain off and defines it again with the new flavor: ``task_done``), resize_migrated,
``RESIZE_FINISHING`` resize_finish (the node starts it if it ran and reports its power state:
``RUNNING`` or ``NOT_RUNNING``), then RESIZED (VERIFY_RESIZE) with no task. ``confirmResize``
(resize_confirming) and ``revertResize`` (resize_reverting: the node defines the old flavor
again) end with the domain's power state
(``RUNNING``: active, ``NOT_RUNNING``: stopped). ``RESIZE_FAILED`` ends a resize that could not
go on: back where it was from resize_prep, in ERROR from a node's step. libvirt's events during
a resize, and while RESIZED, change only the power state.

A live change of vCPUs and RAM (``live_resources.py``, aiostack's ``setResources``) starts from
active: resources_claiming (the conductor sets the claim), ``RESOURCES_CLAIMED``
resources_changing (the node changes the running domain: ``task_done`` ends it, still active).
A power state a node reports meanwhile (``RUNNING``, ``NOT_RUNNING``: a node that restarted),
and libvirt's STARTED or RESUMED (its domain started again), change only the power state; its
other events end the change as they end any task. ``RESOURCES_FAILED`` ends one that could not
go on: back where it was from resources_claiming, in ERROR from resources_changing;
``RESOURCES_REFUSED`` (libvirt refused the node, which put the old size back) ends it as it was.

An evacuate (``evacuate.py``) runs as Nova's: ``evacuate`` from active, stopped or error, its
host down, is rebuilding (the conductor moves the claim to a destination: ``EVACUATE_CLAIMED``),
then rebuild_spawning on the destination, whose node builds the domain again from the image and
ends it with libvirt's word (STARTED: active) or the power state (``NOT_RUNNING``: a stopped one
stays stopped). ``EVACUATE_FAILED`` ends one that could not go on: back where it was from
rebuilding (no destination: nothing moved), in ERROR from rebuild_spawning.

A shelve (``shelve.py``) runs as Nova's: ``shelve`` from active, stopped, paused or suspended is
shelving (the node powers the domain off: ``SHELVE_POWERED_OFF``), shelving_image_pending_upload,
``SHELVE_UPLOADING`` shelving_image_uploading (the node uploads the disk), then ``SHELVE_DONE``
SHELVED (a volume-backed one: straight from shelving). ``shelveOffload`` from shelved is
shelving_offloading (the node removes the domain), then ``OFFLOADED`` SHELVED_OFFLOADED.
``unshelve`` of a shelved one is powering-on (STARTED: active; ``NOT_RUNNING``: shelved again),
of an offloaded one unshelving (the conductor claims a host: ``UNSHELVE_CLAIMED``), then
spawning on that host (STARTED or ``RUNNING``: active). ``SHELVE_FAILED`` ends a shelve in ERROR,
``UNSHELVE_FAILED`` an unshelve offloaded again; a shelve whose node
never took it on a host that is down is dropped (``TASK_ABANDONED``). libvirt's events during a
shelve and while shelved change only the power state, but STARTED.

``attach_volume`` needs active, stopped or shelved-offloaded with no task running,
``trigger_crash_dump`` active, paused, resized or error with no task running, ``detach_volume``,
``lock`` and ``unlock`` any live state; none of them changes the states. A new instance is
``CREATED``
(building, scheduling): ``SCHEDULED`` (spawning), then STARTED (active), or ``RESCHEDULED``
back to scheduling, or ``BUILD_FAILED`` (error).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from api.conductor import Status
from runtime.states import (
    LIVE_RESOURCE_TASKS,
    RESIZE_TASKS,
    SHELVE_TASKS,
    Lifecycle,
    PowerState,
    TaskState,
    VmState,
)


class Action(enum.StrEnum):
    """What a user does to an instance (``instance_actions.action``)."""

    CREATE = "create"
    DELETE = "delete"
    STOP = "stop"
    START = "start"
    REBOOT = "reboot"
    REBOOT_HARD = "reboot_hard"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    SUSPEND = "suspend"
    RESUME = "resume"
    ATTACH_VOLUME = "attach_volume"
    DETACH_VOLUME = "detach_volume"
    ATTACH_INTERFACE = "attach_interface"
    DETACH_INTERFACE = "detach_interface"
    LOCK = "lock"
    UNLOCK = "unlock"
    REBUILD = "rebuild"
    CREATE_IMAGE = "createImage"
    RESIZE = "resize"
    CONFIRM_RESIZE = "confirmResize"
    REVERT_RESIZE = "revertResize"
    EVACUATE = "evacuate"
    SET_RESOURCES = "setResources"
    TRIGGER_CRASH_DUMP = "trigger_crash_dump"
    MIGRATE = "migrate"
    """A cold migration: a resize to the same flavor on another host (its steps are a resize's)."""
    LIVE_MIGRATION = "live-migration"
    """A live migration: the running domain moves to another host (``migrating`` throughout)."""
    SHELVE = "shelve"
    SHELVE_OFFLOAD = "shelveOffload"
    UNSHELVE = "unshelve"


class Report(enum.StrEnum):
    """What the conductor learns of an instance besides libvirt's lifecycle events."""

    SCHEDULED = "scheduled"
    """A host was claimed for the build: the node builds it."""
    RESCHEDULED = "rescheduled"
    """The build failed on its host, or stalled there: another host is tried."""
    BUILD_FAILED = "build_failed"
    """The build gave up (no host, every attempt failed, a domain that does not start)."""
    RUNNING = "running"
    """A node saw the domain running, with no event (it did not change)."""
    NOT_RUNNING = "not_running"
    """A node saw the domain not running, with no event."""
    TASK_DONE = "task_done"
    """The node finished a soft reboot (libvirt sends no event for it)."""
    TASK_ABANDONED = "task_abandoned"
    """A power change made no progress and its host is down: the task is dropped."""
    DOMAIN_GONE = "domain_gone"
    """The node found no domain to undefine for an instance being deleted."""
    DELETED_HERE = "deleted_here"
    """The conductor finished a delete without a node (no host, or the host does not answer)."""
    RESIZE_CLAIMED = "resize_claimed"
    """The scheduler holds the resize's new flavor: the node resizes the domain."""
    RESIZE_FINISHING = "resize_finishing"
    """The domain has its new flavor: the node finishes (starts it again if it ran)."""
    RESIZE_FAILED = "resize_failed"
    """A resize cannot go on: no room for the new flavor, or a step that made no progress."""
    EVACUATE_CLAIMED = "evacuate_claimed"
    """The scheduler moved an evacuate's claim to its destination: the node there builds it."""
    EVACUATE_FAILED = "evacuate_failed"
    """An evacuate cannot go on: no destination (nothing moved), or its node's step failed or stalled."""
    RESOURCES_CLAIMED = "resources_claimed"
    """The scheduler holds a live change's size: the node changes the running domain."""
    RESOURCES_FAILED = "resources_failed"
    """A live change cannot go on: back where it was before its node took it, else in ERROR."""
    RESOURCES_REFUSED = "resources_refused"
    """libvirt refused the node a live change, which put the old size back: as it was."""
    LIVE_STEP = "live_step"
    """A live migration goes on to its next step (``migration_step``), still ``migrating``."""
    LIVE_ENDED = "live_ended"
    """A live migration ends without its destination's word: cancelled, or given up (nothing moved)."""
    LIVE_FAILED = "live_failed"
    """A live migration's rollback could not finish: ERROR."""
    SHELVE_POWERED_OFF = "shelve_powered_off"
    """The node powered a shelving instance's domain off: its disk is to be uploaded."""
    SHELVE_UPLOADING = "shelve_uploading"
    """The shelve's upload is handed to the node (the conductor's step between the node's two)."""
    SHELVE_DONE = "shelve_done"
    """The shelve's image is uploaded (or a volume-backed instance is powered off): SHELVED."""
    SHELVE_FAILED = "shelve_failed"
    """A shelve cannot go on (its upload failed, or its node's step stalled)."""
    OFFLOADED = "offloaded"
    """The shelved instance's domain is gone and its claim, port bindings and volume exports
    given back: SHELVED_OFFLOADED, on no host."""
    UNSHELVE_CLAIMED = "unshelve_claimed"
    """The scheduler claimed a host for an offloaded instance: the node there builds it."""
    UNSHELVE_FAILED = "unshelve_failed"
    """An unshelve cannot go on (no host, or its node failed or stalled): offloaded again."""


Trigger = Action | Lifecycle | Report


@dataclass(frozen=True, slots=True)
class Change:
    """The states a trigger leads to (all of them: unchanged ones too)."""

    vm_state: VmState
    task_state: TaskState | None
    power_state: PowerState | None = None
    """None: unchanged."""
    launched: bool = False
    """The instance runs for the first time: its create action succeeded (``launched_at``)."""

    @property
    def deleted(self) -> bool:
        return self.vm_state is VmState.DELETED


CREATED: Final = (VmState.BUILDING, TaskState.SCHEDULING)
"""The states of a new instance."""
BUILDING_ON_HOST: Final = (VmState.BUILDING, TaskState.SPAWNING)
"""The states of an instance whose build its host's node has been handed."""

POWER_ACTIONS: Final[dict[Action, tuple[frozenset[VmState], TaskState]]] = {
    Action.STOP: (
        frozenset({VmState.ACTIVE, VmState.PAUSED, VmState.SUSPENDED, VmState.ERROR}),
        TaskState.POWERING_OFF,
    ),
    Action.START: (frozenset({VmState.STOPPED}), TaskState.POWERING_ON),
    Action.REBOOT: (frozenset({VmState.ACTIVE}), TaskState.REBOOTING),
    Action.REBOOT_HARD: (
        frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED, VmState.ERROR}),
        TaskState.REBOOTING_HARD,
    ),
    Action.PAUSE: (frozenset({VmState.ACTIVE}), TaskState.PAUSING),
    Action.UNPAUSE: (frozenset({VmState.PAUSED}), TaskState.UNPAUSING),
    Action.SUSPEND: (frozenset({VmState.ACTIVE}), TaskState.SUSPENDING),
    Action.RESUME: (frozenset({VmState.SUSPENDED}), TaskState.RESUMING),
    Action.REBUILD: (frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.ERROR}), TaskState.REBUILDING),
    Action.CREATE_IMAGE: (
        frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED}),
        TaskState.IMAGE_SNAPSHOT,
    ),
}
"""The actions a node does to an instance's domain (a rebuild: its disk made again from an image,
and the domain with it; createImage: a copy of its disk uploaded as an image): the vm_states each
may start from (with no task running) and the task_state it runs under."""

RESIZE_FROM: Final = frozenset({VmState.ACTIVE, VmState.STOPPED})
"""The vm_states a resize may start from (with no task running)."""
RESIZE_STEPS: Final = frozenset(
    {TaskState.RESIZE_PREP, TaskState.RESIZE_MIGRATING, TaskState.RESIZE_MIGRATED, TaskState.RESIZE_FINISH}
)
"""The tasks of a resize before it is RESIZED."""

RESOURCES_FROM: Final = frozenset({VmState.ACTIVE})
"""The vm_states a live change of vCPUs and RAM may start from (with no task running)."""
LIVE_MIGRATION_FROM: Final = frozenset({VmState.ACTIVE, VmState.PAUSED})
"""The vm_states a live migration may start from (with no task running): a paused guest is not
migrated (the destination starts the domain it defines)."""

EVACUATE_FROM: Final = frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.ERROR})
"""The vm_states an evacuate may start from (with no task running), as Nova's."""

CRASH_DUMP_FROM: Final = frozenset({VmState.ACTIVE, VmState.PAUSED, VmState.RESIZED, VmState.ERROR})
"""The vm_states a crash dump may be triggered in (with no task running): Nova's, but rescued
(no rescue here). It changes no state."""
SHELVE_FROM: Final = frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED})
"""The vm_states a shelve may start from (with no task running), as Nova's."""
SHELVED_STATES: Final = frozenset({VmState.SHELVED, VmState.SHELVED_OFFLOADED})
SHELVE_UPLOAD_STEPS: Final = frozenset(
    {TaskState.SHELVING, TaskState.SHELVING_IMAGE_PENDING_UPLOAD, TaskState.SHELVING_IMAGE_UPLOADING}
)
"""The tasks of a shelve before it is SHELVED."""

VOLUME_STATES: Final = frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.SHELVED})
"""The vm_states a volume may be attached in (with no task running) on the instance's host: a
shelved instance's domain is shut off there, as a stopped one's (and an offloaded one's volumes
wait for its unshelve)."""
INTERFACE_STATES: Final = frozenset({VmState.ACTIVE, VmState.PAUSED, VmState.STOPPED})
"""Where a NIC may be plugged in or taken out (Nova's attach_interface and detach_interface)."""

ACTION_OF_TASK: Final[dict[TaskState, Action]] = {
    TaskState.SCHEDULING: Action.CREATE,
    TaskState.SPAWNING: Action.CREATE,
    TaskState.DELETING: Action.DELETE,
    **{task: action for action, (_, task) in POWER_ACTIONS.items()},
    **dict.fromkeys(RESIZE_STEPS, Action.RESIZE),
    TaskState.RESIZE_CONFIRMING: Action.CONFIRM_RESIZE,
    TaskState.RESIZE_REVERTING: Action.REVERT_RESIZE,
    TaskState.REBUILD_SPAWNING: Action.EVACUATE,
    TaskState.RESOURCES_CLAIMING: Action.SET_RESOURCES,
    TaskState.RESOURCES_CHANGING: Action.SET_RESOURCES,
    TaskState.MIGRATING: Action.LIVE_MIGRATION,
    **dict.fromkeys(SHELVE_UPLOAD_STEPS, Action.SHELVE),
    TaskState.SHELVING_OFFLOADING: Action.SHELVE_OFFLOAD,
    TaskState.UNSHELVING: Action.UNSHELVE,
}
"""The action each task_state belongs to (an evacuate's first step is ``rebuilding`` too: the
conductor tells it from a rebuild's by the instance's ``evacuate_from``; an unshelve's powering-on
of a SHELVED instance and spawning of an offloaded one are told by their vm_state)."""

STATUS: Final[dict[VmState, Status]] = {
    VmState.BUILDING: "BUILD",
    VmState.ACTIVE: "ACTIVE",
    VmState.STOPPED: "SHUTOFF",
    VmState.PAUSED: "PAUSED",
    VmState.SUSPENDED: "SUSPENDED",
    VmState.ERROR: "ERROR",
    VmState.DELETED: "DELETED",
    VmState.RESIZED: "VERIFY_RESIZE",
    VmState.SHELVED: "SHELVED",
    VmState.SHELVED_OFFLOADED: "SHELVED_OFFLOADED",
}
"""The status Nova shows for each vm_state..."""
TASK_STATUS: Final[dict[TaskState, Status]] = {
    TaskState.REBOOTING: "REBOOT",
    TaskState.REBOOTING_HARD: "HARD_REBOOT",
    TaskState.REBUILDING: "REBUILD",
    TaskState.REBUILD_SPAWNING: "REBUILD",
    TaskState.MIGRATING: "MIGRATING",
}
"""... but for an active instance in these tasks, ..."""
REBUILD_TASKS: Final = frozenset({TaskState.REBUILDING, TaskState.REBUILD_SPAWNING})
"""The tasks of a rebuild or an evacuate: REBUILD from active, stopped or error (Nova's map)."""


def status_of(vm_state: VmState, task_state: TaskState | None) -> Status:
    """Nova's status of an instance in these states."""
    if vm_state is VmState.ACTIVE and task_state in TASK_STATUS:
        return TASK_STATUS[task_state]
    if vm_state in (VmState.STOPPED, VmState.ERROR) and task_state in REBUILD_TASKS:
        return "REBUILD"  # ... a stopped or failed one rebuilt (or evacuated), ...
    if vm_state in RESIZE_FROM and task_state in RESIZE_STEPS:
        return "RESIZE"  # ... an active or stopped one resizing, ...
    if vm_state is VmState.RESIZED and task_state is TaskState.RESIZE_REVERTING:
        return "REVERT_RESIZE"  # ... and a resized one reverting
    return STATUS.get(vm_state, "UNKNOWN")


def transition(vm_state: VmState, task_state: TaskState | None, trigger: Trigger) -> Change | None:
    """The states ``trigger`` takes an instance in ``vm_state``/``task_state`` to; None when it is
    refused (an action) or changes nothing (a report). A deleted instance changes no more."""
    if vm_state is VmState.DELETED:
        return None
    if isinstance(trigger, Action):
        return _action(vm_state, task_state, trigger)
    if isinstance(trigger, Lifecycle):
        return _lifecycle(vm_state, task_state, trigger)
    return _report(vm_state, task_state, trigger)


def _action(vm_state: VmState, task_state: TaskState | None, action: Action) -> Change | None:
    if action is Action.DELETE:
        return Change(vm_state, TaskState.DELETING)
    if action in (Action.DETACH_VOLUME, Action.LOCK, Action.UNLOCK):
        return Change(vm_state, task_state)
    if task_state is not None:
        return None
    if action is Action.ATTACH_VOLUME:
        return Change(vm_state, None) if vm_state in VOLUME_STATES | {VmState.SHELVED_OFFLOADED} else None
    if action in (Action.ATTACH_INTERFACE, Action.DETACH_INTERFACE):
        return Change(vm_state, None) if vm_state in INTERFACE_STATES else None
    if action is Action.TRIGGER_CRASH_DUMP:
        return Change(vm_state, None) if vm_state in CRASH_DUMP_FROM else None
    if action in (Action.RESIZE, Action.MIGRATE):
        return Change(vm_state, TaskState.RESIZE_PREP) if vm_state in RESIZE_FROM else None
    if action is Action.LIVE_MIGRATION:
        return Change(vm_state, TaskState.MIGRATING) if vm_state in LIVE_MIGRATION_FROM else None
    if action is Action.EVACUATE:
        return Change(vm_state, TaskState.REBUILDING) if vm_state in EVACUATE_FROM else None
    if action is Action.SET_RESOURCES:
        return Change(vm_state, TaskState.RESOURCES_CLAIMING) if vm_state in RESOURCES_FROM else None
    if action is Action.SHELVE:
        return Change(vm_state, TaskState.SHELVING) if vm_state in SHELVE_FROM else None
    if action is Action.SHELVE_OFFLOAD:
        return Change(vm_state, TaskState.SHELVING_OFFLOADING) if vm_state is VmState.SHELVED else None
    if action is Action.UNSHELVE:
        if vm_state is VmState.SHELVED:
            return Change(vm_state, TaskState.POWERING_ON)
        return Change(vm_state, TaskState.UNSHELVING) if vm_state is VmState.SHELVED_OFFLOADED else None
    if action in (Action.CONFIRM_RESIZE, Action.REVERT_RESIZE):
        if vm_state is not VmState.RESIZED:
            return None
        confirm = action is Action.CONFIRM_RESIZE
        return Change(vm_state, TaskState.RESIZE_CONFIRMING if confirm else TaskState.RESIZE_REVERTING)
    if action in POWER_ACTIONS:
        allowed, task = POWER_ACTIONS[action]
        return Change(vm_state, task) if vm_state in allowed else None
    return None  # create: a new instance is CREATED, from no state


def _lifecycle(vm_state: VmState, task_state: TaskState | None, event: Lifecycle) -> Change | None:
    deleting = task_state is TaskState.DELETING
    if not deleting and (task_state in SHELVE_TASKS or vm_state in SHELVED_STATES):
        return _shelved_lifecycle(vm_state, task_state, event)
    if (task_state in RESIZE_TASKS or vm_state is VmState.RESIZED) and not deleting:
        if event in (Lifecycle.STARTED, Lifecycle.RESUMED):
            return Change(vm_state, task_state, PowerState.RUNNING)
        if event is Lifecycle.STOPPED:
            return Change(vm_state, task_state, PowerState.SHUTDOWN)
        if event is Lifecycle.SUSPENDED:  # paused behind the resize's back
            return Change(VmState.PAUSED, None, PowerState.PAUSED)
    if event in (Lifecycle.STARTED, Lifecycle.RESUMED):
        changing = task_state in LIVE_RESOURCE_TASKS and vm_state is not VmState.BUILDING
        if deleting or changing:  # a restarted node started its domain again: the change goes on
            return Change(vm_state, task_state, PowerState.RUNNING)
        return Change(VmState.ACTIVE, None, PowerState.RUNNING, launched=vm_state is VmState.BUILDING)
    if event is Lifecycle.STOPPED:
        # a reboot's, a rebuild's or a build's stop is one step of the task; a delete's is no news
        if vm_state is VmState.BUILDING or task_state in (
            TaskState.DELETING,
            TaskState.REBOOTING,
            TaskState.REBOOTING_HARD,
            TaskState.REBUILDING,
            TaskState.REBUILD_SPAWNING,
        ):
            return Change(vm_state, task_state, PowerState.SHUTDOWN)
        if task_state is TaskState.SUSPENDING:
            return Change(VmState.SUSPENDED, None, PowerState.SHUTDOWN)
        return Change(VmState.STOPPED, None, PowerState.SHUTDOWN)
    if event is Lifecycle.SUSPENDED:
        # a managed save pauses the guest while QEMU writes it out: its STOPPED ends the suspend
        # (a build's rules come first, as for STOPPED)
        suspend_step = task_state is TaskState.SUSPENDING and vm_state is not VmState.BUILDING
        return None if deleting or suspend_step else Change(VmState.PAUSED, None, PowerState.PAUSED)
    if event is Lifecycle.CRASHED:
        if deleting:
            return Change(vm_state, task_state, PowerState.CRASHED)
        return Change(VmState.ERROR, None, PowerState.CRASHED)
    if event is Lifecycle.UNDEFINED and deleting:
        return Change(VmState.DELETED, None, PowerState.NOSTATE)
    return None  # DEFINED, SHUTDOWN (STOPPED follows), PMSUSPENDED; UNDEFINED outside a delete


def _shelved_lifecycle(vm_state: VmState, task_state: TaskState | None, event: Lifecycle) -> Change | None:
    """libvirt's word while a shelve runs and while shelved: only the power state changes, but
    a shelved domain that starts (an unshelve's, or anyone's) is ACTIVE again, one that crashes
    ERROR."""
    power = _EVENT_POWER.get(event)
    if power is None:
        return None  # DEFINED, UNDEFINED, SHUTDOWN, PMSUSPENDED
    if task_state in SHELVE_TASKS:
        return Change(vm_state, task_state, power)
    if event in (Lifecycle.STARTED, Lifecycle.RESUMED):
        return Change(VmState.ACTIVE, None, PowerState.RUNNING)
    if event is Lifecycle.CRASHED:
        return Change(VmState.ERROR, None, PowerState.CRASHED)
    return Change(vm_state, task_state, power)


_EVENT_POWER: Final = {
    Lifecycle.STARTED: PowerState.RUNNING,
    Lifecycle.RESUMED: PowerState.RUNNING,
    Lifecycle.STOPPED: PowerState.SHUTDOWN,
    Lifecycle.SUSPENDED: PowerState.PAUSED,
    Lifecycle.CRASHED: PowerState.CRASHED,
}


def _shelve_report(vm_state: VmState, task_state: TaskState | None, report: Report) -> Change | None:
    """What a report does to an instance being shelved, shelved, or being unshelved."""
    offloaded = vm_state is VmState.SHELVED_OFFLOADED
    match report:
        case Report.RUNNING | Report.NOT_RUNNING if task_state in SHELVE_TASKS:
            running = report is Report.RUNNING
            return Change(vm_state, task_state, PowerState.RUNNING if running else PowerState.SHUTDOWN)
        case Report.RUNNING:
            return Change(VmState.ACTIVE, None, PowerState.RUNNING)  # unshelved (or started by anyone)
        case Report.NOT_RUNNING if vm_state is VmState.SHELVED:
            return Change(vm_state, None, PowerState.SHUTDOWN)  # an unshelve's start that did not start it
        case Report.TASK_ABANDONED if task_state is not None and ACTION_OF_TASK[task_state] in POWER_ACTIONS:
            return Change(vm_state, None)
        case Report.SHELVE_POWERED_OFF if task_state is TaskState.SHELVING:
            return Change(vm_state, TaskState.SHELVING_IMAGE_PENDING_UPLOAD, PowerState.SHUTDOWN)
        case Report.SHELVE_UPLOADING if task_state is TaskState.SHELVING_IMAGE_PENDING_UPLOAD:
            return Change(vm_state, TaskState.SHELVING_IMAGE_UPLOADING)
        case Report.SHELVE_DONE if task_state in (TaskState.SHELVING, TaskState.SHELVING_IMAGE_UPLOADING):
            return Change(VmState.SHELVED, None, PowerState.SHUTDOWN)
        case Report.TASK_ABANDONED if task_state is TaskState.SHELVING:
            return Change(vm_state, None)  # its node never took it, and is down: as it was
        case Report.SHELVE_FAILED if task_state in SHELVE_UPLOAD_STEPS:
            return Change(VmState.ERROR, None)
        case Report.OFFLOADED if task_state is TaskState.SHELVING_OFFLOADING:
            return Change(VmState.SHELVED_OFFLOADED, None, PowerState.NOSTATE)
        case Report.UNSHELVE_CLAIMED if offloaded and task_state is TaskState.UNSHELVING:
            return Change(vm_state, TaskState.SPAWNING)
        case Report.UNSHELVE_FAILED if offloaded and task_state in (TaskState.UNSHELVING, TaskState.SPAWNING):
            return Change(vm_state, None, PowerState.NOSTATE)
    return None


def _report(vm_state: VmState, task_state: TaskState | None, report: Report) -> Change | None:
    deleting = task_state is TaskState.DELETING
    if not deleting and (task_state in SHELVE_TASKS or vm_state in SHELVED_STATES):
        return _shelve_report(vm_state, task_state, report)
    building = vm_state is VmState.BUILDING
    resizing = task_state in RESIZE_STEPS or (vm_state is VmState.RESIZED and task_state is None)
    resizing = resizing or task_state in LIVE_RESOURCE_TASKS  # a power state seen: the change goes on
    match report:
        case Report.RUNNING if task_state is TaskState.RESIZE_FINISH:
            return Change(VmState.RESIZED, None, PowerState.RUNNING)
        case Report.NOT_RUNNING if task_state is TaskState.RESIZE_FINISH:
            return Change(VmState.RESIZED, None, PowerState.SHUTDOWN)
        case Report.RUNNING if resizing:
            return Change(vm_state, task_state, PowerState.RUNNING)
        case Report.NOT_RUNNING if resizing:
            return Change(vm_state, task_state, PowerState.SHUTDOWN)
        case Report.RESIZE_CLAIMED if task_state is TaskState.RESIZE_PREP:
            return Change(vm_state, TaskState.RESIZE_MIGRATING)
        case Report.TASK_DONE if task_state is TaskState.RESIZE_MIGRATING:
            return Change(vm_state, TaskState.RESIZE_MIGRATED)
        case Report.RESIZE_FINISHING if task_state is TaskState.RESIZE_MIGRATED:
            return Change(vm_state, TaskState.RESIZE_FINISH)
        case Report.RESIZE_FAILED if task_state is TaskState.RESIZE_PREP:
            return Change(vm_state, None)
        case Report.RESIZE_FAILED if task_state in RESIZE_TASKS:
            return Change(VmState.ERROR, None)
        case Report.EVACUATE_CLAIMED if task_state is TaskState.REBUILDING:
            return Change(vm_state, TaskState.REBUILD_SPAWNING)
        case Report.EVACUATE_FAILED if task_state is TaskState.REBUILDING:
            return Change(vm_state, None)
        case Report.EVACUATE_FAILED if task_state is TaskState.REBUILD_SPAWNING:
            return Change(VmState.ERROR, None)
        case Report.RESOURCES_CLAIMED if task_state is TaskState.RESOURCES_CLAIMING:
            return Change(vm_state, TaskState.RESOURCES_CHANGING)
        case Report.TASK_DONE if task_state is TaskState.RESOURCES_CHANGING:
            return Change(vm_state, None)
        case Report.RESOURCES_FAILED if task_state is TaskState.RESOURCES_CLAIMING:
            return Change(vm_state, None)
        case Report.RESOURCES_REFUSED if task_state is TaskState.RESOURCES_CHANGING:
            return Change(vm_state, None)
        case Report.RESOURCES_FAILED if task_state is TaskState.RESOURCES_CHANGING:
            return Change(VmState.ERROR, None)
        case Report.LIVE_STEP if task_state is TaskState.MIGRATING:
            return Change(vm_state, TaskState.MIGRATING)
        case Report.LIVE_ENDED if task_state is TaskState.MIGRATING:
            return Change(vm_state, None)
        case Report.LIVE_FAILED if task_state is TaskState.MIGRATING:
            return Change(VmState.ERROR, None)
        case Report.SCHEDULED if building and task_state is TaskState.SCHEDULING:
            return Change(VmState.BUILDING, TaskState.SPAWNING)
        case Report.RESCHEDULED if building and task_state is TaskState.SPAWNING:
            return Change(VmState.BUILDING, TaskState.SCHEDULING)
        case Report.BUILD_FAILED if building and task_state in (TaskState.SCHEDULING, TaskState.SPAWNING):
            return Change(VmState.ERROR, None)
        case Report.RUNNING if not deleting:
            return Change(VmState.ACTIVE, None, PowerState.RUNNING, launched=building)
        case Report.NOT_RUNNING if not deleting:
            return Change(VmState.STOPPED, None, PowerState.SHUTDOWN)
        case Report.TASK_DONE if task_state in (
            TaskState.REBOOTING,
            TaskState.REBUILDING,
            TaskState.IMAGE_SNAPSHOT,
        ):
            return Change(vm_state, None)
        case Report.TASK_ABANDONED if task_state is not None and ACTION_OF_TASK[task_state] in POWER_ACTIONS:
            return Change(vm_state, None)
        case Report.DOMAIN_GONE | Report.DELETED_HERE if deleting:
            return Change(VmState.DELETED, None, PowerState.NOSTATE)
    return None
