"""Schemathesis hooks of the contract run (``deploy/contract.py`` loads them with
``SCHEMATHESIS_HOOKS``): point schema-valid requests at things that exist, keep what the run
itself needs, and one narrowed check.

**References.** A schema says what a request looks like, not which ids exist nor how values relate
to each other or to the clock: a server create naming a flavor, image, key pair or network that is
not there is refused with 400 (as Nova refuses it), and so is a page ``marker`` that names no
server or image (Nova, Glance), a subnet whose gateway or pools are not in its CIDR, whose CIDR has
host bits set or overlaps another subnet of the network (Neutron), a port asking for a fixed IP
that is not on its network, a host route to an address with host bits set, a subnet update's
gateway or pools outside its CIDR, a subnet pool's prefix with host bits set or lengths out of
order, a security group rule whose protocol, ports, remote CIDR and ethertype do not agree, a port
with groups and no port security, a router's extra route whose nexthop is on none of its subnets, a
gateway's or floating IP's address that is not on its network, a floating IP's fixed IP its port
does not hold (Neutron), an application credential expiring in the past (Keystone), or a resize
to the server's own flavor or a smaller disk, or an interface attach naming both a port and a
network or an address not on its network (Nova; the schema says the first, but schemathesis's
coverage phase draws it anyway). Drawn at random, those members
would make every valid request of the kind a "valid request rejected". So, in the *positive* cases
only (negative ones go as drawn), each such member is replaced with one that exists or fits
(``AIOSTACK_CONTRACT_REFS``, JSON, made by ``contract.references``), or dropped when it is optional
and nothing fitting exists (a port of one's own, a free fixed IP, an available volume: each is used
up by the first boot that names it). A server's ``description``, refused before 2.19, is left out of a
request that asks for an earlier microversion (evacuate's members: see ``_evacuate``). Nothing
else is changed, and every check still judges every answer.

**What the run needs is kept.** The run acts as the admin, and schemathesis learns real ids
from the answers (it lists users, projects, roles, networks, subnets) and reuses them in other
requests: left alone, it would delete or disable the admin user or project (revoking the run's
own token), revoke the admin's role, change the demo user's password, or delete the default
network and its subnet, the image or the key pair every server create names. So a request that
would delete or change one of those (``PROTECTED``: everything the identity and network services
hold before the run starts, the image and the key pair), or revoke the run's own token, is sent
to another id (``not-<id>``: a 404), as the protected image always was. Grants, memberships
and reads of them go as drawn.

**Checks narrowed.** ``content_type_conformance_or_empty`` and ``response_schema_conformance_or_empty``
replace schemathesis's checks of an answer's media type and body (the run excludes those): the
same checks, but an answer with no body passes where the document marks its status
``x-aiostack-or-empty`` (a server action's 202: a rebuild answers the server, every other
action nothing, as Nova's do; OpenAPI's ``content`` is what an answer may carry).
``use_after_free_but_after_a_server_delete`` replaces schemathesis's
``use_after_free`` (the run excludes that one): the same check, but for a read after ``DELETE
/compute/v2.1/servers/{server_id}``. Nova answers a server delete at once (204), and the server
is shown with task_state ``deleting`` until its node has removed it; openstacksdk, the openstack
CLI and Tempest poll for the 404. The gateway answers as Nova does, so a read right after that
delete finds the server, as it should; after every other delete, a read is still a 404.

**WebSocket handshakes.** Schemathesis's HTTP client (requests) does not speak WebSocket: a
schema-valid ``GET /ws`` is a real handshake, which the gateway answers 101 and the connection
becomes the event socket. Its client would send the next request on that connection; a response
hook closes a connection that switched protocols, so the next request opens a new one.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import schemathesis
from schemathesis.generation.modes import GenerationMode
from schemathesis.openapi.checks import UseAfterFree
from schemathesis.specs.openapi import checks

from gateway.versions import versions_of

# Glance's PATCH bodies are JSON in media types of their own, which schemathesis does not know as JSON
schemathesis.serializer.alias(
    ["application/openstack-images-v2.1-json-patch", "application/openstack-images-v2.0-json-patch"],
    "application/json",
)

REFS: dict[str, Any] = json.loads(os.environ.get("AIOSTACK_CONTRACT_REFS", "{}"))
KEPT: dict[str, list[str]] = REFS.get("kept", {})
SERVER_DELETE = "DELETE /compute/v2.1/servers/{server_id}"
EMPTY_TOO = "x-aiostack-or-empty"
"""``gateway.openapi.EMPTY_TOO`` (the hooks run in schemathesis's process, without aiostack's imports)."""
METADATA_ITEMS = (
    "/compute/v2.1/servers/{server_id}/metadata/{key}",
    "/volume/v3/{project_id}/volumes/{volume_id}/metadata/{key}",
    "/volume/v3/{project_id}/snapshots/{snapshot_id}/metadata/{key}",
)
"""Routes whose body names the one item the path names (else 400, as Nova and Cinder answer)."""
DEFAULT_FLAVORS = ("1", "2", "3", "4", "5")
"""``actors.conductor.flavors.DEFAULT_FLAVORS``' ids, smallest first."""
_SUBNETS = itertools.count()
"""Numbers the CIDRs no other subnet has, one for each positive subnet create (172.16.0.0/12 is no
one's here; ``count``'s ``next`` is atomic, as the run's workers are threads)."""


