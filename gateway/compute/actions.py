"""Server actions (``POST /servers/{server_id}/action``): power changes, reboot, lock, console output.

The body is exactly one action: ``os-stop``, ``os-start``, ``pause``, ``unpause``, ``suspend``,
``resume``, ``lock``, ``unlock`` (their values are not read, as Nova's), ``reboot``
(``{"type": "SOFT" | "HARD"}``) or ``os-getConsoleOutput`` (``{"length": N}``: the last N
lines, -1 or none for all). Each is 202 once the conductor has taken it (the state follows),
but the console output, 200. A locked server refuses every action but ``unlock`` (and an
admin's) with 409; an admin's lock only an admin lifts (403).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.node import PowerAction, RebootType
from gateway.compute.common import BASE, SERVER_ID, compute
from gateway.http import json_response, no_content
from gateway.routing import MAX_AMOUNT, Body, Reply, Request, Routes

ConsoleLength = (
    Annotated[int, Meta(ge=-1, le=MAX_AMOUNT)] | Annotated[str, Meta(pattern=r"^(-1|[0-9]{1,9})$")]
)
"""Lines from the end of the log (-1: all), a number or its digits (Nova takes ``"50"`` too)."""
POWER_ACTIONS: tuple[PowerAction, ...] = ("pause", "unpause", "suspend", "resume")


class Reboot(Request):
    type: RebootType


class ConsoleOutputRequest(Request):
    length: ConsoleLength | UnsetType | None = UNSET


class ServerAction(Request):
    """Exactly one action."""

    os_stop: Any = msgspec.field(default=UNSET, name="os-stop")
    os_start: Any = msgspec.field(default=UNSET, name="os-start")
    reboot: Reboot | UnsetType = UNSET
    pause: Any = UNSET
    unpause: Any = UNSET
    suspend: Any = UNSET
    resume: Any = UNSET
    lock: Any = UNSET
    unlock: Any = UNSET
    console_output: ConsoleOutputRequest | UnsetType = msgspec.field(
        default=UNSET, name="os-getConsoleOutput"
    )
    __schema_extra__: ClassVar[dict[str, Any]] = {"minProperties": 1, "maxProperties": 1}

    def __post_init__(self) -> None:
        given = [
            name for name in self.__struct_encode_fields__ if getattr(self, _attribute(name)) is not UNSET
        ]
        if len(given) != 1:
            raise ValueError(f"exactly one action is expected, not {len(given)}")


def _attribute(encoded: str) -> str:
    return ServerAction.__struct_fields__[ServerAction.__struct_encode_fields__.index(encoded)]


class ConsoleOutput(Body):
    output: str


routes = Routes()


@routes.post(
    f"{BASE}/servers/{{server_id}}/action",
    "Act on a server",
    body=ServerAction,
    replies=[
        Reply(
            202,
            None,
            "Taken (os-stop, os-start, reboot, pause, unpause, suspend, resume, lock, unlock); the state"
            " follows.",
        ),
        Reply(200, ConsoleOutput, "The console output (os-getConsoleOutput)."),
    ],
    errors=(403, 404, 409),
    path_types=SERVER_ID,
)
async def server_action(request: web.Request, body: ServerAction) -> web.Response:
    """404: no such server; 409: its state does not allow the action, it is locked (or its driver
    keeps no console log); 403: unlocking an admin's lock, not being one."""
    server_id = request.match_info["server_id"]
    conductor = compute(request)
    if body.os_stop is not UNSET:
        await conductor.stop_instance(instance_uuid=server_id)
    elif body.os_start is not UNSET:
        await conductor.start_instance(instance_uuid=server_id)
    elif body.lock is not UNSET:
        await conductor.lock_instance(instance_uuid=server_id)
    elif body.unlock is not UNSET:
        await conductor.unlock_instance(instance_uuid=server_id)
    elif isinstance(body.reboot, Reboot):
        await conductor.reboot_instance(instance_uuid=server_id, reboot_type=body.reboot.type)
    elif isinstance(body.console_output, ConsoleOutputRequest):
        length = body.console_output.length
        console = await conductor.get_console_output(
            instance_uuid=server_id, length=int(length) if isinstance(length, int | str) else None
        )
        return json_response(ConsoleOutput(output=console["output"]))
    else:
        action = next(name for name in POWER_ACTIONS if getattr(body, name) is not UNSET)
        await conductor.change_power(instance_uuid=server_id, action=action)
    return no_content(202)
