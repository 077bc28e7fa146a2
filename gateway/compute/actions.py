"""Server actions (``POST /servers/{server_id}/action``): power changes, reboot, lock, console output.

The body is exactly one action: ``os-stop``, ``os-start``, ``pause``, ``unpause``, ``suspend``,
``resume``, ``lock``, ``unlock``, ``confirmResize``, ``revertResize`` (their values are not read,
as Nova's), ``migrate`` (admins; null, as Nova's before 2.56: a cold migration to the scheduler's
choice, then VERIFY_RESIZE as a resize), ``os-migrateLive`` (admins: ``host``, ``block_migration``,
before 2.25 ``disk_over_commit``; MIGRATING until it runs on its new host), ``shelve``,
``shelveOffload`` (admins), ``unshelve`` (null, as Nova's schema before 2.77: its
``availability_zone`` is not served), ``resize`` (``{"flavorRef": ...}``: VERIFY_RESIZE once the
node gave the server the flavor; ``confirmResize`` answers 204), ``reboot``
(``{"type": "SOFT" | "HARD"}``), ``evacuate`` (admins: ``host``, ``adminPass``, before 2.14
``onSharedStorage``; the server's host must be down: 200, with ``adminPass`` before 2.14),
``rebuild`` (``imageRef``, and ``name``, ``metadata``, ``adminPass``, access addresses, from
2.19 ``description``), ``createImage`` (``name``, ``metadata``: a snapshot of the disk, its image
named in the ``Location`` header), ``os-getConsoleOutput`` (``{"length": N}``: the last N
lines, -1 or none for all), ``os-getSerialConsole`` (``{"type": "serial"}``: a URL of the serial
console, as ``remote-consoles`` gives) or ``trigger_crash_dump`` (2.17, ``null``: an NMI into
the guest; before 2.17 404, as Nova answers an action its microversion does not have). Each is
202 once the conductor has taken it (the state follows), but the consoles, 200; a rebuild
answers the server, with its new administrator password. A locked server refuses every action
but ``unlock`` (and an admin's) with 409; an admin's lock only an admin lifts (403).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import AdminPass, ImageName, MetadataKey, MetadataValue, TargetHost
from api.node import PowerAction, RebootType
from bus import InvalidRequest
from gateway.compute.common import BASE, SERVER_ID, compute
from gateway.compute.consoles import serial_console_url
from gateway.compute.crash_dump import trigger_crash_dump
from gateway.compute.live_resources import SET_RESOURCES, SetResources, set_resources
from gateway.compute.server_security import add_security_group, remove_security_group
from gateway.compute.servers import (
    AccessIPv4,
    AccessIPv6,
    DescriptionChange,
    FlavorRef,
    ServerName,
    ServerRebuilt,
    ServerRebuiltBody,
    ServerUpdated,
    check_description,
    check_description_allowed,
    check_name,
    server_updated,
)
from gateway.http import json_response, no_content
from gateway.routing import MAX_AMOUNT, Body, Id, Reply, Request, Routes, given
from gateway.versions import microversion

ConsoleLength = (
    Annotated[int, Meta(ge=-1, le=MAX_AMOUNT)] | Annotated[str, Meta(pattern=r"^(-1|[0-9]{1,9})$")]
)
"""Lines from the end of the log (-1: all), a number or its digits (Nova takes ``"50"`` too)."""
POWER_ACTIONS: tuple[PowerAction, ...] = ("pause", "unpause", "suspend", "resume")


class Reboot(Request):
    type: RebootType


class Rebuild(Request, kw_only=True):
    """Rebuild from ``imageRef``; what else is given changes with it (``metadata``: all of it).
    ``OS-DCF:diskConfig`` and ``preserve_ephemeral`` are taken and ignored (no ephemeral disks)."""

    imageRef: Id
    name: ServerName | UnsetType = UNSET
    metadata: dict[MetadataKey, MetadataValue] | UnsetType = UNSET
    adminPass: AdminPass | UnsetType = UNSET
    accessIPv4: AccessIPv4 | UnsetType = UNSET
    accessIPv6: AccessIPv6 | UnsetType = UNSET
    disk_config: Literal["AUTO", "MANUAL"] | UnsetType = msgspec.field(
        default=UNSET, name="OS-DCF:diskConfig"
    )
    preserve_ephemeral: bool | UnsetType = UNSET
    description: DescriptionChange = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.name, str):
            check_name(self.name)
        check_description(self.description)


class Resize(Request, kw_only=True):
    """Resize to ``flavorRef``; ``OS-DCF:diskConfig`` is taken and ignored."""

    flavorRef: FlavorRef
    disk_config: Literal["AUTO", "MANUAL"] | UnsetType = msgspec.field(
        default=UNSET, name="OS-DCF:diskConfig"
    )


TRUE_WORDS = ("True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes")
FALSE_WORDS = ("False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no")
NovaBoolean = bool | Literal[TRUE_WORDS + FALSE_WORDS]  # type: ignore[valid-type]
"""Nova's ``boolean`` parameter type: a JSON boolean or one of its words."""
PASSWORD_DROPPED_AT = (2, 14)
"""The microversion from which evacuate takes no ``onSharedStorage`` and answers no password."""


