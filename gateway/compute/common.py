"""What the compute resources share: the base path, Nova's links, and the caller's conductor client."""

from __future__ import annotations

import re
from typing import Annotated

from aiohttp import web
from msgspec import Meta

from api.conductor import Compute
from gateway.http import client
from gateway.routing import Body, Link, id_other_than

BASE = "/compute/v2.1"
ERRORS_OF_A_SERVER = (404,)
"""A route under ``/servers/{server_id}``: no such server (or another project's) is 404."""
SERVER_ID = {"server_id": id_other_than("detail")}
"""``/servers/detail`` is the detailed list, never a server."""


GUEST_DEVICE = r"^((/dev/)?vd[a-z]{1,3})?$"
GuestDevice = Annotated[str, Meta(max_length=16, extra_json_schema={"pattern": GUEST_DEVICE})]
"""A virtio disk as the guest sees it (``/dev/vdb`` or ``vdb``); empty: the next free one."""


def check_device(device: object) -> None:
    """:raises ValueError: a ``GuestDevice`` that does not match its pattern (checked here, as a
    pattern ending in ``$`` lets a trailing newline through in Python)."""
    if isinstance(device, str) and re.fullmatch(GUEST_DEVICE, device) is None:
        raise ValueError(f"{device!r} is not a virtio disk name like /dev/vdb")


def links(request: web.Request, kind: str, resource_id: str) -> list[Link]:
    """Nova's self and bookmark links of a resource."""
    return links_at(link_base(request), kind, resource_id)


def link_base(request: web.Request) -> str:
    """Where the links of a request's answer start: its scheme and host."""
    return f"{request.scheme}://{request.host}"


def links_at(base: str, kind: str, resource_id: str) -> list[Link]:
    """``links`` from a ``link_base``: what each item of a long answer costs."""
    return [
        Link(rel="self", href=f"{base}{BASE}/{kind}/{resource_id}"),
        Link(rel="bookmark", href=f"{base}/compute/{kind}/{resource_id}"),
    ]


class Reference(Body):
    """A resource named by its id, with its links (a server's image and flavor)."""

    id: str
    links: list[Link]


def compute(request: web.Request) -> Compute:
    """The conductor's compute API, for this request."""
    return client(request, Compute)
