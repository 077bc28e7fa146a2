"""Instance actions (``/servers/{server_id}/os-instance-actions``): what was done to a server, by whom.

Every action a user starts (create, stop, reboot, lock, attach_volume...) is recorded by the
conductor with the request id of the call that started it (the ``x-compute-request-id`` its
answer carried), and how it ended. Showing one action by its request id gives its steps
(``events``: scheduling, the node's acceptance, a reschedule...), with what went wrong in a failed
one (``traceback``) for admins only, as Nova 2.51 and later show them: Nova before 2.51 shows no
steps to others, and ``openstack server event show`` fails on an action without ``events`` (it
iterates them), so aiostack shows them at every microversion. From 2.21 a deleted server's
actions are shown too (before, it is 404 as any server that is gone). ``openstack server event
list`` and ``show`` read these.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import InstanceAction, InstanceActionEvent
from bus import NotFound
from gateway.compute.common import BASE, SERVER_ID, compute
from gateway.http import context_of, json_response
from gateway.routing import Body, Reply, Routes, Time
from gateway.versions import microversion

ACTIONS = f"{BASE}/servers/{{server_id}}/os-instance-actions"
NOVA_NAMES = {"reboot_hard": "reboot"}
"""Where the conductor's action names differ from Nova's."""
DELETED_TOO_SINCE = (2, 21)
"""The microversion from which a deleted server's actions are shown."""


class ActionView(Body):
    action: str
    instance_uuid: str
    request_id: str
    user_id: str
    project_id: str
    start_time: Time
    message: str | None


class ActionEvent(Body):
    event: str
    start_time: Time
    finish_time: Time | None
    result: str | None
    traceback: Annotated[str | None, Meta(description="Admins only.")] | UnsetType = UNSET


class ActionDetail(ActionView):
    events: list[ActionEvent]


class ActionList(Body):
    instanceActions: list[ActionView]


class ActionShown(Body):
    instanceAction: ActionDetail


def _view(action: InstanceAction) -> ActionView:
    return ActionView(
        action=NOVA_NAMES.get(action["action"], action["action"]),
        instance_uuid=action["instance_uuid"],
        request_id=action["request_id"] or "",
        user_id=action["user_id"] or "",
        project_id=action["project_id"] or "",
        start_time=action["start_time"],
        message=action["message"],
    )


def _event(step: InstanceActionEvent, admin: bool) -> ActionEvent:
    failed = step["result"] != "Success"
    return ActionEvent(
        event=step["event"],
        start_time=step["time"],
        finish_time=step["time"],
        result=step["result"],
        traceback=(step["details"] if failed else None) if admin else UNSET,
    )


def _deleted_too(request: web.Request) -> bool:
    return microversion(request) >= DELETED_TOO_SINCE


routes = Routes()


@routes.get(
    ACTIONS,
    "List a server's actions",
    replies=[Reply(200, ActionList, "Its actions, newest first.")],
    errors=(404,),
    path_types=SERVER_ID,
)
async def list_instance_actions(request: web.Request) -> web.Response:
    """404: no such server (before 2.21: or it is deleted)."""
    actions = await compute(request).list_actions(
        instance_uuid=request.match_info["server_id"], deleted_too=_deleted_too(request)
    )
    return json_response(ActionList(instanceActions=[_view(a) for a in reversed(actions)]))


@routes.get(
    f"{ACTIONS}/{{request_id}}",
    "Show a server's action",
    replies=[Reply(200, ActionShown, "The action the request started, with its steps.")],
    errors=(404,),
    path_types=SERVER_ID,
)
async def show_instance_action(request: web.Request) -> web.Response:
    """404: no such server (before 2.21: or it is deleted), or no action of it started by that request."""
    server_id, request_id = request.match_info["server_id"], request.match_info["request_id"]
    operator = compute(request)
    deleted_too = _deleted_too(request)
    actions = await operator.list_actions(instance_uuid=server_id, deleted_too=deleted_too)
    found = [a for a in actions if a["request_id"] == request_id]
    if not found:
        raise NotFound(f"Action {request_id} on instance {server_id} could not be found.")
    action = found[-1]
    admin = context_of(request).is_admin
    steps = await operator.list_action_events(instance_uuid=server_id, deleted_too=deleted_too)
    events = [_event(step, admin) for step in steps if step["action_id"] == action["id"]]
    view = _view(action)
    shown = ActionDetail(events=events, **{f: getattr(view, f) for f in ActionView.__struct_fields__})
    return json_response(ActionShown(instanceAction=shown))
