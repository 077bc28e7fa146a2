"""Domains (``/domains``): the one domain there is, ``default`` (no domain is made or changed).

Listing them is for admins and readers on the system; showing one is also for any token scoped
in it (every project is in ``default``), as Keystone's ``identity:get_domain`` allows.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bus import Forbidden, NotFound
from gateway.http import context_of, json_response
from gateway.identity.common import (
    ADMIN_READ,
    DOMAIN_ID,
    DOMAIN_NAME,
    V3,
    CollectionLinks,
    ResourceLinks,
    collection_links,
    self_link,
)
from gateway.routing import NO_POLICY, Body, Reply, Routes
from runtime.policy import allowed


class Domain(Body):
    id: str
    name: str
    description: str
    enabled: bool
    tags: list[str]
    options: dict[str, Any]
    links: ResourceLinks


class DomainShown(Body):
    domain: Domain


class DomainList(Body):
    domains: list[Domain]
    links: CollectionLinks


def domain_view(request: web.Request) -> Domain:
    return Domain(
        id=DOMAIN_ID,
        name=DOMAIN_NAME,
        description="The default domain",
        enabled=True,
        tags=[],
        options={},
        links=self_link(request, "domains", DOMAIN_ID),
    )


def domain_list(request: web.Request) -> DomainList:
    return DomainList(domains=[domain_view(request)], links=collection_links(request))


routes = Routes()


@routes.get(
    f"{V3}/domains",
    "List domains (admin or system reader)",
    policy=ADMIN_READ,
    replies=[Reply(200, DomainList, "The one.")],
)
async def list_domains(request: web.Request) -> web.Response:
    return json_response(domain_list(request))


@routes.get(
    f"{V3}/domains/{{domain_id}}",
    "Show a domain (a token scoped in it, or a system reader)",
    policy=NO_POLICY,
    replies=[Reply(200, DomainShown, "The domain.")],
    errors=(404,),
)
async def get_domain(request: web.Request) -> web.Response:
    """403: an unscoped token; 404: any domain but ``default``."""
    ctx = context_of(request)
    if ctx.project_id is None and not allowed(ADMIN_READ, ctx):
        raise Forbidden("Policy doesn't allow identity:get_domain to be performed.")
    if request.match_info["domain_id"] != DOMAIN_ID:
        raise NotFound(f"Could not find domain: {request.match_info['domain_id']}.")
    return json_response(DomainShown(domain=domain_view(request)))
