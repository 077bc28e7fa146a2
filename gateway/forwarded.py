"""Behind a reverse proxy: the URLs the gateway hands out (the catalog, links, console URLs) use
the scheme and host the client used, from ``X-Forwarded-Proto`` and ``X-Forwarded-Host``, when the
request comes from a trusted proxy (``--trusted-proxy CIDR``) and only then: anyone else could
otherwise point a victim's catalog at a host of their own. The first value of each header is the
client's (a proxy appends). A host that is not a plain ``host[:port]`` is ignored; the peer address
used for login throttling stays the connection's (``request.remote``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


def _first(request: web.Request, header: str) -> str | None:
    value = request.headers.get(header)
    return value.split(",")[0].strip() if value else None


def trusted(request: web.Request, proxies: Sequence[Network]) -> bool:
    try:
        peer = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    return any(peer in network for network in proxies)


def forwarded_middleware(
    proxies: Sequence[Network],
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware taking the client's scheme and host from a trusted proxy's headers."""

    @web.middleware
    async def honour_forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if proxies and trusted(request, proxies):
            changes = {}
            proto = _first(request, "X-Forwarded-Proto")
            if proto in ("http", "https"):
                changes["scheme"] = proto
            host = _first(request, "X-Forwarded-Host")
            if host and HOST.match(host):
                changes["host"] = host
            if changes:
                request = request.clone(**changes)
        return await handler(request)

    return honour_forwarded
