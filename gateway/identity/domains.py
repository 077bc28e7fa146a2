"""Domains (``/domains``): the one domain there is, ``default`` (no domain is made or changed)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bus import NotFound
from gateway.http import json_response
from gateway.identity.common import (
    ADMIN,
    DOMAIN_ID,
    DOMAIN_NAME,
    V3,
    CollectionLinks,
    ResourceLinks,
    collection_links,
    self_link,
)
from gateway.routing import Body, Reply, Routes


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
    f"{V3}/domains", "List domains (admin)", policy=ADMIN, replies=[Reply(200, DomainList, "The one.")]
)
async def list_domains(request: web.Request) -> web.Response:
    return json_response(domain_list(request))


@routes.get(
    f"{V3}/domains/{{domain_id}}",
    "Show a domain (admin)",
    policy=ADMIN,
    replies=[Reply(200, DomainShown, "The domain.")],
    errors=(404,),
)
async def get_domain(request: web.Request) -> web.Response:
    """404: any domain but ``default``."""
    if request.match_info["domain_id"] != DOMAIN_ID:
        raise NotFound(f"Could not find domain: {request.match_info['domain_id']}.")
    return json_response(DomainShown(domain=domain_view(request)))