def _positive(case: Any) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode == GenerationMode.POSITIVE


def _server(server: dict[str, Any]) -> None:
    """A server create that names what exists: the image, a flavor, a key pair, the network, the
    project's ``default`` security group. Its volumes are dropped (a bootable, available volume is
    used up by the first boot naming it): one that booted from a volume boots from the image."""
    if isinstance(server.get("imageRef"), str) and server["imageRef"]:
        server["imageRef"] = REFS["image"]
    if "flavorRef" in server:
        server["flavorRef"] = REFS["flavor"]
    if isinstance(server.get("key_name"), str):
        server["key_name"] = REFS["keypair"]
    if isinstance(server.get("networks"), list):
        server["networks"] = [{"uuid": REFS["network"]} for _ in server["networks"]]
    if isinstance(server.get("security_groups"), list):
        server["security_groups"] = [{"name": "default"} for _ in server["security_groups"]]
    mappings = server.get("block_device_mapping_v2")
    if isinstance(mappings, list):
        kept = []
        for mapping in mappings:
            if isinstance(mapping, dict) and mapping.get("source_type") == "image":
                mapping["uuid"] = server.get("imageRef") or REFS["image"]
                kept.append(mapping)
        server["block_device_mapping_v2"] = kept
        if not kept and not server.get("imageRef"):  # it booted from a volume: from the image instead
            server["imageRef"] = REFS["image"]


