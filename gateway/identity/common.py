"""What the identity resources share: Keystone's base path, its links and collections, the one
domain, query flags, and calls on the gateway's own behalf."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from bus import Current, request_scope
from gateway.http import REQUEST_ID
from gateway.routing import Body

V3 = "/identity/v3"
DOMAIN_ID = "default"
DOMAIN_NAME = "Default"
ADMIN = "identity:admin"
"""The policy of the administration routes (projects, users, groups, roles, assignments, domains)."""
ADMIN_READ = "identity:admin_read"
"""The policy of the administration routes that only read: admins, and readers on the system."""

Flag = Annotated[
    bool | Literal[""],
    Meta(description="true or false (1 or 0); present without a value: true."),
]
"""A query flag as Keystone's clients send it: ``?effective``, ``?effective=true``, ``?enabled=0``."""
Filter = Annotated[str, Meta(max_length=255)]
"""A name (or id) to filter a listing by."""


class ResourceLinks(Body):
    """Keystone's ``links`` of one resource."""

    self_: str = msgspec.field(name="self")


class CollectionLinks(Body):
    """Keystone's ``links`` of a listing (one page: no next, no previous)."""

    self_: str = msgspec.field(name="self")
    next: None
    previous: None


def base(request: web.Request) -> str:
    """The gateway's URL, as the client reached it."""
    return f"{request.scheme}://{request.host}"


def url(request: web.Request, *parts: str) -> str:
    """``/identity/v3/<parts>`` as a full URL."""
    return "/".join((base(request) + V3, *parts))


def self_link(request: web.Request, *parts: str) -> ResourceLinks:
    return ResourceLinks(self_=url(request, *parts))


def collection_links(request: web.Request) -> CollectionLinks:
    return CollectionLinks(self_=base(request) + request.path_qs, next=None, previous=None)


def is_set(flag: bool | str | UnsetType) -> bool:
    """A ``Flag``: absent and false (or 0) are false; present without a value is true."""
    return flag is not UNSET and flag is not False


def other_domain(domain_id: str | UnsetType) -> bool:
    """Whether a ``domain_id`` filter names a domain other than the one there is (none of its
    resources then)."""
    return domain_id is not UNSET and domain_id != DOMAIN_ID


def on_own_behalf(request: web.Request) -> AbstractContextManager[Current]:
    """Calls made inside it act on the gateway's own behalf (no user context), for what any
    token holder may see of its own."""
    return request_scope(request[REQUEST_ID], None)


def iso(epoch: float) -> str:
    """Keystone's time format (microseconds, ``Z``)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
