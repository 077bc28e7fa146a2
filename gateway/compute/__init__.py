"""Compute (Nova v2.1 under ``/compute/v2.1``): one module per resource, each its routes and schemas.

* ``servers``: create, list (ids or in detail), show, delete;
* ``actions``: power changes, reboot, console output (``/servers/{id}/action``);
* ``attachments``: a server's volume attachments;
* ``flavors``, ``keypairs``, ``limits``.

Every route calls the conductor through its ``Compute`` facet (``common.compute``).
"""

from __future__ import annotations

from aiohttp import web

from gateway.compute import actions, attachments, flavors, keypairs, limits, servers
from gateway.routing import Routes

routes = Routes()
for _module in (servers, actions, attachments, flavors, keypairs, limits):
    routes.include(_module.routes)


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
