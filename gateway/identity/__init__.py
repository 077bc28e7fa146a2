"""Identity (Keystone v3 under ``/identity/v3``): one module per resource, each its routes and schemas.

* ``tokens``: logins (scoped to a project or to the system), validation, checks and revocation
  of tokens (``/auth/tokens``), and what a token opens (``/auth/catalog``, ``/auth/projects``,
  ``/auth/domains``, ``/auth/system``);
* ``projects``, ``users``, ``groups`` (and their members), ``roles`` (and role assignments, on
  projects and on the system), ``domains``: the administration API, for admins only (403
  otherwise; an admin holds the admin role on its token's project or on the system), its reads
  for readers on the system too (any role there), and a user's own projects and password
  change, and showing the domain a token is scoped in, for the user;
* ``application_credentials``: a user's own.

Everything but a login needs a token. The identity actor checks every call again (its API,
``api.identity``): the gateway's checks only answer early.
"""

from __future__ import annotations

from aiohttp import web

from gateway.identity import application_credentials, domains, groups, projects, roles, tokens, users
from gateway.routing import Routes
from runtime.holds import BoundedHolds

routes = Routes()
for _module in (tokens, projects, users, groups, roles, domains, application_credentials):
    routes.include(_module.routes)


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
    app[tokens.HELD] = BoundedHolds(tokens.MAX_HELD)
