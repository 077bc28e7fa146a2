"""The conductor's state machine, as a table: every trigger from every state, allowed or refused.

``actors.conductor.states.transition`` decides every change of an instance's vm_state and
task_state. The tables below say, independently of its code, what it must answer: for each
action and (vm_state, task_state), for each libvirt lifecycle event and (vm_state, task_state),
and for each of the conductor's other reports. Every combination is a case of its own.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest

from actors.conductor.core import NODE_TASKS
from actors.conductor.states import (
    ACTION_OF_TASK,
    CREATED,
    Action,
    Change,
    Report,
    Trigger,
    status_of,
    transition,
)
from runtime.states import Lifecycle, PowerState, TaskState, VmState

V, T, P = VmState, TaskState, PowerState
STATES = list(itertools.product(VmState, [None, *TaskState]))


class Same:
    """In an expected change: the state the instance was in."""


SAME = Same()


class Expected(NamedTuple):
    vm_state: VmState | Same
    task_state: TaskState | Same | None
    power_state: PowerState | None = None
    launched: bool = False


# -- actions ---------------------------------------------------------------------------------

ACTIONS_FROM_IDLE: dict[tuple[Action, VmState], TaskState | None] = {
    # (action, vm_state it may start from, with no task running): the task it runs under
    (Action.STOP, V.ACTIVE): T.POWERING_OFF,
    (Action.STOP, V.PAUSED): T.POWERING_OFF,
    (Action.STOP, V.SUSPENDED): T.POWERING_OFF,
    (Action.STOP, V.ERROR): T.POWERING_OFF,
    (Action.START, V.STOPPED): T.POWERING_ON,
    (Action.REBOOT, V.ACTIVE): T.REBOOTING,
    (Action.REBOOT_HARD, V.ACTIVE): T.REBOOTING_HARD,
    (Action.REBOOT_HARD, V.STOPPED): T.REBOOTING_HARD,
    (Action.REBOOT_HARD, V.PAUSED): T.REBOOTING_HARD,
    (Action.REBOOT_HARD, V.SUSPENDED): T.REBOOTING_HARD,
    (Action.REBOOT_HARD, V.ERROR): T.REBOOTING_HARD,
    (Action.PAUSE, V.ACTIVE): T.PAUSING,
    (Action.UNPAUSE, V.PAUSED): T.UNPAUSING,
    (Action.SUSPEND, V.ACTIVE): T.SUSPENDING,
    (Action.RESUME, V.SUSPENDED): T.RESUMING,
    (Action.REBUILD, V.ACTIVE): T.REBUILDING,
    (Action.REBUILD, V.STOPPED): T.REBUILDING,
    (Action.REBUILD, V.ERROR): T.REBUILDING,
    (Action.CREATE_IMAGE, V.ACTIVE): T.IMAGE_SNAPSHOT,
    (Action.CREATE_IMAGE, V.STOPPED): T.IMAGE_SNAPSHOT,
    (Action.CREATE_IMAGE, V.PAUSED): T.IMAGE_SNAPSHOT,
    (Action.CREATE_IMAGE, V.SUSPENDED): T.IMAGE_SNAPSHOT,
    (Action.ATTACH_VOLUME, V.ACTIVE): None,
    (Action.ATTACH_VOLUME, V.STOPPED): None,
    (Action.ATTACH_INTERFACE, V.ACTIVE): None,
    (Action.ATTACH_INTERFACE, V.PAUSED): None,
    (Action.ATTACH_INTERFACE, V.STOPPED): None,
    (Action.DETACH_INTERFACE, V.ACTIVE): None,
    (Action.DETACH_INTERFACE, V.PAUSED): None,
    (Action.DETACH_INTERFACE, V.STOPPED): None,
    (Action.ATTACH_VOLUME, V.SHELVED_OFFLOADED): None,  # from 2.20 (the gateway's gate): no node
    (Action.ATTACH_VOLUME, V.SHELVED): None,  # from 2.20: into the shut-off domain on its host
    (Action.RESIZE, V.ACTIVE): T.RESIZE_PREP,
    (Action.RESIZE, V.STOPPED): T.RESIZE_PREP,
    (Action.MIGRATE, V.ACTIVE): T.RESIZE_PREP,  # a cold migration: a resize to its own flavor elsewhere
    (Action.MIGRATE, V.STOPPED): T.RESIZE_PREP,
    (Action.LIVE_MIGRATION, V.ACTIVE): T.MIGRATING,
    (Action.LIVE_MIGRATION, V.PAUSED): T.MIGRATING,  # a real guest, paused on its destination (Nova's)
    (Action.CONFIRM_RESIZE, V.RESIZED): T.RESIZE_CONFIRMING,
    (Action.REVERT_RESIZE, V.RESIZED): T.RESIZE_REVERTING,
    (Action.EVACUATE, V.ACTIVE): T.REBUILDING,
    (Action.EVACUATE, V.STOPPED): T.REBUILDING,
    (Action.EVACUATE, V.ERROR): T.REBUILDING,
    (Action.SET_RESOURCES, V.ACTIVE): T.RESOURCES_CLAIMING,
    (Action.TRIGGER_CRASH_DUMP, V.ACTIVE): None,
    (Action.TRIGGER_CRASH_DUMP, V.PAUSED): None,
    (Action.TRIGGER_CRASH_DUMP, V.RESIZED): None,
    (Action.TRIGGER_CRASH_DUMP, V.ERROR): None,
    (Action.SHELVE, V.ACTIVE): T.SHELVING,
    (Action.SHELVE, V.STOPPED): T.SHELVING,
    (Action.SHELVE, V.PAUSED): T.SHELVING,
    (Action.SHELVE, V.SUSPENDED): T.SHELVING,
    (Action.SHELVE_OFFLOAD, V.SHELVED): T.SHELVING_OFFLOADING,
    (Action.UNSHELVE, V.SHELVED): T.POWERING_ON,  # its domain is still there: started again
    (Action.UNSHELVE, V.SHELVED_OFFLOADED): T.UNSHELVING,  # a host is claimed first
}
ACTIONS_FROM_ANY: dict[Action, TaskState | Same] = {
    # actions that start from any live state, whatever its task: the task they lead to
    Action.DELETE: T.DELETING,
    Action.DETACH_VOLUME: SAME,
    Action.LOCK: SAME,
    Action.UNLOCK: SAME,
}
# create starts from no state (a new instance is CREATED); every other combination is refused


def expected_for_action(action: Action, vm_state: VmState, task_state: TaskState | None) -> Expected | None:
    if vm_state is V.DELETED:
        return None
    if action in ACTIONS_FROM_ANY:
        return Expected(SAME, ACTIONS_FROM_ANY[action])
    if task_state is None and (action, vm_state) in ACTIONS_FROM_IDLE:
        return Expected(SAME, ACTIONS_FROM_IDLE[action, vm_state])
    return None


# -- libvirt's lifecycle events --------------------------------------------------------------


def case_of(vm_state: VmState, task_state: TaskState | None) -> str:
    """The kinds of state a lifecycle event tells apart."""
    if task_state is T.DELETING:
        return "deleting"
    if task_state in SHELVE_TASKS:
        return "shelving"
    if vm_state in (V.SHELVED, V.SHELVED_OFFLOADED):
        return "shelved"
    if task_state in RESIZE_TASKS or vm_state is V.RESIZED:
        return "resizing"
    if vm_state is V.BUILDING:
        return "building"
    if task_state in LIVE_RESOURCE_TASKS:
        return "changing"
    if task_state in (T.REBOOTING, T.REBOOTING_HARD, T.REBUILDING, T.REBUILD_SPAWNING):
        return "rebooting"
    if task_state is T.SUSPENDING:
        return "suspending"
    return "other"


RUNS = Expected(V.ACTIVE, None, P.RUNNING)
RESIZE_STEPS = (T.RESIZE_PREP, T.RESIZE_MIGRATING, T.RESIZE_MIGRATED, T.RESIZE_FINISH)
RESIZE_TASKS = (*RESIZE_STEPS, T.RESIZE_REVERTING, T.RESIZE_CONFIRMING)
LIVE_RESOURCE_TASKS = (T.RESOURCES_CLAIMING, T.RESOURCES_CHANGING)
SHELVE_TASKS = (
    T.SHELVING,
    T.SHELVING_IMAGE_PENDING_UPLOAD,
    T.SHELVING_IMAGE_UPLOADING,
    T.SHELVING_OFFLOADING,
)
CASES_OF_STATE = (
    "deleting",
    "shelving",
    "shelved",
    "resizing",
    "changing",
    "building",
    "rebooting",
    "suspending",
    "other",
)
LIFECYCLE: dict[Lifecycle, dict[str, Expected | None]] = {
    #                 an event in each case of state leads to (None: changes nothing)
    Lifecycle.STARTED: {
        "deleting": Expected(SAME, SAME, P.RUNNING),
        "shelving": Expected(SAME, SAME, P.RUNNING),
        "shelved": RUNS,  # unshelved, or started by anyone
        "resizing": Expected(SAME, SAME, P.RUNNING),  # a step of the resize
        "changing": Expected(SAME, SAME, P.RUNNING),  # a restarted node started it again: the change goes on
        "building": Expected(V.ACTIVE, None, P.RUNNING, launched=True),
        "rebooting": RUNS,
        "suspending": RUNS,
        "other": RUNS,
    },
    Lifecycle.RESUMED: {
        "deleting": Expected(SAME, SAME, P.RUNNING),
        "shelving": Expected(SAME, SAME, P.RUNNING),
        "shelved": RUNS,
        "resizing": Expected(SAME, SAME, P.RUNNING),
        "changing": Expected(SAME, SAME, P.RUNNING),
        "building": Expected(V.ACTIVE, None, P.RUNNING, launched=True),
        "rebooting": RUNS,
        "suspending": RUNS,
        "other": RUNS,
    },
    Lifecycle.STOPPED: {
        "deleting": Expected(SAME, SAME, P.SHUTDOWN),
        "shelving": Expected(SAME, SAME, P.SHUTDOWN),  # a shelve's power-off
        "shelved": Expected(SAME, SAME, P.SHUTDOWN),
        "resizing": Expected(SAME, SAME, P.SHUTDOWN),
        "changing": Expected(V.STOPPED, None, P.SHUTDOWN),  # the guest stopped: the change ends
        "building": Expected(SAME, SAME, P.SHUTDOWN),
        "rebooting": Expected(SAME, SAME, P.SHUTDOWN),
        "suspending": Expected(V.SUSPENDED, None, P.SHUTDOWN),
        "other": Expected(V.STOPPED, None, P.SHUTDOWN),
    },
    Lifecycle.SUSPENDED: {
        "deleting": None,
        "shelving": Expected(SAME, SAME, P.PAUSED),
        "shelved": Expected(SAME, SAME, P.PAUSED),
        "resizing": Expected(V.PAUSED, None, P.PAUSED),
        "changing": Expected(V.PAUSED, None, P.PAUSED),
        "building": Expected(V.PAUSED, None, P.PAUSED),
        "rebooting": Expected(V.PAUSED, None, P.PAUSED),
        "suspending": None,  # QEMU pauses a guest while its managed save writes it out: STOPPED follows
        "other": Expected(V.PAUSED, None, P.PAUSED),
    },
    Lifecycle.CRASHED: {
        "deleting": Expected(SAME, SAME, P.CRASHED),
        "shelving": Expected(SAME, SAME, P.CRASHED),
        "shelved": Expected(V.ERROR, None, P.CRASHED),
        "resizing": Expected(V.ERROR, None, P.CRASHED),
        "changing": Expected(V.ERROR, None, P.CRASHED),
        "building": Expected(V.ERROR, None, P.CRASHED),
        "rebooting": Expected(V.ERROR, None, P.CRASHED),
        "suspending": Expected(V.ERROR, None, P.CRASHED),
        "other": Expected(V.ERROR, None, P.CRASHED),
    },
    Lifecycle.UNDEFINED: {
        "deleting": Expected(V.DELETED, None, P.NOSTATE),
        "shelving": None,  # an offload's
        "shelved": None,
        "resizing": None,
        "changing": None,
        "building": None,
        "rebooting": None,
        "suspending": None,
        "other": None,
    },
    Lifecycle.DEFINED: dict.fromkeys(CASES_OF_STATE),
    Lifecycle.SHUTDOWN: dict.fromkeys(CASES_OF_STATE),
    Lifecycle.PMSUSPENDED: dict.fromkeys(CASES_OF_STATE),
}


def expected_for_event(event: Lifecycle, vm_state: VmState, task_state: TaskState | None) -> Expected | None:
    if vm_state is V.DELETED:
        return None
    return LIFECYCLE[event][case_of(vm_state, task_state)]


# -- the conductor's other reports -----------------------------------------------------------

POWER_TASKS = (
    T.POWERING_OFF, T.POWERING_ON, T.REBOOTING, T.REBOOTING_HARD, T.PAUSING, T.UNPAUSING, T.SUSPENDING,
    T.RESUMING, T.REBUILDING, T.IMAGE_SNAPSHOT,
)  # fmt: skip
REPORTS_FROM: dict[Report, dict[tuple[VmState | None, TaskState | None], Expected]] = {
    # report: {(vm_state or None: any live one, task_state): what it leads to}; anything else: refused
    Report.SCHEDULED: {(V.BUILDING, T.SCHEDULING): Expected(V.BUILDING, T.SPAWNING)},
    Report.RESCHEDULED: {(V.BUILDING, T.SPAWNING): Expected(V.BUILDING, T.SCHEDULING)},
    Report.BUILD_FAILED: {
        (V.BUILDING, T.SCHEDULING): Expected(V.ERROR, None),
        (V.BUILDING, T.SPAWNING): Expected(V.ERROR, None),
    },
    Report.RUNNING: {
        **{
            (None, task): Expected(V.ACTIVE, None, P.RUNNING)
            for task in [None, *TaskState]
            if task is not T.DELETING
        },
        **{(None, task): Expected(SAME, SAME, P.RUNNING) for task in (*RESIZE_STEPS, *LIVE_RESOURCE_TASKS)},
        (V.RESIZED, None): Expected(SAME, SAME, P.RUNNING),  # a resize waiting: only the power state
        (None, T.RESIZE_FINISH): Expected(V.RESIZED, None, P.RUNNING),  # the node's last step
    },
    Report.NOT_RUNNING: {
        **{
            (None, task): Expected(V.STOPPED, None, P.SHUTDOWN)
            for task in [None, *TaskState]
            if task is not T.DELETING
        },
        **{(None, task): Expected(SAME, SAME, P.SHUTDOWN) for task in (*RESIZE_STEPS, *LIVE_RESOURCE_TASKS)},
        (V.RESIZED, None): Expected(SAME, SAME, P.SHUTDOWN),
        (None, T.RESIZE_FINISH): Expected(V.RESIZED, None, P.SHUTDOWN),
    },
    Report.TASK_DONE: {
        (None, T.RESIZE_MIGRATING): Expected(SAME, T.RESIZE_MIGRATED),
        (None, T.REBOOTING): Expected(SAME, None),
        (None, T.REBUILDING): Expected(SAME, None),  # a stopped instance's rebuild ends stopped
        (None, T.IMAGE_SNAPSHOT): Expected(SAME, None),
        (None, T.RESOURCES_CHANGING): Expected(SAME, None),  # the node changed the running domain
    },
    Report.TASK_ABANDONED: {(None, task): Expected(SAME, None) for task in POWER_TASKS},
    Report.DOMAIN_GONE: {(None, T.DELETING): Expected(V.DELETED, None, P.NOSTATE)},
    Report.DELETED_HERE: {(None, T.DELETING): Expected(V.DELETED, None, P.NOSTATE)},
    Report.RESIZE_CLAIMED: {(None, T.RESIZE_PREP): Expected(SAME, T.RESIZE_MIGRATING)},
    Report.RESIZE_FINISHING: {(None, T.RESIZE_MIGRATED): Expected(SAME, T.RESIZE_FINISH)},
    Report.EVACUATE_CLAIMED: {(None, T.REBUILDING): Expected(SAME, T.REBUILD_SPAWNING)},
    Report.EVACUATE_FAILED: {
        (None, T.REBUILDING): Expected(SAME, None),  # no destination: nothing moved, back where it was
        (None, T.REBUILD_SPAWNING): Expected(V.ERROR, None),  # the destination's step failed
    },
    Report.RESOURCES_CLAIMED: {(None, T.RESOURCES_CLAIMING): Expected(SAME, T.RESOURCES_CHANGING)},
    Report.RESOURCES_FAILED: {
        (None, T.RESOURCES_CLAIMING): Expected(SAME, None),  # no node touched it: back where it was
        (None, T.RESOURCES_CHANGING): Expected(V.ERROR, None),  # its node will not finish
    },
    Report.RESOURCES_REFUSED: {(None, T.RESOURCES_CHANGING): Expected(SAME, None)},  # the old size back
    Report.RESIZE_FAILED: {
        **{(None, task): Expected(V.ERROR, None) for task in RESIZE_TASKS},
        (None, T.RESIZE_PREP): Expected(SAME, None),  # no node touched it: back where it was
    },
    Report.LIVE_STEP: {(None, T.MIGRATING): Expected(SAME, T.MIGRATING)},  # migrating throughout
    Report.LIVE_ENDED: {(None, T.MIGRATING): Expected(SAME, None)},  # cancelled, or nothing moved
    Report.LIVE_FAILED: {(None, T.MIGRATING): Expected(V.ERROR, None)},  # a rollback that cannot finish
}


SHELVE_UPLOAD_STEPS = (T.SHELVING, T.SHELVING_IMAGE_PENDING_UPLOAD, T.SHELVING_IMAGE_UPLOADING)
SHELVE_REPORTS_FROM: dict[Report, dict[tuple[VmState | None, TaskState | None], Expected]] = {
    # while a shelve (or offload) runs, or while shelved: {(vm_state or None, task_state): change}
    Report.RUNNING: {
        **{(None, task): Expected(SAME, SAME, P.RUNNING) for task in SHELVE_TASKS},
        **{
            (vm_state, task): Expected(V.ACTIVE, None, P.RUNNING)
            for vm_state in (V.SHELVED, V.SHELVED_OFFLOADED)
            for task in [None, *TaskState]
            if task not in SHELVE_TASKS
        },
    },
    Report.NOT_RUNNING: {
        **{(None, task): Expected(SAME, SAME, P.SHUTDOWN) for task in SHELVE_TASKS},
        **{
            (V.SHELVED, task): Expected(SAME, None, P.SHUTDOWN)  # an unshelve's start that did not start it
            for task in [None, *TaskState]
            if task not in SHELVE_TASKS
        },
    },
    Report.TASK_ABANDONED: {
        (None, T.SHELVING): Expected(SAME, None),  # its node never took it and is down: as it was
        **{
            (vm_state, task): Expected(SAME, None)
            for vm_state in (V.SHELVED, V.SHELVED_OFFLOADED)
            for task in POWER_TASKS
        },
    },
    Report.SHELVE_POWERED_OFF: {
        (None, T.SHELVING): Expected(SAME, T.SHELVING_IMAGE_PENDING_UPLOAD, P.SHUTDOWN)
    },
    Report.SHELVE_UPLOADING: {
        (None, T.SHELVING_IMAGE_PENDING_UPLOAD): Expected(SAME, T.SHELVING_IMAGE_UPLOADING)
    },
    Report.SHELVE_DONE: {
        (None, T.SHELVING): Expected(V.SHELVED, None, P.SHUTDOWN),  # volume-backed: no upload
        (None, T.SHELVING_IMAGE_UPLOADING): Expected(V.SHELVED, None, P.SHUTDOWN),
    },
    Report.SHELVE_FAILED: {(None, task): Expected(V.ERROR, None) for task in SHELVE_UPLOAD_STEPS},
    Report.OFFLOADED: {(None, T.SHELVING_OFFLOADING): Expected(V.SHELVED_OFFLOADED, None, P.NOSTATE)},
    Report.UNSHELVE_CLAIMED: {(V.SHELVED_OFFLOADED, T.UNSHELVING): Expected(SAME, T.SPAWNING)},
    Report.UNSHELVE_FAILED: {
        (V.SHELVED_OFFLOADED, T.UNSHELVING): Expected(SAME, None, P.NOSTATE),
        (V.SHELVED_OFFLOADED, T.SPAWNING): Expected(SAME, None, P.NOSTATE),
    },
}


def expected_for_report(report: Report, vm_state: VmState, task_state: TaskState | None) -> Expected | None:
    if vm_state is V.DELETED:
        return None
    if task_state is not T.DELETING and (
        task_state in SHELVE_TASKS or vm_state in (V.SHELVED, V.SHELVED_OFFLOADED)
    ):
        shelve_table = SHELVE_REPORTS_FROM.get(report, {})
        return shelve_table.get((vm_state, task_state)) or shelve_table.get((None, task_state))
    table = REPORTS_FROM.get(report, {})
    expected = table.get((vm_state, task_state)) or table.get((None, task_state))
    if (
        expected is not None
        and report is Report.RUNNING
        and vm_state is V.BUILDING
        and expected.vm_state is V.ACTIVE
    ):
        return expected._replace(launched=True)  # a build found running: its first start
    return expected


# -- the cases -------------------------------------------------------------------------------


def resolved(expected: Expected | None, vm_state: VmState, task_state: TaskState | None) -> Change | None:
    if expected is None:
        return None
    return Change(
        vm_state if isinstance(expected.vm_state, Same) else expected.vm_state,
        task_state if isinstance(expected.task_state, Same) else expected.task_state,
        expected.power_state,
        expected.launched,
    )


def cases() -> list[tuple[Trigger, VmState, TaskState | None, Change | None]]:
    found: list[tuple[Trigger, VmState, TaskState | None, Change | None]] = []
    for vm_state, task_state in STATES:
        for action in Action:
            expected = expected_for_action(action, vm_state, task_state)
            found.append((action, vm_state, task_state, resolved(expected, vm_state, task_state)))
        for event in Lifecycle:
            expected = expected_for_event(event, vm_state, task_state)
            found.append((event, vm_state, task_state, resolved(expected, vm_state, task_state)))
        for report in Report:
            expected = expected_for_report(report, vm_state, task_state)
            found.append((report, vm_state, task_state, resolved(expected, vm_state, task_state)))
    return found


def case_id(trigger: Trigger, vm_state: VmState, task_state: TaskState | None, change: Change | None) -> str:
    name = trigger.name.lower() if isinstance(trigger, Lifecycle) else str(trigger)
    verdict = "refused" if change is None else f"to-{change.vm_state}-{change.task_state}"
    return f"{name}-from-{vm_state}-{task_state}-{verdict}"


CASES = cases()


@pytest.mark.parametrize(
    ("trigger", "vm_state", "task_state", "expected"), CASES, ids=[case_id(*case) for case in CASES]
)
def test_transition(
    trigger: Trigger, vm_state: VmState, task_state: TaskState | None, expected: Change | None
) -> None:
    assert transition(vm_state, task_state, trigger) == expected


def test_the_table_covers_every_trigger_from_every_state_and_allows_some_of_each() -> None:
    assert len(CASES) == len(STATES) * (len(Action) + len(Lifecycle) + len(Report))
    for trigger in [*Action, *Lifecycle, *Report]:
        allowed = [case for case in CASES if case[0] == trigger and case[3] is not None]
        if trigger not in (Action.CREATE, Lifecycle.DEFINED, Lifecycle.SHUTDOWN, Lifecycle.PMSUSPENDED):
            assert allowed, f"{trigger!r} is never allowed"


def test_a_new_instance_is_building_and_scheduling_and_every_task_belongs_to_an_action() -> None:
    assert CREATED == (V.BUILDING, T.SCHEDULING)
    assert set(ACTION_OF_TASK) == set(TaskState)
    # every task is a node's but scheduling, a resize's claim, its step between the node's two and its
    # confirm, a live change's claim, a shelve's step between the node's two and an unshelve's claim
    conductors = {T.SCHEDULING, T.RESIZE_PREP, T.RESIZE_MIGRATED, T.RESIZE_CONFIRMING, T.RESOURCES_CLAIMING}
    conductors |= {T.SHELVING_IMAGE_PENDING_UPLOAD, T.UNSHELVING}
    assert set(NODE_TASKS) == set(TaskState) - conductors


@pytest.mark.parametrize(
    ("vm_state", "task_state", "status"),
    [
        (V.BUILDING, T.SCHEDULING, "BUILD"),
        (V.BUILDING, T.DELETING, "BUILD"),
        (V.ACTIVE, None, "ACTIVE"),
        (V.ACTIVE, T.REBOOTING, "REBOOT"),
        (V.ACTIVE, T.REBOOTING_HARD, "HARD_REBOOT"),
        (V.ACTIVE, T.POWERING_OFF, "ACTIVE"),
        (V.STOPPED, T.REBOOTING_HARD, "SHUTOFF"),
        (V.PAUSED, None, "PAUSED"),
        (V.SUSPENDED, T.RESUMING, "SUSPENDED"),
        (V.ERROR, None, "ERROR"),
        (V.DELETED, None, "DELETED"),
        (V.ACTIVE, T.RESIZE_PREP, "RESIZE"),
        (V.STOPPED, T.RESIZE_FINISH, "RESIZE"),
        (V.RESIZED, None, "VERIFY_RESIZE"),
        (V.RESIZED, T.RESIZE_CONFIRMING, "VERIFY_RESIZE"),
        (V.RESIZED, T.RESIZE_REVERTING, "REVERT_RESIZE"),
        (V.ACTIVE, T.REBUILDING, "REBUILD"),
        (V.ACTIVE, T.REBUILD_SPAWNING, "REBUILD"),
        (V.STOPPED, T.REBUILDING, "REBUILD"),  # Nova's map: a stopped or failed one rebuilt or evacuated
        (V.ERROR, T.REBUILD_SPAWNING, "REBUILD"),
        (V.PAUSED, T.REBUILDING, "PAUSED"),
        (V.ACTIVE, T.RESOURCES_CHANGING, "ACTIVE"),  # a live change: the server stays ACTIVE
        (V.ACTIVE, T.MIGRATING, "MIGRATING"),
        (V.ACTIVE, T.SHELVING, "ACTIVE"),  # Nova shows the vm_state's status while it shelves
        (V.STOPPED, T.SHELVING_IMAGE_UPLOADING, "SHUTOFF"),
        (V.SHELVED, None, "SHELVED"),
        (V.SHELVED, T.SHELVING_OFFLOADING, "SHELVED"),
        (V.SHELVED_OFFLOADED, None, "SHELVED_OFFLOADED"),
        (V.SHELVED_OFFLOADED, T.SPAWNING, "SHELVED_OFFLOADED"),
    ],
)
def test_the_status_nova_shows(vm_state: VmState, task_state: TaskState | None, status: str) -> None:
    assert status_of(vm_state, task_state) == status
