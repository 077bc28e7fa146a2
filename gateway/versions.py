"""Version discovery and microversions, as keystoneauth and openstacksdk read them.

Every service answers its version document at its root and at its versioned endpoint
(``/identity``, ``/identity/v3``, ``/compute``, ``/compute/v2.1``, ``/volume``, ``/volume/v3``;
image and network keep theirs in their modules). Compute and volume take microversions:
``OpenStack-API-Version: compute 2.16`` (or ``X-OpenStack-Nova-API-Version: 2.16``),
``OpenStack-API-Version: volume 3.0``, ``latest`` for the highest; the answer names the
version used in the same headers, with ``Vary``. A version outside the range is refused with
406, as Nova and Cinder do.

Compute 2.1-2.25: 2.3 shows admins the extended server attributes, 2.9 ``locked``, 2.16
``host_status`` (admins), 2.17 the ``trigger_crash_dump`` action, 2.19 a server's ``description``,
2.21 the actions of deleted servers, 2.22 forcing a live migration to complete, 2.23 a migration's
type (and the server migrations API), 2.24 aborting a live migration, 2.25 live migration's
``block_migration: auto``. 2.18 made the project id in compute URLs optional: the routes are
served with it and without it at every microversion, as Nova serves them
(``gateway.compute.project_routes``); 2.20 attaches and detaches the volumes of a
shelved-offloaded server. Volume 3.0 only.
Compute is also Nova's legacy v2.0 (``/compute/v2``, listed first as Nova lists it): the v2.1
routes, at microversion 2.1 whatever a request asks, answered without microversion headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec
from aiohttp import web

from bus import InvalidRequest
from gateway.http import MICROVERSION, Handler, json_response, service_of
from gateway.routing import Body, Link, Reply, Routes, Time

UPDATED = "2026-11-01T00:00:00Z"
LEGACY_BASE = "/compute/v2"
"""Nova's legacy v2.0 endpoint: the v2.1 API without microversions."""
LEGACY_UPDATED = "2011-01-21T11:33:21Z"
LEGACY_MEDIA = "compute+json;version=2"


class NotAcceptable(InvalidRequest):
    http_status = 406


RANGES = {
    "compute": ((2, 1), (2, 25), "X-OpenStack-Nova-API-Version"),
    "volume": ((3, 0), (3, 0), None),
}
_WELL_FORMED = r"[0-9]+\.[0-9]+"


def _text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def versions_of(service: str) -> list[str]:
    """What a request may ask for: each version of the service's range, and ``latest``."""
    (major, lowest), (_, highest), _ = RANGES[service]
    return [f"{major}.{minor}" for minor in range(lowest, highest + 1)] + ["latest"]


def header_values(service: str) -> list[str]:
    """What ``OpenStack-API-Version`` may say (as keystoneauth and the clients send it)."""
    return [f"{service} {version}" for version in versions_of(service)]


def _version(
    value: str, accepted: list[str], well_formed: str, low: tuple[int, int], high: tuple[int, int]
) -> tuple[int, int]:
    """The version a header asks for. :raises InvalidRequest: it is malformed;
    :raises NotAcceptable: it is a version outside the range."""
    if value not in accepted:
        if re.fullmatch(well_formed, value) is None:
            raise InvalidRequest(f"Invalid API version request '{value}': use X.Y, e.g. {_text(low)}")
        raise NotAcceptable(
            f"Version {value} is not supported by the API."
            f" Minimum is {_text(low)} and maximum is {_text(high)}."
        )
    if value.endswith("latest"):
        return high
    major, minor = value.rsplit(" ", 1)[-1].split(".")
    return int(major), int(minor)


def requested_microversion(request: web.Request, service: str) -> tuple[int, int]:
    """The microversion a compute or volume request asks for (its lowest when it names none).

    ``OpenStack-API-Version`` must be exactly ``<service> <X.Y or latest>`` (``compute 2.16``)
    and the legacy header exactly ``<X.Y or latest>``: another version is 406, anything else 400.
    When both are given the standard one counts.
    """
    low, high, legacy_header = RANGES[service]
    wanted = None
    if legacy_header and legacy_header in request.headers:
        legacy = ", ".join(request.headers.getall(legacy_header))
        wanted = _version(legacy, versions_of(service), _WELL_FORMED, low, high)
    if "OpenStack-API-Version" in request.headers:
        value = ", ".join(request.headers.getall("OpenStack-API-Version"))
        wanted = _version(value, header_values(service), f"{service} {_WELL_FORMED}", low, high)
    return low if wanted is None else wanted


@web.middleware
async def microversion_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    service = service_of(request.path)
    if service not in RANGES or request.match_info.http_exception is not None:
        return await handler(request)  # not a route (404) or not its method (405): said first
    if is_legacy(request.path):
        request[MICROVERSION] = RANGES[service][0]
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


def is_legacy(path: str) -> bool:
    """Whether a path is Nova's legacy v2.0 (no microversions, none named in the answer)."""
    return path == LEGACY_BASE or path.startswith(f"{LEGACY_BASE}/")


def microversion(request: web.Request) -> tuple[int, int]:
    """The microversion this compute or volume request asked for (its minimum if none)."""
    return request.get(MICROVERSION) or RANGES[service_of(request.path)][0]


# -- the version documents ----------------------------------------------------------------------