class Evacuate(Request, kw_only=True):
    """Evacuate to ``host`` (forced; none: the scheduler's choice) with ``adminPass``;
    ``onSharedStorage`` is required before 2.14 and refused from it."""

    host: TargetHost | UnsetType = UNSET
    adminPass: AdminPass | UnsetType = UNSET
    onSharedStorage: NovaBoolean | UnsetType = UNSET


class EvacuateBody(Body):
    """Before 2.14: the administrator password the evacuated server gets (null on shared storage)."""

    adminPass: str | None


class MigrateLive(Request, kw_only=True):
    """Live-migrate to ``host`` (forced; null: the scheduler's choice). Before 2.25
    ``disk_over_commit`` is required and ``block_migration`` a boolean; from 2.25 it may be
    ``auto`` and ``disk_over_commit`` is refused. Both are taken and ignored (the test driver's
    domains have no disk to copy)."""

    host: TargetHost | None
    block_migration: NovaBoolean | Literal["auto"]  # type: ignore[valid-type]
    disk_over_commit: NovaBoolean | UnsetType = UNSET  # type: ignore[valid-type]


AUTO_BLOCK_MIGRATION_FROM = (2, 25)
"""The microversion from which a live migration's ``block_migration`` may be ``auto`` and
``disk_over_commit`` is gone."""


class CreateImage(Request):
    """A snapshot of the server's disk, as an image of this name (with ``metadata`` as its
    properties besides those it keeps from the server's image)."""

    name: ImageName
    metadata: dict[MetadataKey, MetadataValue] | UnsetType = UNSET


class ConsoleOutputRequest(Request):
    length: ConsoleLength | UnsetType | None = UNSET


class SerialConsoleRequest(Request):
    type: Literal["serial"]


class SecurityGroupAction(Request):
    """A security group of the server's project, by name or id."""

    name: Annotated[str, Meta(min_length=1, max_length=255)]


class ServerAction(Request):
    """Exactly one action."""

    os_stop: Any = msgspec.field(default=UNSET, name="os-stop")
    os_start: Any = msgspec.field(default=UNSET, name="os-start")
    reboot: Reboot | UnsetType = UNSET
    rebuild: Rebuild | UnsetType = UNSET
    evacuate: Evacuate | UnsetType = UNSET
    resize: Resize | UnsetType = UNSET
    confirm_resize: Any = msgspec.field(default=UNSET, name="confirmResize")
    revert_resize: Any = msgspec.field(default=UNSET, name="revertResize")
    migrate: UnsetType | None = UNSET
    migrate_live: MigrateLive | UnsetType = msgspec.field(default=UNSET, name="os-migrateLive")
    shelve: Any = UNSET
    shelve_offload: Any = msgspec.field(default=UNSET, name="shelveOffload")
    unshelve: Any = UNSET
    create_image: CreateImage | UnsetType = msgspec.field(default=UNSET, name="createImage")
    pause: Any = UNSET
    unpause: Any = UNSET
    suspend: Any = UNSET
    resume: Any = UNSET
    lock: Any = UNSET
    unlock: Any = UNSET
    console_output: ConsoleOutputRequest | UnsetType = msgspec.field(
        default=UNSET, name="os-getConsoleOutput"
    )
    serial_console: SerialConsoleRequest | UnsetType = msgspec.field(
        default=UNSET, name="os-getSerialConsole"
    )
    add_security_group: SecurityGroupAction | UnsetType = msgspec.field(
        default=UNSET, name="addSecurityGroup"
    )
    remove_security_group: SecurityGroupAction | UnsetType = msgspec.field(
        default=UNSET, name="removeSecurityGroup"
    )
    set_resources: SetResources | UnsetType = msgspec.field(default=UNSET, name=SET_RESOURCES)
    trigger_crash_dump: Annotated[None, Meta(description="2.17 and later (404 before).")] | UnsetType = UNSET
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