def _bigger_flavor(server_id: str) -> str:
    """The default flavor next bigger than the server's (its disk too: a resize never shrinks one),
    asked of the gateway as the run; the tiny one for a server it does not show."""
    request = urllib.request.Request(
        f"{REFS['url']}/compute/v2.1/servers/{quote(server_id, safe='')}",
        headers={"X-Auth-Token": REFS["token"]},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            current = str(json.load(response)["server"]["flavor"]["id"])
    except (OSError, ValueError, KeyError):
        return "1"
    return (
        DEFAULT_FLAVORS[min(DEFAULT_FLAVORS.index(current) + 1, len(DEFAULT_FLAVORS) - 1)]
        if current in DEFAULT_FLAVORS
        else "1"
    )


def _subnet(subnet: dict[str, Any]) -> None:
    """A subnet create whose CIDR is one no subnet has, or, naming a subnet pool, the pool's next
    free prefix of its default length; its gateway and pools are then the defaults. Its host
    routes' destinations are written as networks (no host bits set), as a subnet update's."""
    if "subnetpool_id" in subnet:
        subnet.pop("cidr", None)
        subnet.pop("prefixlen", None)
        subnet.pop("gateway_ip", None)
        subnet.pop("allocation_pools", None)
    elif "cidr" in subnet:
        n = next(_SUBNETS)
        subnet["cidr"] = f"172.{16 + n // 256 % 16}.{n % 256}.0/24"
        subnet.pop("gateway_ip", None)
        subnet.pop("allocation_pools", None)
    _host_routes(subnet)


def _host_routes(subnet: dict[str, Any]) -> None:
    """Host routes to networks written as such (their host bits cleared), distinct (else dropped)."""
    routes = subnet.get("host_routes")
    if not isinstance(routes, list):
        return
    kept: list[Any] = []
    for route in routes:
        if isinstance(route, dict) and isinstance(route.get("destination"), str):
            route["destination"] = str(ipaddress.ip_network(route["destination"], strict=False))
        if route not in kept:
            kept.append(route)
    subnet["host_routes"] = kept


def _security_group_rule(rule: dict[str, Any]) -> None:
    """A rule Neutron takes: a protocol drawn is TCP (a name, its ports and its ethertype must
    agree, and the ports be in order), without ports; a remote CIDR drawn is a network of the
    rule's ethertype, and then no remote group."""
    rule.pop("port_range_min", None)
    rule.pop("port_range_max", None)
    if rule.get("protocol") is not None:
        rule["protocol"] = "tcp"
    if rule.get("remote_ip_prefix") is not None:
        rule["remote_ip_prefix"] = "2001:db8::/32" if rule.get("ethertype") == "IPv6" else "10.0.0.0/8"
        rule.pop("remote_group_id", None)


def _subnetpool(pool: dict[str, Any]) -> None:
    """A subnet pool's prefixes written as networks (no host bits set), its lengths the defaults
    (drawn at random, they are rarely ordered min <= default <= max)."""
    if isinstance(pool.get("prefixes"), list):
        pool["prefixes"] = [
            str(ipaddress.ip_network(prefix, strict=False)) if isinstance(prefix, str) else prefix
            for prefix in pool["prefixes"]
        ]
    for length in ("default_prefixlen", "min_prefixlen", "max_prefixlen"):
        pool.pop(length, None)


def _members(body: Any, key: str) -> list[dict[str, Any]]:
    """The resources a create body asks for: the one under ``key`` or those under its plural."""
    one = _member(body, key)
    many = body.get(f"{key}s") if isinstance(body, dict) else None
    return [one] if one is not None else [item for item in many or [] if isinstance(item, dict)]


NO_SERVER = "00000000-0000-4000-8000-00000000e7ac"
EVACUATE_VERSION = "compute 2.14"
MIGRATE_LIVE_VERSION = "compute 2.25"
DESCRIPTION_SINCE = (2, 19)
VERSION_HEADERS = frozenset({"openstack-api-version", "x-openstack-nova-api-version"})


def _at_version(case: Any, version: str) -> None:
    """Send the case at ``version`` (``OpenStack-API-Version``), whatever version headers it drew."""
    headers = {
        name: value
        for name, value in (case.headers if isinstance(case.headers, dict) else {}).items()
        if name.lower() not in VERSION_HEADERS
    }
    case.headers = {**headers, "OpenStack-API-Version": version}


def _before_description(case: Any) -> bool:
    """Whether the compute microversion a case's headers ask for (2.1 when none) is one before 2.19."""
    headers = {name.lower(): value for name, value in (case.headers or {}).items()}
    standard = headers.get("openstack-api-version")
    asked = (
        standard.removeprefix("compute ")
        if isinstance(standard, str)
        else headers.get("x-openstack-nova-api-version")
    )
    if asked is None:
        return True
    if asked not in versions_of("compute") or asked == "latest":
        return False
    major, minor = asked.split(".")
    return (int(major), int(minor)) < DESCRIPTION_SINCE


def _described(case: Any, member: dict[str, Any] | None) -> None:
    """A server's ``description`` is refused before 2.19, as Nova's schemas refuse it, which a
    schema of the latest microversion cannot say: a positive request asking for an earlier one
    leaves its description out."""
    if member is not None and _before_description(case):
        member.pop("description", None)


def _evacuate(case: Any, evacuate: dict[str, Any]) -> None:
    """Every server of the run is on a host that is up, which Nova refuses to evacuate (400
    "Compute service of ... is still in use."), as it refuses ``onSharedStorage`` from 2.14 and
    requires it before (400): neither can a schema say. A positive evacuate names a server that
    does not exist (404), at 2.14 with a body 2.14 takes."""
    case.path_parameters["server_id"] = NO_SERVER
    _at_version(case, EVACUATE_VERSION)
    evacuate.pop("onSharedStorage", None)


def _migrate_live(case: Any, migrate: dict[str, Any]) -> None:
    """``os-migrateLive``'s body changed at 2.25 (``block_migration`` may be ``auto``,
    ``disk_over_commit`` is gone; before, it is required and ``block_migration`` a boolean), which
    a schema of the latest microversion cannot say: a positive one is sent at 2.25, without
    ``disk_over_commit``."""
    _at_version(case, MIGRATE_LIVE_VERSION)
    migrate.pop("disk_over_commit", None)


def _member(body: Any, key: str) -> dict[str, Any] | None:
    member = body.get(key) if isinstance(body, dict) else None
    return member if isinstance(member, dict) else None


IDENTITY = "/identity/v3"
NETWORK = "/network/v2.0"
PROTECTED: dict[tuple[str, str], str] = {
    ("/image/v2/images/{image_id}", "image_id"): "image",
    ("/compute/v2.1/images/{image_id}", "image_id"): "image",
    ("/compute/v2.1/os-keypairs/{name}", "name"): "keypair",
    (f"{IDENTITY}/users/{{user_id}}", "user_id"): "users",
    (f"{IDENTITY}/projects/{{project_id}}", "project_id"): "projects",
    (f"{IDENTITY}/roles/{{role_id}}", "role_id"): "roles",
    (f"{IDENTITY}/projects/{{project_id}}/users/{{user_id}}/roles/{{role_id}}", "user_id"): "users",
    (f"{NETWORK}/networks/{{network_id}}", "network_id"): "networks",
    (f"{NETWORK}/subnets/{{subnet_id}}", "subnet_id"): "subnets",
}
"""Path parameters that, in a DELETE, PATCH or PUT of their path, may not name what the run
needs (by id or name): the image, the key pair, and what ``KEPT`` holds of their kind."""
CHANGES = frozenset({"DELETE", "PATCH", "PUT"})
GRANTS = frozenset({"PUT"})
"""Changes that take nothing away: a role granted (to a user the run needs) goes as drawn."""


def _kept(kind: str) -> set[str]:
    return set(KEPT.get(kind, [])) if kind in KEPT else {REFS.get(kind, "")}


def _keep(method: str, path: str, case: Any) -> None:
    """Send a request that would delete or change what the run needs to another id."""
    parameters = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    for (template, name), kind in PROTECTED.items():
        if path != template or method not in CHANGES or name not in parameters:
            continue
        if method in GRANTS and template.endswith("/roles/{role_id}"):
            continue
        if parameters[name] in _kept(kind):
            parameters[name] = f"not-{parameters[name]}"
    headers = case.headers if isinstance(case.headers, dict) else {}
    own_token = headers.get("X-Subject-Token") == REFS["token"]
    if method == "DELETE" and path == f"{IDENTITY}/auth/tokens" and own_token:
        headers["X-Subject-Token"] = "not-the-run-s-token"


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    method, path = case.method.upper(), case.operation.path
    _keep(method, path, case)
    if not _positive(case):
        return case
    if method == "GET" and path in (
        "/compute/v2.1/servers",
        "/compute/v2.1/servers/detail",
        "/compute/v2.1/images",
        "/compute/v2.1/images/detail",
        "/compute/v2.1/flavors",
        "/compute/v2.1/flavors/detail",
        "/image/v2/images",
    ):
        if isinstance(case.query, dict):
            case.query.pop("marker", None)
    elif method == "POST" and path == "/compute/v2.1/servers":
        server = _member(case.body, "server")
        if server is not None:
            _server(server)
        _described(case, server)
    elif method == "PUT" and path == "/compute/v2.1/servers/{server_id}":
        _described(case, _member(case.body, "server"))
    elif method == "POST" and path == "/compute/v2.1/os-keypairs":
        keypair = _member(case.body, "keypair")
        if keypair is not None and keypair.get("type") == "x509":
            keypair.pop("public_key", None)  # a certificate is made (an SSH key is no certificate)
        elif keypair is not None and "public_key" in keypair:
            keypair["public_key"] = REFS["public_key"]
    elif method == "PUT" and path in METADATA_ITEMS and isinstance(case.path_parameters, dict):
        item = _member(case.body, "meta")
        key = case.path_parameters.get("key")
        if item is not None and isinstance(key, str):  # the path's key as the server reads it, decoded
            case.body = {"meta": {unquote(key): next(iter(item.values()), "")}}
    elif method == "POST" and path == "/compute/v2.1/servers/{server_id}/action":
        rebuild = _member(case.body, "rebuild")
        if rebuild is not None:
            rebuild["imageRef"] = REFS["image"]
        _described(case, rebuild)
        resize = _member(case.body, "resize")
        if resize is not None and isinstance(case.path_parameters, dict):
            resize["flavorRef"] = _bigger_flavor(str(case.path_parameters.get("server_id", "")))
        evacuate = _member(case.body, "evacuate")
        if evacuate is not None and isinstance(case.path_parameters, dict):
            _evacuate(case, evacuate)
        migrate = _member(case.body, "os-migrateLive")
        if migrate is not None:
            _migrate_live(case, migrate)
    elif method == "POST" and path == "/compute/v2.1/servers/{server_id}/os-interface":
        attachment = _member(case.body, "interfaceAttachment")
        if attachment is not None:  # one of a port and a network; an address on it is not drawn
            attachment.pop("fixed_ips", None)
            if attachment.get("net_id") is not None:
                attachment.pop("port_id", None)
    elif method == "POST" and path == f"{NETWORK}/subnets":
        for subnet in _members(case.body, "subnet"):
            _subnet(subnet)
    elif method == "PUT" and path == f"{NETWORK}/subnets/{{subnet_id}}":
        subnet = _member(case.body, "subnet")
        if subnet is not None:  # a gateway and pools that fit a subnet's CIDR are not drawn
            subnet.pop("gateway_ip", None)
            subnet.pop("allocation_pools", None)
            _host_routes(subnet)
    elif method == "POST" and path == f"{NETWORK}/subnetpools":
        pool = _member(case.body, "subnetpool")
        if pool is not None:
            _subnetpool(pool)
    elif method == "PUT" and path == f"{NETWORK}/subnetpools/{{subnetpool_id}}":
        pool = _member(case.body, "subnetpool")
        if pool is not None:  # new prefixes holding every old one are not drawn
            pool.pop("prefixes", None)
            _subnetpool(pool)
    elif method in ("POST", "PUT") and path in (f"{NETWORK}/ports", f"{NETWORK}/ports/{{port_id}}"):
        for port in _members(case.body, "port"):
            port.pop("fixed_ips", None)
            if port.get("port_security_enabled") is False:  # a port without port security has no group
                port.pop("security_groups", None)
    elif method in ("POST", "PUT") and path in (f"{NETWORK}/routers", f"{NETWORK}/routers/{{router_id}}"):
        router = _member(case.body, "router")
        if router is not None:  # nexthops on the router's subnets, addresses of its network: not drawn
            router.pop("routes", None)
            gateway = router.get("external_gateway_info")
            if isinstance(gateway, dict):  # on the external network (any other is Neutron's 400)
                gateway.pop("external_fixed_ips", None)
                gateway["network_id"] = REFS["external_network"]
    elif method in ("POST", "PUT") and path in (
        f"{NETWORK}/floatingips",
        f"{NETWORK}/floatingips/{{floatingip_id}}",
    ):
        floating = _member(case.body, "floatingip")
        if floating is not None:  # an address of the external network, a fixed IP the port holds
            floating.pop("floating_ip_address", None)
            floating.pop("fixed_ip_address", None)
    elif method == "POST" and path == f"{NETWORK}/security-group-rules":
        rule = _member(case.body, "security_group_rule")
        if rule is not None:
            _security_group_rule(rule)
    elif method == "POST" and path == f"{IDENTITY}/users/{{user_id}}/application_credentials":
        credential = _member(case.body, "application_credential")
        if credential is not None and credential.get("expires_at") is not None:
            credential["expires_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return case


def _empty_by_design(response: Any, case: Any) -> bool:
    """An answer with no body whose status the document marks as possibly bodiless."""
    documented = case.operation.definition.raw.get("responses", {}).get(str(response.status_code), {})
    return not response.content and bool(documented.get(EMPTY_TOO))


@schemathesis.check
def content_type_conformance_or_empty(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's ``content_type_conformance``, but for an answer that may have no body."""
    return None if _empty_by_design(response, case) else checks.content_type_conformance(ctx, response, case)


@schemathesis.check
def response_schema_conformance_or_empty(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's ``response_schema_conformance``, but for an answer that may have no body."""
    if _empty_by_design(response, case):
        return None
    return checks.response_schema_conformance(ctx, response, case)


@schemathesis.check
def use_after_free_but_after_a_server_delete(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's ``use_after_free``, but for a read after ``DELETE
    /compute/v2.1/servers/{server_id}``: that delete is answered once the conductor has taken it,
    as Nova answers, and the server is shown (task_state ``deleting``) until its node has
    removed it (see the module's docstring)."""
    try:
        return checks.use_after_free(ctx, response, case)
    except UseAfterFree as failure:
        if failure.operation == SERVER_DELETE:
            return None
        raise


def _close_if_switched(response: Any, *args: Any, **kwargs: Any) -> Any:
    """A requests response hook: a connection that became a WebSocket (101) is closed, not reused."""
    if response.status_code == 101 and response.raw is not None:
        connection = getattr(response.raw, "connection", None) or getattr(response.raw, "_connection", None)
        if connection is not None:
            connection.close()
    return response


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.path == "/ws":
        kwargs.setdefault("hooks", {}).setdefault("response", []).append(_close_if_switched)