class MediaType(Body):
    base: str
    type: str


class IdentityVersion(Body):
    """Keystone v3."""

    id: str
    status: str
    updated: Time
    links: list[Link]
    media_types: list[MediaType] = msgspec.field(name="media-types")


class IdentityVersionList(Body):
    values: list[IdentityVersion]


class IdentityVersions(Body):
    versions: IdentityVersionList


class IdentityVersionDocument(Body):
    version: IdentityVersion


class MicroversionedVersion(Body):
    """A version of a service with microversions: ``version`` is the highest, ``min_version`` the lowest."""

    id: str
    status: str
    version: str
    min_version: str
    updated: Time
    links: list[Link]
    media_types: list[MediaType] = msgspec.field(name="media-types")


class MicroversionedVersions(Body):
    versions: list[MicroversionedVersion]


class MicroversionedVersionDocument(Body):
    version: MicroversionedVersion


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _identity_v3(request: web.Request) -> IdentityVersion:
    return IdentityVersion(
        id="v3.14",
        status="stable",
        updated=UPDATED,
        links=[Link(rel="self", href=f"{_base(request)}/identity/v3/")],
        media_types=[MediaType(base="application/json", type="application/vnd.openstack.identity-v3+json")],
    )


def _microversioned(
    request: web.Request, service: str, version_id: str, path: str, media: str
) -> MicroversionedVersion:
    """The version document of a service with microversions: its range from ``RANGES``."""
    low, high, _ = RANGES[service]
    return MicroversionedVersion(
        id=version_id,
        status="CURRENT",
        version=_text(high),
        min_version=_text(low),
        updated=UPDATED,
        links=[Link(rel="self", href=f"{_base(request)}{path}/")],
        media_types=[MediaType(base="application/json", type=f"application/vnd.openstack.{media}")],
    )


def _compute_v20(request: web.Request) -> MicroversionedVersion:
    return MicroversionedVersion(
        id="v2.0",
        status="SUPPORTED",
        version="",
        min_version="",
        updated=LEGACY_UPDATED,
        links=[Link(rel="self", href=f"{_base(request)}{LEGACY_BASE}/")],
        media_types=[
            MediaType(base="application/json", type="application/vnd.openstack.compute+json;version=2")
        ],
    )


def _compute_v21(request: web.Request) -> MicroversionedVersion:
    return _microversioned(request, "compute", "v2.1", "/compute/v2.1", "compute+json;version=2.1")


def _volume_v3(request: web.Request) -> MicroversionedVersion:
    return _microversioned(request, "volume", "v3.0", "/volume/v3", "volume+json;version=3")


routes = Routes()
_CHOICES = "The versions of the API (300 Multiple Choices, as Keystone and Cinder answer)."


def _at(*paths: str, summary: str, replies: list[Reply]) -> Callable[[Handler], Handler]:
    """Declare one public handler at a root and its trailing-slash twin."""

    def register(handler: Handler) -> Handler:
        for path in paths:
            routes.get(path, summary, replies=replies, public=True)(handler)
        return handler

    return register


@_at(
    "/identity",
    "/identity/",
    summary="Identity API versions",
    replies=[Reply(300, IdentityVersions, _CHOICES)],
)
async def identity_versions(request: web.Request) -> web.Response:
    return json_response(
        IdentityVersions(versions=IdentityVersionList(values=[_identity_v3(request)])), status=300
    )


@_at(
    "/identity/v3",
    "/identity/v3/",
    summary="Identity API v3",
    replies=[Reply(200, IdentityVersionDocument, "The version.")],
)
async def identity_v3(request: web.Request) -> web.Response:
    return json_response(IdentityVersionDocument(version=_identity_v3(request)))


@_at(
    "/compute",
    "/compute/",
    summary="Compute API versions",
    replies=[Reply(200, MicroversionedVersions, "The versions of the API.")],
)
async def compute_versions(request: web.Request) -> web.Response:
    return json_response(MicroversionedVersions(versions=[_compute_v20(request), _compute_v21(request)]))


@_at(
    LEGACY_BASE,
    f"{LEGACY_BASE}/",
    summary="Compute API v2.0 (legacy)",
    replies=[Reply(200, MicroversionedVersionDocument, "The version (no microversions).")],
)
async def compute_v20(request: web.Request) -> web.Response:
    return json_response(MicroversionedVersionDocument(version=_compute_v20(request)))


@_at(
    "/compute/v2.1",
    "/compute/v2.1/",
    summary="Compute API v2.1",
    replies=[Reply(200, MicroversionedVersionDocument, "The version and its microversions.")],
)
async def compute_v21(request: web.Request) -> web.Response:
    return json_response(MicroversionedVersionDocument(version=_compute_v21(request)))


@_at(
    "/volume",
    "/volume/",
    summary="Volume API versions",
    replies=[Reply(300, MicroversionedVersions, _CHOICES)],
)
async def volume_versions(request: web.Request) -> web.Response:
    return json_response(MicroversionedVersions(versions=[_volume_v3(request)]), status=300)


@_at(
    "/volume/v3",
    "/volume/v3/",
    summary="Volume API v3",
    replies=[Reply(200, MicroversionedVersionDocument, "The version and its microversions.")],
)
async def volume_v3(request: web.Request) -> web.Response:
    return json_response(MicroversionedVersionDocument(version=_volume_v3(request)))


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