class SerialConsole(Body):
    type: Literal["serial"]
    url: str


class SerialConsoleBody(Body):
    console: SerialConsole


routes = Routes()


@routes.post(
    f"{BASE}/servers/{{server_id}}/action",
    "Act on a server",
    body=ServerAction,
    replies=[
        Reply(
            202,
            ServerRebuiltBody,
            "Taken: a rebuild answers the server being rebuilt, with its administrator password; the"
            " other actions (os-stop, os-start, reboot, pause, unpause, suspend, resume, lock, unlock,"
            " resize, revertResize, migrate and os-migrateLive (admins), shelve, shelveOffload (admins),"
            " unshelve,"
            " createImage: its Location header names the image, which becomes active once the"
            " server's node has uploaded the disk; addSecurityGroup, removeSecurityGroup;"
            " trigger_crash_dump, 2.17: the guest got its NMI; aiostack:setResources, from 2.16:"
            " the running server's vCPUs and RAM changed live within its flavor's"
            " maxima) answer no body. The state follows.",
            or_empty=True,
        ),
        Reply(204, None, "confirmResize: the resize is kept, the old flavor's claim given back."),
        Reply(
            200,
            ConsoleOutput,
            "The console output (os-getConsoleOutput), or the serial console's URL with a one-time"
            " token (os-getSerialConsole); evacuate (admins): its administrator password before"
            " 2.14, no body from 2.14.",
            alternatives=(SerialConsoleBody, EvacuateBody),
            or_empty=True,
        ),
    ],
    errors=(403, 404, 409),
    path_types=SERVER_ID,
)
async def server_action(request: web.Request, body: ServerAction) -> web.Response:
    """404: no such server (or security group, or one the server is not in to remove); 409: its
    state does not allow the action, it is locked (or its driver keeps no console log, or has no
    serial console), a security group name several groups have, no room for a resize on its
    host; 403: unlocking an admin's lock, not being one, a resize past the quota; 400: a security
    group for a server with no port (or one without port security), a resize to an unknown
    flavor, to the server's own, or to a smaller disk; an evacuate whose server's host is up, to
    its own host, to one that is down or has no room (an unknown one is 404; a server that is not
    active, stopped or in error 409; not an admin 403); a migrate with no other host that has room
    (400), of a server that is not active or stopped, or whose host runs real guests (409); a
    crash dump (2.17; 404 before) of a server that is not active, paused, resized or in error, or
    whose host's driver cannot inject an NMI (400); aiostack:setResources: 400 below its
    microversion, for a flavor with no maximum for what is asked or a size outside its range, 403
    past the quota, 409 a server not active with no task, or a host with no room for the growth."""
    server_id = request.match_info["server_id"]
    conductor = compute(request)
    if body.os_stop is not UNSET:
        await conductor.stop_instance(instance_uuid=server_id)
    elif body.os_start is not UNSET:
        await conductor.start_instance(instance_uuid=server_id)
    elif isinstance(body.rebuild, Rebuild):
        rebuild = body.rebuild
        check_description_allowed(request, rebuild.description, "rebuild")
        admin_pass = rebuild.adminPass or secrets.token_urlsafe(9)
        instance = await conductor.rebuild_instance(
            instance_uuid=server_id,
            image_ref=rebuild.imageRef,
            name=given(rebuild.name),
            metadata=given(rebuild.metadata),
            admin_pass=admin_pass,
            access_ip_v4=given(rebuild.accessIPv4),
            access_ip_v6=given(rebuild.accessIPv6),
            description=given(rebuild.description),
            forget_description=rebuild.description is None,
        )
        shown = server_updated(request, {**instance, "host_status": ""})
        rebuilt = ServerRebuilt(
            **{name: getattr(shown, name) for name in ServerUpdated.__struct_fields__}, adminPass=admin_pass
        )
        return json_response(ServerRebuiltBody(server=rebuilt), status=202)
    elif isinstance(body.create_image, CreateImage):
        image_id = await conductor.create_image(
            instance_uuid=server_id, name=body.create_image.name, metadata=given(body.create_image.metadata)
        )
        location = f"{request.scheme}://{request.host}/image/v2/images/{image_id}"
        return no_content(202, headers={"Location": location})
    elif isinstance(body.evacuate, Evacuate):
        return await _evacuate(request, server_id, body.evacuate)
    elif isinstance(body.resize, Resize):
        await conductor.resize_instance(instance_uuid=server_id, flavor_ref=str(body.resize.flavorRef))
    elif body.confirm_resize is not UNSET:
        await conductor.confirm_resize(instance_uuid=server_id)
        return no_content(204)
    elif body.revert_resize is not UNSET:
        await conductor.revert_resize(instance_uuid=server_id)
    elif body.migrate is None:
        await conductor.migrate_instance(instance_uuid=server_id)
    elif isinstance(body.migrate_live, MigrateLive):
        await _migrate_live(request, server_id, body.migrate_live)
    elif body.shelve is not UNSET:
        await conductor.shelve_instance(instance_uuid=server_id)
    elif body.shelve_offload is not UNSET:
        await conductor.shelve_offload_instance(instance_uuid=server_id)
    elif body.unshelve is not UNSET:
        await conductor.unshelve_instance(instance_uuid=server_id)
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
    elif isinstance(body.add_security_group, SecurityGroupAction):
        await add_security_group(request, server_id, body.add_security_group.name)
    elif isinstance(body.remove_security_group, SecurityGroupAction):
        await remove_security_group(request, server_id, body.remove_security_group.name)
    elif isinstance(body.set_resources, SetResources):
        await set_resources(request, server_id, body.set_resources)
    elif body.trigger_crash_dump is not UNSET:
        await trigger_crash_dump(request, server_id)
    elif isinstance(body.serial_console, SerialConsoleRequest):
        url = await serial_console_url(request, server_id)
        return json_response(SerialConsoleBody(console=SerialConsole(type="serial", url=url)))
    else:
        action = next(name for name in POWER_ACTIONS if getattr(body, name) is not UNSET)
        await conductor.change_power(instance_uuid=server_id, action=action)
    return no_content(202)


