"""A server's volume attachments (``/servers/{server_id}/os-volume_attachments``): list, attach, detach.

Attaching reserves the volume, has the server's node attach it live, then marks it in-use;
detaching undoes it. Both wait for the node (up to two minutes). From 2.20 a shelved-offloaded
server's volumes are attached (with no host: its node attaches them when it is unshelved) and
detached too; before, that is refused 409, as Nova does.
"""

from __future__ import annotations

from aiohttp import web
from msgspec import UNSET, UnsetType

from api.conductor import VolumeAttachment
from bus import Conflict, NotFound
from gateway.compute.common import BASE, ERRORS_OF_A_SERVER, SERVER_ID, GuestDevice, check_device, compute
from gateway.http import json_response, no_content
from gateway.routing import Body, Id, Reply, Request, Routes, given
from gateway.versions import microversion
from runtime.states import VmState

ATTACHMENTS = f"{BASE}/servers/{{server_id}}/os-volume_attachments"


class AttachmentRequest(Request):
    """An existing, available volume, and the device the guest should see it as (the next free one
    when none is given)."""

    volumeId: Id
    device: GuestDevice | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        check_device(self.device)


class AttachmentRequestBody(Request):
    volumeAttachment: AttachmentRequest


class Attachment(Body):
    """A volume attached to a server (its ``id`` is the volume's, as in Nova)."""

    id: str
    volumeId: str
    serverId: str
    device: str | None


class AttachmentList(Body):
    volumeAttachments: list[Attachment]


class AttachmentShown(Body):
    volumeAttachment: Attachment


def attachment_view(attachment: VolumeAttachment) -> Attachment:
    return Attachment(
        id=attachment["id"],
        volumeId=attachment["volumeId"],
        serverId=attachment["serverId"],
        device=attachment["device"],
    )


routes = Routes()
SHELVED_FROM = (2, 20)
"""The microversion from which a shelved or shelved-offloaded server's volumes are attached and
detached."""


async def _check_shelved(request: web.Request, action: str) -> None:
    """:raises Conflict: before 2.20, the server is shelved or shelved-offloaded (Nova's answer)."""
    if microversion(request) >= SHELVED_FROM:
        return
    server_id = request.match_info["server_id"]
    server = await compute(request).get_instance(instance_uuid=server_id)
    if server["vm_state"] in (VmState.SHELVED, VmState.SHELVED_OFFLOADED):
        raise Conflict(f"Cannot '{action}' instance {server_id} while it is in vm_state {server['vm_state']}")


@routes.get(
    ATTACHMENTS,
    "List a server's volume attachments",
    replies=[Reply(200, AttachmentList, "The volumes attached to the server.")],
    errors=ERRORS_OF_A_SERVER,
    path_types=SERVER_ID,
)
async def list_volume_attachments(request: web.Request) -> web.Response:
    attachments = await compute(request).list_volume_attachments(
        instance_uuid=request.match_info["server_id"]
    )
    return json_response(AttachmentList(volumeAttachments=[attachment_view(a) for a in attachments]))


@routes.post(
    ATTACHMENTS,
    "Attach a volume",
    body=AttachmentRequestBody,
    replies=[Reply(200, AttachmentShown, "Attached.")],
    errors=(404, 409),
    path_types=SERVER_ID,
)
async def attach_volume(request: web.Request, body: AttachmentRequestBody) -> web.Response:
    """404: no such server or volume; 409: the server has no host or is busy (a shelved-offloaded
    one before 2.20), the volume is not available, or the device is taken."""
    await _check_shelved(request, "attach_volume")
    asked = body.volumeAttachment
    attachment = await compute(request).attach_volume(
        instance_uuid=request.match_info["server_id"],
        volume_id=asked.volumeId,
        device=given(asked.device),
    )
    return json_response(AttachmentShown(volumeAttachment=attachment_view(attachment)))


@routes.get(
    f"{ATTACHMENTS}/{{volume_id}}",
    "Show a server's volume attachment",
    replies=[Reply(200, AttachmentShown, "The attachment.")],
    errors=(404,),
    path_types=SERVER_ID,
)
async def show_volume_attachment(request: web.Request) -> web.Response:
    """404: no such server, or the volume is not attached to it."""
    volume_id = request.match_info["volume_id"]
    attachments = await compute(request).list_volume_attachments(
        instance_uuid=request.match_info["server_id"]
    )
    for attachment in attachments:
        if attachment["volumeId"] == volume_id:
            return json_response(AttachmentShown(volumeAttachment=attachment_view(attachment)))
    raise NotFound(f"Volume {volume_id} is not attached to the server.")


@routes.delete(
    f"{ATTACHMENTS}/{{volume_id}}",
    "Detach a volume",
    replies=[Reply(202, None, "Detached.")],
    errors=(400, 404, 409),
    path_types=SERVER_ID,
)
async def detach_volume(request: web.Request) -> web.Response:
    """404: no such server, or the volume is not attached to it; 400: it is the server's root disk;
    409: the server is busy, or shelved (or shelved-offloaded) before 2.20."""
    await _check_shelved(request, "detach_volume")
    await compute(request).detach_volume(
        instance_uuid=request.match_info["server_id"], volume_id=request.match_info["volume_id"]
    )
    return no_content(202)
