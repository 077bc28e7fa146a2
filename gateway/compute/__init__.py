"""Compute (Nova v2.1 under ``/compute/v2.1``, and as Nova's legacy v2.0 under ``/compute/v2``: the
same routes, microversion 2.1 whatever the request asks, ``gateway.versions``): one module per
resource, each its routes and schemas.

* ``servers``: create, list (ids or in detail), show, update, delete;
* ``actions``: power changes, reboot, lock, console output (``/servers/{id}/action``);
* ``metadata``: a server's metadata;
* ``instance_actions``: what was done to a server (``os-instance-actions``);
* ``attachments``: a server's volume attachments;
* ``interfaces``: a server's network interfaces, hot-plugged (``os-interface``);
* ``consoles``: remote consoles (a guest's serial console, as a websocket: the node's ``NodeConsole``);
* ``live_resources``: a running server's vCPUs and RAM changed live (``aiostack:setResources``),
  and flavor extra specs (``os-extra_specs``: the maxima of such a change);
* ``flavors``, ``images`` (Nova's proxy to Glance), ``keypairs``, ``limits``, ``quotas``,
  ``zones`` (availability zones);
* ``hosts``: the compute hosts for operators (``os-services``, ``os-hypervisors``);
* ``migrations``: every resize, migration and evacuate (``os-migrations``, admins);
* ``usage``: what each project's instances used over a period (``os-simple-tenant-usage``);
* ``project_routes``: every route with the project id in the URL too (Nova's, optional since 2.18).

Every route calls the conductor through its ``Compute`` facet (``common.compute``); the serial
console also the server's node, through ``NodeConsole``.
"""

from __future__ import annotations

from aiohttp import web

from gateway.compute import (
    actions,
    attachments,
    consoles,
    flavors,
    hosts,
    images,
    instance_actions,
    interfaces,
    keypairs,
    limits,
    live_resources,
    metadata,
    migrations,
    quotas,
    servers,
    usage,
    zones,
)
from gateway.compute.common import BASE
from gateway.compute.project_routes import add_project_routes
from gateway.routing import Routes
from gateway.versions import LEGACY_BASE

routes = Routes()
for _module in (
    servers,
    actions,
    metadata,
    instance_actions,
    attachments,
    interfaces,
    consoles,
    flavors,
    live_resources,
    images,
    keypairs,
    limits,
    quotas,
    zones,
    hosts,
    migrations,
    usage,
):
    routes.include(_module.routes)


def add_routes(app: web.Application) -> None:
    app[consoles.GRANTS] = consoles.Grants()
    routes.add_to(app)
    routes.add_aliases_to(app, BASE, LEGACY_BASE)
    add_project_routes(app, routes)