async def _migrate_live(request: web.Request, server_id: str, migrate: MigrateLive) -> None:
    """Nova's ``os-migrateLive`` at the request's microversion (its body's schema changes at 2.25)."""
    if microversion(request) < AUTO_BLOCK_MIGRATION_FROM:
        if migrate.disk_over_commit is UNSET:
            raise InvalidRequest(
                "Invalid input for field/attribute os-migrateLive. 'disk_over_commit' is a required property"
            )
        if migrate.block_migration == "auto":
            raise InvalidRequest(
                "Invalid input for field/attribute block_migration. Value: auto. 'auto' is not valid under"
                " any of the given schemas"
            )
    elif migrate.disk_over_commit is not UNSET:
        raise InvalidRequest(
            "Invalid input for field/attribute os-migrateLive."
            " Additional properties are not allowed ('disk_over_commit' was unexpected)"
        )
    block = migrate.block_migration is True or migrate.block_migration in TRUE_WORDS
    await compute(request).live_migrate_instance(
        instance_uuid=server_id, host=migrate.host, block_migration=block
    )


async def _evacuate(request: web.Request, server_id: str, evacuate: Evacuate) -> web.Response:
    """Nova's ``evacuate`` at the request's microversion: before 2.14 ``onSharedStorage`` is
    required (a password with it true is refused) and the answer names the password; from 2.14
    it is refused (Nova's schema) and the answer has no body."""
    before_214 = microversion(request) < PASSWORD_DROPPED_AT
    password = given(evacuate.adminPass)
    if before_214:
        if evacuate.onSharedStorage is UNSET:
            raise InvalidRequest(
                "Invalid input for field/attribute evacuate. 'onSharedStorage' is a required property"
            )
        shared = evacuate.onSharedStorage is True or evacuate.onSharedStorage in TRUE_WORDS
        if shared and password is not None:
            raise InvalidRequest("admin password can't be changed on existing disk")
        if password is None and not shared:
            password = secrets.token_urlsafe(9)
    else:
        if evacuate.onSharedStorage is not UNSET:
            raise InvalidRequest(
                "Invalid input for field/attribute evacuate."
                " Additional properties are not allowed ('onSharedStorage' was unexpected)"
            )
        password = password or secrets.token_urlsafe(9)
    await compute(request).evacuate_instance(
        instance_uuid=server_id, host=given(evacuate.host), admin_pass=password
    )
    if before_214:
        return json_response(EvacuateBody(adminPass=password))
    return no_content(200)
