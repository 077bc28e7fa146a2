"""Version discovery and microversions, as keystoneauth and openstacksdk read them.

Every service answers its version document at its root and at its versioned endpoint
(``/identity``, ``/identity/v3``, ``/compute``, ``/compute/v2.1``, ``/volume``, ``/volume/v3``;
image and network keep theirs in their modules). Compute and volume take microversions:
``OpenStack-API-Version: compute 2.16`` (or ``X-OpenStack-Nova-API-Version: 2.16``),
``OpenStack-API-Version: volume 3.0``, ``latest`` for the highest; the answer names the
version used in the same headers, with ``Vary``. A version outside the range is refused with
406, as Nova and Cinder do.

Compute 2.1-2.16: 2.3 shows admins the extended server attributes, 2.9 ``locked``, 2.16
``host_status`` (admins). Volume 3.0 only.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bus import InvalidRequest
from gateway.app import Handler, json_response, public, service_of

MICROVERSION = web.RequestKey("microversion", tuple)
UPDATED = "2026-11-01T00:00:00Z"


class NotAcceptable(InvalidRequest):
    http_status = 406


RANGES = {
    "compute": ((2, 1), (2, 16), "X-OpenStack-Nova-API-Version"),
    "volume": ((3, 0), (3, 0), None),
}
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def _text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def requested_microversion(request: web.Request, service: str) -> tuple[int, int]:
    low, high, legacy_header = RANGES[service]
    wanted = None
    for value in request.headers.getall("OpenStack-API-Version", []):
        for part in value.split(","):
            name, _, version = part.strip().partition(" ")
            if name.lower() == service:
                wanted = version.strip()
    if wanted is None and legacy_header:
        wanted = request.headers.get(legacy_header)
    if wanted is None:
        return low
    if wanted.lower() == "latest":
        return high
    match = _VERSION.match(wanted)
    if match is None:
        raise InvalidRequest(f"Invalid API version request '{wanted}': use X.Y, e.g. {_text(low)}")
    version = (int(match[1]), int(match[2]))
    if not low <= version <= high:
        raise NotAcceptable(
            f"Version {wanted} is not supported by the API."
            f" Minimum is {_text(low)} and maximum is {_text(high)}."
        )
    return version


@web.middleware
async def microversion_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    service = service_of(request.path)
    if service not in RANGES:
        return await handler(request)
    version = requested_microversion(request, service)
    request[MICROVERSION] = version
    response = await handler(request)
    _, _, legacy_header = RANGES[service]
    response.headers["OpenStack-API-Version"] = f"{service} {_text(version)}"
    vary = ["OpenStack-API-Version"]
    if legacy_header:
        response.headers[legacy_header] = _text(version)
        vary.append(legacy_header)
    response.headers["Vary"] = ", ".join(vary)
    return response


def microversion(request: web.Request) -> tuple[int, int]:
    """The microversion this compute or volume request asked for (its minimum if none)."""
    return request.get(MICROVERSION) or RANGES[service_of(request.path)][0]


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _identity_v3(request: web.Request) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{_base(request)}/identity/v3/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


def _microversioned(
    request: web.Request, service: str, version_id: str, path: str, media: str
) -> dict[str, Any]:
    """The version document of a service with microversions: its range from ``RANGES``."""
    low, high, _ = RANGES[service]
    return {
        "id": version_id,
        "status": "CURRENT",
        "version": _text(high),
        "min_version": _text(low),
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{_base(request)}{path}/"}],
        "media-types": [{"base": "application/json", "type": f"application/vnd.openstack.{media}"}],
    }


def _compute_v21(request: web.Request) -> dict[str, Any]:
    return _microversioned(request, "compute", "v2.1", "/compute/v2.1", "compute+json;version=2.1")


def _volume_v3(request: web.Request) -> dict[str, Any]:
    return _microversioned(request, "volume", "v3.0", "/volume/v3", "volume+json;version=3")


@public
async def identity_versions(request: web.Request) -> web.Response:
    return json_response({"versions": {"values": [_identity_v3(request)]}}, status=300)


@public
async def identity_v3(request: web.Request) -> web.Response:
    return json_response({"version": _identity_v3(request)})


@public
async def compute_versions(request: web.Request) -> web.Response:
    return json_response({"versions": [_compute_v21(request)]})


@public
async def compute_v21(request: web.Request) -> web.Response:
    return json_response({"version": _compute_v21(request)})


@public
async def volume_versions(request: web.Request) -> web.Response:
    return json_response({"versions": [_volume_v3(request)]}, status=300)


@public
async def volume_v3(request: web.Request) -> web.Response:
    return json_response({"version": _volume_v3(request)})


def add_routes(app: web.Application) -> None:
    for paths, handler in (
        (("/identity", "/identity/"), identity_versions),
        (("/identity/v3", "/identity/v3/"), identity_v3),
        (("/compute", "/compute/"), compute_versions),
        (("/compute/v2.1", "/compute/v2.1/"), compute_v21),
        (("/volume", "/volume/"), volume_versions),
        (("/volume/v3", "/volume/v3/"), volume_v3),
    ):
        for path in paths:
            app.router.add_get(path, handler)
