"""The gateway's OpenAPI 3.1 document, served at ``GET /openapi.json`` (no token needed).

Paths and methods come from the app's router, so no route can be missing; what each
operation takes and answers comes from ``OPERATIONS``, a table keyed by (method, path)
written from the handlers' real shapes. A route without an entry gets a generic one.
Response objects built from fixed field sets are closed (``additionalProperties: false``):
tests/gateway/test_openapi.py checks real responses against them, so a field added or
dropped without the document following fails there. Error bodies follow the service of the
path, as ``gateway.app.error_body`` makes them.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

from aiohttp import web

from actors.image import CONTAINER_FORMATS, DISK_FORMATS, STATUSES, VISIBILITIES
from gateway.app import error_body, json_response, public, service_of
from gateway.compute import IGNORED_CREATE_FIELDS
from gateway.network import RESOURCES, Resource
from gateway.versions import RANGES

Schema = dict[str, Any]
PATH = "/openapi.json"

STRING: Schema = {"type": "string"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
NULLABLE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
STRINGS: Schema = {"type": "array", "items": STRING}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def closed(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with exactly these members: all of ``required``, any of ``optional``."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
        "additionalProperties": False,
    }


def members(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these members, others allowed (a request body the gateway reads in part)."""
    return {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required)}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def response(description: str, schema: Schema | None = None, **headers: Schema) -> Schema:
    """A response: a JSON body when ``schema`` is given, the request id and ``headers`` always."""
    answer: Schema = {
        "description": description,
        "headers": {"x-openstack-request-id": {"$ref": "#/components/headers/RequestId"}, **headers},
    }
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return answer


def header(description: str) -> Schema:
    return {"description": description, "required": True, "schema": STRING}


def request_body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def query(name: str, description: str, schema: Schema = STRING) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def operation(
    summary: str,
    responses: dict[str, Schema],
    *,
    description: str | None = None,
    body: Schema | None = None,
    parameters: tuple[Schema, ...] = (),
) -> Schema:
    """One table entry: the operation object less what the router gives (id, path parameters)."""
    entry: Schema = {"summary": summary, "responses": responses}
    if description:
        entry["description"] = description
    if body is not None:
        entry["requestBody"] = body
    if parameters:
        entry["parameters"] = list(parameters)
    return entry


NO_CONTENT = {"204": response("Done; no body.")}
ACCEPTED = {"202": response("Accepted; no body.")}

# -- schemas ----------------------------------------------------------------------------------

_LINK = closed({"rel": STRING, "href": STRING})
_COMPUTE_ERROR_NAMES = sorted(
    {name for status in range(400, 600) for name in error_body("compute", status, "")}
)
_DOMAIN = closed({"id": STRING, "name": STRING})
_ID_LINKS = closed({"id": STRING, "links": ref("Links")})
_IDENTITY_LINKS = closed({"self": STRING})
_MEDIA_TYPES = array(closed({"base": STRING, "type": STRING}))
_ADMIN_ATTRIBUTES = {
    f"OS-EXT-SRV-ATTR:{name}": {**schema, "description": f"Admins{since}."}
    for name, schema, since in (
        ("host", NULLABLE_STRING, ""),
        ("hypervisor_hostname", NULLABLE_STRING, ""),
        ("instance_name", STRING, ""),
        ("reservation_id", STRING, ", 2.3 and later"),
        ("launch_index", INTEGER, ", 2.3 and later"),
        ("hostname", STRING, ", 2.3 and later"),
        ("kernel_id", STRING, ", 2.3 and later"),
        ("ramdisk_id", STRING, ", 2.3 and later"),
        ("root_device_name", STRING, ", 2.3 and later"),
        ("user_data", NULLABLE_STRING, ", 2.3 and later"),
    )
}
_NETWORK_FIELD_TYPES: dict[str, Schema] = {
    "name": STRING,
    "shared": BOOLEAN,
    "admin_state_up": BOOLEAN,
    "mtu": {"type": "integer", "minimum": 68, "maximum": 9000},
    "network_id": STRING,
    "cidr": STRING,
    "gateway_ip": NULLABLE_STRING,
    "allocation_pools": array(ref("AllocationPool")),
    "ip_version": {"const": 4},
    "enable_dhcp": BOOLEAN,
    "dns_nameservers": STRINGS,
    "mac_address": NULLABLE_STRING,
    "fixed_ips": array(members({}, {"subnet_id": STRING, "ip_address": STRING})),
    "device_id": STRING,
    "device_owner": STRING,
    "binding:host_id": STRING,
    "description": STRING,
}
_NETWORK_CREATE_REQUIRED = {"network": (), "subnet": ("network_id", "cidr"), "port": ("network_id",)}
_NEUTRON_COMMON = {
    "id": STRING,
    "name": STRING,
    "project_id": STRING,
    "tenant_id": STRING,
    "created_at": TIME,
    "updated_at": TIME,
    "description": STRING,
    "revision_number": INTEGER,
    "tags": STRINGS,
}

SCHEMAS: dict[str, Schema] = {
    "Link": _LINK,
    "Links": array(ref("Link")),
    "ComputeError": {
        "description": "Nova's (and Cinder's) error body: one member named for the status "
        "(itemNotFound, badRequest, ...).",
        "type": "object",
        "propertyNames": {"enum": _COMPUTE_ERROR_NAMES},
        "additionalProperties": closed({"code": INTEGER, "message": STRING}),
        "minProperties": 1,
        "maxProperties": 1,
    },
    "NeutronError": closed({"NeutronError": closed({"type": STRING, "message": STRING, "detail": STRING})}),
    "KeystoneError": closed({"error": closed({"code": INTEGER, "title": STRING, "message": STRING})}),
    "Versions": closed({"versions": array(closed({"id": STRING, "status": STRING, "links": ref("Links")}))}),
    "IdentityVersion": closed(
        {"id": STRING, "status": STRING, "updated": TIME, "links": ref("Links"), "media-types": _MEDIA_TYPES}
    ),
    "MicroversionedVersion": closed(
        {
            "id": STRING,
            "status": STRING,
            "version": {**STRING, "description": "The highest microversion."},
            "min_version": {**STRING, "description": "The lowest microversion."},
            "updated": TIME,
            "links": ref("Links"),
            "media-types": _MEDIA_TYPES,
        }
    ),
    # identity
    "AuthRequest": members(
        {
            "auth": members(
                {
                    "identity": members(
                        {
                            "methods": {
                                "type": "array",
                                "items": {"enum": ["password", "token", "application_credential"]},
                                "minItems": 1,
                            }
                        },
                        {
                            "password": members(
                                {
                                    "user": members(
                                        {"password": STRING},
                                        {"id": STRING, "name": STRING, "domain": ref("DomainRef")},
                                    )
                                }
                            ),
                            "token": members({"id": STRING}),
                            "application_credential": members({"id": STRING, "secret": STRING}),
                        },
                    )
                },
                {
                    "scope": {
                        "oneOf": [
                            {"const": "unscoped"},
                            members(
                                {
                                    "project": members(
                                        {}, {"id": STRING, "name": STRING, "domain": ref("DomainRef")}
                                    )
                                }
                            ),
                        ]
                    }
                },
            )
        }
    ),
    "DomainRef": members({}, {"id": STRING, "name": STRING}),
    "Token": closed(
        {
            "methods": STRINGS,
            "user": closed(
                {"id": STRING, "name": STRING, "domain": _DOMAIN, "password_expires_at": {"type": "null"}}
            ),
            "audit_ids": STRINGS,
            "issued_at": TIME,
            "expires_at": TIME,
        },
        {
            "project": closed({"id": STRING, "name": STRING, "domain": _DOMAIN}),
            "is_domain": BOOLEAN,
            "roles": array(closed({"id": STRING, "name": STRING})),
            "catalog": array(ref("CatalogEntry")),
            "application_credential": closed({"id": STRING, "restricted": BOOLEAN}, {"name": STRING}),
        },
    ),
    "CatalogEntry": closed(
        {
            "id": STRING,
            "type": STRING,
            "name": STRING,
            "endpoints": array(
                closed(
                    {
                        "id": STRING,
                        "interface": {"enum": ["public", "internal", "admin"]},
                        "region": STRING,
                        "region_id": STRING,
                        "url": STRING,
                    }
                )
            ),
        }
    ),
    "CollectionLinks": closed({"self": STRING, "next": {"type": "null"}, "previous": {"type": "null"}}),
    "Project": closed(
        {
            "id": STRING,
            "name": STRING,
            "description": STRING,
            "domain_id": STRING,
            "enabled": BOOLEAN,
            "parent_id": STRING,
            "is_domain": {"const": False},
            "tags": STRINGS,
            "options": {"type": "object"},
            "links": _IDENTITY_LINKS,
        }
    ),
    "User": closed(
        {
            "id": STRING,
            "name": STRING,
            "description": STRING,
            "domain_id": STRING,
            "enabled": BOOLEAN,
            "password_expires_at": {"type": "null"},
            "options": {"type": "object"},
            "links": _IDENTITY_LINKS,
        },
        {"default_project_id": STRING},
    ),
    "Group": closed(
        {"id": STRING, "name": STRING, "description": STRING, "domain_id": STRING, "links": _IDENTITY_LINKS}
    ),
    "Role": closed(
        {
            "id": STRING,
            "name": STRING,
            "description": STRING,
            "domain_id": {"type": "null"},
            "options": {"type": "object"},
            "links": _IDENTITY_LINKS,
        }
    ),
    # compute
    "ServerCreateRequest": members(
        {
            "server": closed(
                {"name": STRING, "imageRef": STRING, "flavorRef": {"type": ["string", "integer"]}},
                {
                    "networks": {
                        "description": "auto: the project's network or the shared default; none: no port.",
                        "oneOf": [
                            {"enum": ["auto", "none"]},
                            array(
                                closed({}, {"uuid": STRING, "port": STRING, "fixed_ip": STRING}),
                            ),
                        ],
                    },
                    "metadata": STRING_MAP,
                    "key_name": NULLABLE_STRING,
                    "user_data": NULLABLE_STRING,
                    "block_device_mapping_v2": {
                        "description": "Existing volumes attached at boot (boot_index -1 or none).",
                        "type": "array",
                        "items": members(
                            {"source_type": {"const": "volume"}, "uuid": STRING},
                            {
                                "destination_type": {"const": "volume"},
                                "boot_index": {"enum": [None, -1, "-1", "none"]},
                                "device_name": NULLABLE_STRING,
                            },
                        ),
                    },
                    **{name: {"description": "Accepted and ignored."} for name in IGNORED_CREATE_FIELDS},
                },
            )
        }
    ),
    "ServerCreated": closed(
        {
            "server": closed(
                {
                    "id": STRING,
                    "links": ref("Links"),
                    "OS-DCF:diskConfig": {"const": "MANUAL"},
                    "security_groups": array(closed({"name": STRING})),
                    "adminPass": STRING,
                }
            )
        }
    ),
    "ServerSummary": closed({"id": STRING, "name": STRING, "links": ref("Links")}),
    "Server": closed(
        {
            "id": STRING,
            "name": STRING,
            "links": ref("Links"),
            "status": STRING,
            "tenant_id": STRING,
            "user_id": STRING,
            "metadata": STRING_MAP,
            "hostId": STRING,
            "image": _ID_LINKS,
            "flavor": _ID_LINKS,
            "created": TIME,
            "updated": TIME,
            "addresses": {"type": "object", "additionalProperties": array(ref("Address"))},
            "accessIPv4": STRING,
            "accessIPv6": STRING,
            "key_name": NULLABLE_STRING,
            "progress": INTEGER,
            "config_drive": STRING,
            "OS-DCF:diskConfig": STRING,
            "OS-EXT-AZ:availability_zone": STRING,
            "OS-EXT-STS:vm_state": STRING,
            "OS-EXT-STS:task_state": NULLABLE_STRING,
            "OS-EXT-STS:power_state": INTEGER,
            "OS-SRV-USG:launched_at": NULLABLE_TIME,
            "OS-SRV-USG:terminated_at": NULLABLE_TIME,
            "security_groups": array(closed({"name": STRING})),
            "os-extended-volumes:volumes_attached": array(closed({"id": STRING})),
        },
        {
            **_ADMIN_ATTRIBUTES,
            "locked": {"const": False, "description": "2.9 and later."},
            "host_status": {**STRING, "description": "Admins, 2.16 and later."},
            "fault": closed({"code": INTEGER, "message": STRING, "created": TIME}),
        },
    ),
    "Address": closed(
        {
            "addr": STRING,
            "version": {"enum": [4, 6]},
            "OS-EXT-IPS:type": {"enum": ["fixed", "floating"]},
            "OS-EXT-IPS-MAC:mac_addr": STRING,
        }
    ),
    "ServerAction": {
        "description": "Exactly one action.",
        "oneOf": [
            closed({"os-stop": {}}),
            closed({"os-start": {}}),
            closed({"reboot": members({"type": {"enum": ["SOFT", "HARD"]}})}),
            closed({"os-getConsoleOutput": members({}, {"length": {"type": ["integer", "string", "null"]}})}),
        ],
    },
    "VolumeAttachment": closed({"id": STRING, "volumeId": STRING, "serverId": STRING, "device": STRING}),
    "Flavor": closed({"id": STRING, "name": STRING, "links": ref("Links")}),
    "FlavorDetail": closed(
        {
            "id": STRING,
            "name": STRING,
            "links": ref("Links"),
            "vcpus": INTEGER,
            "ram": INTEGER,
            "disk": INTEGER,
            "OS-FLV-EXT-DATA:ephemeral": INTEGER,
            "swap": {"description": 'MiB, or "" for none.', "oneOf": [INTEGER, {"const": ""}]},
            "rxtx_factor": {"type": "number"},
            "os-flavor-access:is_public": BOOLEAN,
            "OS-FLV-DISABLED:disabled": BOOLEAN,
        }
    ),
    # image
    "Image": {
        **closed(
            {
                "id": STRING,
                "name": STRING,
                "status": {"enum": list(STATUSES)},
                "visibility": {"enum": list(VISIBILITIES)},
                "protected": BOOLEAN,
                "checksum": NULLABLE_STRING,
                "os_hash_algo": NULLABLE_STRING,
                "os_hash_value": NULLABLE_STRING,
                "owner": NULLABLE_STRING,
                "size": {"type": ["integer", "null"]},
                "virtual_size": {"type": ["integer", "null"]},
                "min_disk": INTEGER,
                "min_ram": INTEGER,
                "disk_format": {"enum": list(DISK_FORMATS)},
                "container_format": {"enum": list(CONTAINER_FORMATS)},
                "created_at": TIME,
                "updated_at": TIME,
                "tags": STRINGS,
                "self": STRING,
                "file": STRING,
                "schema": STRING,
            }
        ),
        "description": "Extra properties are top-level string members.",
        "additionalProperties": STRING,
    },
    "ImageCreateRequest": {
        "description": "Any other member (not a read-only one: 403) is an extra string property.",
        "type": "object",
        "properties": {
            "name": STRING,
            "id": {"type": "string", "format": "uuid"},
            "disk_format": {"enum": list(DISK_FORMATS)},
            "container_format": {"enum": list(CONTAINER_FORMATS)},
            "visibility": {"enum": list(VISIBILITIES)},
            "min_disk": {"type": "integer", "minimum": 0},
            "min_ram": {"type": "integer", "minimum": 0},
            "protected": BOOLEAN,
            "tags": STRINGS,
        },
        "required": ["name"],
        "additionalProperties": STRING,
    },
    "ImageList": closed(
        {"images": array(ref("Image")), "schema": STRING, "first": STRING},
        {"next": {**STRING, "description": "Present when the page is full."}},
    ),
    # network
    "AllocationPool": closed({"start": STRING, "end": STRING}),
    "Network": closed(
        {
            **_NEUTRON_COMMON,
            "shared": BOOLEAN,
            "status": STRING,
            "admin_state_up": BOOLEAN,
            "mtu": INTEGER,
            "router:external": BOOLEAN,
            "subnets": STRINGS,
        }
    ),
    "Subnet": closed(
        {
            **_NEUTRON_COMMON,
            "network_id": STRING,
            "cidr": STRING,
            "ip_version": {"const": 4},
            "gateway_ip": STRING,
            "allocation_pools": array(ref("AllocationPool")),
            "enable_dhcp": BOOLEAN,
            "dns_nameservers": STRINGS,
            "host_routes": array(closed({"destination": STRING, "nexthop": STRING})),
        }
    ),
    "Port": closed(
        {
            **_NEUTRON_COMMON,
            "network_id": STRING,
            "mac_address": STRING,
            "fixed_ips": array(closed({"subnet_id": STRING, "ip_address": STRING})),
            "device_id": STRING,
            "device_owner": STRING,
            "status": {"enum": ["ACTIVE", "DOWN"]},
            "admin_state_up": BOOLEAN,
            "binding:host_id": STRING,
            "binding:vif_type": {"enum": ["bridge", "user", "unbound", "binding_failed"]},
            "binding:vif_details": {"type": "object"},
            "binding:vnic_type": {"const": "normal"},
            "binding:profile": {"type": "object"},
            "security_groups": STRINGS,
        }
    ),
    # volume
    "VolumeSummary": closed({"id": STRING, "name": STRING, "links": ref("Links")}),
    "Volume": closed(
        {
            "id": STRING,
            "name": STRING,
            "description": STRING,
            "size": INTEGER,
            "status": STRING,
            "user_id": NULLABLE_STRING,
            "availability_zone": STRING,
            "bootable": {"enum": ["true", "false"]},
            "encrypted": BOOLEAN,
            "multiattach": BOOLEAN,
            "volume_type": STRING,
            "attachments": array(
                closed(
                    {
                        "id": {**STRING, "description": "The volume's id, as in Cinder."},
                        "attachment_id": STRING,
                        "volume_id": STRING,
                        "server_id": STRING,
                        "host_name": NULLABLE_STRING,
                        "device": NULLABLE_STRING,
                        "attached_at": NULLABLE_TIME,
                    }
                )
            ),
            "metadata": STRING_MAP,
            "snapshot_id": NULLABLE_STRING,
            "source_volid": NULLABLE_STRING,
            "created_at": TIME,
            "updated_at": TIME,
            "os-vol-tenant-attr:tenant_id": NULLABLE_STRING,
            "links": ref("Links"),
        },
        {"fault": {**STRING, "description": "What went wrong with the volume's file."}},
    ),
    "VolumeCreateRequest": members(
        {
            "volume": members(
                {"size": {"type": "integer", "minimum": 1, "description": "GiB."}},
                {"name": STRING, "description": STRING, "metadata": STRING_MAP},
            )
        }
    ),
    "VolumeUpdateRequest": members({"volume": members({}, {"name": STRING, "description": STRING})}),
}

# -- operations -------------------------------------------------------------------------------

V3 = "/identity/v3"
COMPUTE = "/compute/v2.1"
IMAGES = "/image/v2/images"
NETWORK = "/network/v2.0"
VOLUMES = "/volume/v3/{project_id}/volumes"

_TOKEN = response(
    "The token document; the token itself is the X-Subject-Token header.",
    closed({"token": ref("Token")}),
    **{"X-Subject-Token": header("The token.")},
)
_NOCATALOG = query("nocatalog", "Leave the service catalog out of the token document.")
_SUBJECT = {"name": "X-Subject-Token", "in": "header", "required": True, "schema": STRING}
_SERVER_FILTERS = (
    query("name", "Servers of this name."),
    query("status", "Servers in this status (ACTIVE, SHUTOFF, ...)."),
    query("marker", "The id of the last server of the previous page."),
    query("limit", "At most this many servers.", INTEGER),
    query("all_tenants", "Admins: every project's servers."),
)
_VOLUME_FILTERS = (
    query("name", "Volumes of this name."),
    query("status", "Volumes in this status."),
    query("all_tenants", "Admins: every project's volumes."),
)


def _identity_crud(kind: str, fields: dict[str, Schema]) -> dict[tuple[str, str], Schema]:
    """Keystone's list, create, show, update (PATCH) and delete of one kind."""
    title, plural = kind.capitalize(), f"{kind}s"
    one = closed({kind: ref(title)})
    request = request_body(members({kind: members({}, fields)}))
    return {
        ("GET", f"{V3}/{plural}"): operation(
            f"List {plural} (admin)",
            {
                "200": response(
                    f"The {plural}.", closed({plural: array(ref(title)), "links": ref("CollectionLinks")})
                )
            },
            parameters=(query("name", f"{title}s of this name."),),
        ),
        ("POST", f"{V3}/{plural}"): operation(
            f"Create a {kind} (admin)", {"201": response(f"The {kind}.", one)}, body=request
        ),
        ("GET", f"{V3}/{plural}/{{{kind}_id}}"): operation(
            f"Show a {kind} (admin)", {"200": response(f"The {kind}.", one)}
        ),
        ("PATCH", f"{V3}/{plural}/{{{kind}_id}}"): operation(
            f"Update a {kind} (admin)", {"200": response(f"The {kind}.", one)}, body=request
        ),
        ("DELETE", f"{V3}/{plural}/{{{kind}_id}}"): operation(f"Delete a {kind} (admin)", NO_CONTENT),
    }


def _neutron(resource: Resource) -> dict[tuple[str, str], Schema]:
    """Neutron's list, create, show, update (if it has one) and delete of one collection.

    Request members are the ones the gateway takes (others are a 400); ``fields`` trims list items.
    """
    singular, plural, create, update = resource.singular, resource.plural, resource.create, resource.update
    title, path = singular.capitalize(), f"{NETWORK}/{plural}"
    one = closed({singular: ref(title)})
    required = _NETWORK_CREATE_REQUIRED[singular]
    creatable = {name: _NETWORK_FIELD_TYPES[name] for name in create}
    partial = {**SCHEMAS[title], "required": []}
    entries = {
        ("GET", path): operation(
            f"List {plural}",
            {"200": response(f"The {plural} the project sees.", closed({plural: array(partial)}))},
            description="Any scalar field of the resource filters (repeat it for any of several values).",
            parameters=(query("fields", "Show only these fields (repeatable)."),),
        ),
        ("POST", path): operation(
            f"Create a {singular}",
            {"201": response(f"The {singular}.", one)},
            body=request_body(
                closed(
                    {
                        singular: closed(
                            {name: creatable[name] for name in required},
                            {name: schema for name, schema in creatable.items() if name not in required},
                        )
                    }
                )
            ),
        ),
        ("GET", f"{path}/{{id}}"): operation(
            f"Show a {singular}", {"200": response(f"The {singular}.", one)}
        ),
        ("DELETE", f"{path}/{{id}}"): operation(f"Delete a {singular}", NO_CONTENT),
    }
    if update:
        entries[("PUT", f"{path}/{{id}}")] = operation(
            f"Update a {singular}",
            {"200": response(f"The {singular}.", one)},
            body=request_body(
                closed({singular: closed({}, {name: _NETWORK_FIELD_TYPES[name] for name in update})})
            ),
        )
    return entries


def _server_page(item: str) -> Schema:
    return closed(
        {"servers": array(ref(item))},
        {"servers_links": {**ref("Links"), "description": "A next link when the page is full."}},
    )


def _version_documents(
    service: str, root: str, versioned: str, listing: tuple[str, Schema], one: Schema
) -> dict[tuple[str, str], Schema]:
    """The version documents of a service: its versions at ``root``, its version at ``versioned``."""
    status, versions = listing
    every = operation(f"{service} API versions", {status: response("The versions of the API.", versions)})
    this = operation(f"{service} API version", {"200": response("The version.", closed({"version": one}))})
    return {
        **{("GET", path): every for path in (root, f"{root}/")},
        **{("GET", path): this for path in (versioned, f"{versioned}/")},
    }


_NETWORK_VERSIONS = operation(
    "Network API versions", {"200": response("The versions of the network API.", ref("Versions"))}
)
_IMAGE_VERSIONS = operation(
    "Image API versions", {"300": response("The versions of the image API.", ref("Versions"))}
)

OPERATIONS: dict[tuple[str, str], Schema] = {
    **_version_documents(
        "Identity",
        "/identity",
        V3,
        ("300", closed({"versions": closed({"values": array(ref("IdentityVersion"))})})),
        ref("IdentityVersion"),
    ),
    **_version_documents(
        "Compute",
        "/compute",
        COMPUTE,
        ("200", closed({"versions": array(ref("MicroversionedVersion"))})),
        ref("MicroversionedVersion"),
    ),
    **_version_documents(
        "Volume",
        "/volume",
        "/volume/v3",
        ("300", closed({"versions": array(ref("MicroversionedVersion"))})),
        ref("MicroversionedVersion"),
    ),
    ("GET", PATH): operation("This OpenAPI document", {"200": response("The document.", {"type": "object"})}),
    # identity
    ("POST", f"{V3}/auth/tokens"): operation(
        "Issue a token",
        {"201": _TOKEN},
        description="Log in with a password, a token (re-scoping) or an application credential.",
        body=request_body(ref("AuthRequest")),
        parameters=(_NOCATALOG,),
    ),
    ("GET", f"{V3}/auth/tokens"): operation(
        "Validate a token",
        {"200": _TOKEN},
        description="The X-Subject-Token's document; the caller's own token or an admin's.",
        parameters=(_SUBJECT, _NOCATALOG),
    ),
    ("HEAD", f"{V3}/auth/tokens"): operation(
        "Check a token", {"200": response("Valid.")}, parameters=(_SUBJECT,)
    ),
    ("DELETE", f"{V3}/auth/tokens"): operation("Revoke a token", NO_CONTENT, parameters=(_SUBJECT,)),
    **_identity_crud(
        "project", {"name": STRING, "description": STRING, "enabled": BOOLEAN, "domain_id": STRING}
    ),
    **_identity_crud(
        "user",
        {
            "name": STRING,
            "password": STRING,
            "description": STRING,
            "enabled": BOOLEAN,
            "domain_id": STRING,
            "default_project_id": NULLABLE_STRING,
        },
    ),
    **_identity_crud("group", {"name": STRING, "description": STRING, "domain_id": STRING}),
    ("GET", f"{V3}/roles"): operation(
        "List roles (admin)",
        {
            "200": response(
                "The roles.", closed({"roles": array(ref("Role")), "links": ref("CollectionLinks")})
            )
        },
        parameters=(query("name", "Roles of this name."),),
    ),
    ("POST", f"{V3}/roles"): operation(
        "Create a role (admin)",
        {"201": response("The role.", closed({"role": ref("Role")}))},
        body=request_body(members({"role": members({"name": STRING}, {"description": STRING})})),
    ),
    ("GET", f"{V3}/roles/{{role_id}}"): operation(
        "Show a role (admin)", {"200": response("The role.", closed({"role": ref("Role")}))}
    ),
    # compute
    ("POST", f"{COMPUTE}/servers"): operation(
        "Create a server",
        {
            "202": response(
                "Recorded; the build goes on (watch its status or the event socket).",
                ref("ServerCreated"),
                Location=header("The server's URL."),
            )
        },
        body=request_body(ref("ServerCreateRequest")),
    ),
    ("GET", f"{COMPUTE}/servers"): operation(
        "List servers",
        {"200": response("The servers' ids and names.", _server_page("ServerSummary"))},
        parameters=_SERVER_FILTERS,
    ),
    ("GET", f"{COMPUTE}/servers/detail"): operation(
        "List servers in detail",
        {"200": response("The servers.", _server_page("Server"))},
        parameters=_SERVER_FILTERS,
    ),
    ("GET", f"{COMPUTE}/servers/{{server_id}}"): operation(
        "Show a server", {"200": response("The server.", closed({"server": ref("Server")}))}
    ),
    ("DELETE", f"{COMPUTE}/servers/{{server_id}}"): operation("Delete a server", NO_CONTENT),
    ("POST", f"{COMPUTE}/servers/{{server_id}}/action"): operation(
        "Act on a server",
        {
            "202": response("Accepted (os-stop, os-start, reboot); no body."),
            "200": response("The console output (os-getConsoleOutput).", closed({"output": STRING})),
        },
        body=request_body(ref("ServerAction")),
    ),
    ("GET", f"{COMPUTE}/servers/{{server_id}}/os-volume_attachments"): operation(
        "List a server's volume attachments",
        {"200": response("The attachments.", closed({"volumeAttachments": array(ref("VolumeAttachment"))}))},
    ),
    ("POST", f"{COMPUTE}/servers/{{server_id}}/os-volume_attachments"): operation(
        "Attach a volume",
        {"200": response("The attachment.", closed({"volumeAttachment": ref("VolumeAttachment")}))},
        body=request_body(
            members({"volumeAttachment": members({"volumeId": STRING}, {"device": NULLABLE_STRING})})
        ),
    ),
    ("DELETE", f"{COMPUTE}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}"): operation(
        "Detach a volume", ACCEPTED
    ),
    ("GET", f"{COMPUTE}/flavors"): operation(
        "List flavors", {"200": response("The flavors.", closed({"flavors": array(ref("Flavor"))}))}
    ),
    ("GET", f"{COMPUTE}/flavors/detail"): operation(
        "List flavors in detail",
        {"200": response("The flavors.", closed({"flavors": array(ref("FlavorDetail"))}))},
    ),
    ("GET", f"{COMPUTE}/flavors/{{flavor_id}}"): operation(
        "Show a flavor (by id or name)",
        {"200": response("The flavor.", closed({"flavor": ref("FlavorDetail")}))},
    ),
    # image
    ("GET", "/image"): _IMAGE_VERSIONS,
    ("GET", "/image/"): _IMAGE_VERSIONS,
    ("GET", IMAGES): operation(
        "List images",
        {"200": response("A page of the images the project sees.", ref("ImageList"))},
        parameters=(
            query("name", "Images of this name."),
            query("status", "Images in this status."),
            query("visibility", "Images of this visibility (all: any)."),
            query("limit", "At most this many (default 25, at most 1000).", INTEGER),
            query("marker", "The id of the last image of the previous page."),
        ),
    ),
    ("POST", IMAGES): operation(
        "Create an image record",
        {"201": response("The image, queued.", ref("Image"), Location=header("The image's URL."))},
        body=request_body(ref("ImageCreateRequest")),
    ),
    ("GET", f"{IMAGES}/{{image_id}}"): operation(
        "Show an image", {"200": response("The image.", ref("Image"))}
    ),
    ("DELETE", f"{IMAGES}/{{image_id}}"): operation("Delete an image", NO_CONTENT),
    ("PUT", f"{IMAGES}/{{image_id}}/file"): operation(
        "Upload an image's data",
        {"204": response("Stored; the image is active.")},
        body={"required": True, "content": {"application/octet-stream": {"schema": {}}}},
    ),
    ("GET", f"{IMAGES}/{{image_id}}/file"): operation(
        "Download an image's data",
        {
            "200": {
                "description": "The data, streamed.",
                "headers": {
                    "x-openstack-request-id": {"$ref": "#/components/headers/RequestId"},
                    "Content-MD5": header("The data's MD5 (hex)."),
                },
                "content": {"application/octet-stream": {"schema": {}}},
            },
            "204": response("The image has no data yet."),
        },
    ),
    # network
    ("GET", "/network"): _NETWORK_VERSIONS,
    ("GET", "/network/"): _NETWORK_VERSIONS,
    **{key: entry for resource in RESOURCES for key, entry in _neutron(resource).items()},
    # volume
    ("GET", VOLUMES): operation(
        "List volumes",
        {"200": response("The volumes' ids and names.", closed({"volumes": array(ref("VolumeSummary"))}))},
        parameters=_VOLUME_FILTERS,
    ),
    ("GET", f"{VOLUMES}/detail"): operation(
        "List volumes in detail",
        {"200": response("The volumes.", closed({"volumes": array(ref("Volume"))}))},
        parameters=_VOLUME_FILTERS,
    ),
    ("POST", VOLUMES): operation(
        "Create a volume",
        {"202": response("The volume, creating.", closed({"volume": ref("Volume")}))},
        body=request_body(ref("VolumeCreateRequest")),
    ),
    ("GET", f"{VOLUMES}/{{volume_id}}"): operation(
        "Show a volume", {"200": response("The volume.", closed({"volume": ref("Volume")}))}
    ),
    ("PUT", f"{VOLUMES}/{{volume_id}}"): operation(
        "Update a volume",
        {"200": response("The volume.", closed({"volume": ref("Volume")}))},
        body=request_body(ref("VolumeUpdateRequest")),
    ),
    ("DELETE", f"{VOLUMES}/{{volume_id}}"): operation("Delete a volume", ACCEPTED),
    # events
    ("GET", "/ws"): operation(
        "The event socket, which also carries requests",
        {
            "101": {
                "description": "Switching to a WebSocket of JSON frames: events, and the answers to"
                " request frames ({type: request, id, method, path, body, headers}) that reach every"
                " operation of this document with the socket's token (docs/EVENTS.md)."
            }
        },
        parameters=(
            query("kinds", "Comma-separated event kinds (instance, volume, ...)."),
            query("ids", "Comma-separated resource ids."),
            query("types", "Comma-separated event types (instance.active, ...)."),
            query("since", "The last sequence seen (now by default, 0 for all kept)."),
            query("since_time", "Start at this time instead (ISO 8601)."),
            query("project", "Admins: another project's events."),
        ),
    ),
}

# -- the document -----------------------------------------------------------------------------


def _error_response(path: str) -> str:
    """The components/responses name of the error body the path's service answers."""
    body = error_body(service_of(path), 400, "")
    if "NeutronError" in body:
        return "NeutronError"
    return "KeystoneError" if "error" in body else "ComputeError"


def _microversion(service: str) -> tuple[list[Schema], dict[str, Schema]]:
    """The request headers naming a compute or volume microversion, and the response headers echoing it."""
    low, high, legacy = RANGES[service]
    span = f"{low[0]}.{low[1]} to {high[0]}.{high[1]}"
    parameters = [
        {
            "name": "OpenStack-API-Version",
            "in": "header",
            "required": False,
            "schema": STRING,
            "description": f'"{service} X.Y" ({span}) or "{service} latest"; the lowest by default, '
            "406 outside the range.",
        }
    ]
    headers = {"OpenStack-API-Version": header(f'The microversion used, "{service} X.Y".')}
    if legacy:
        parameters.append(
            {
                "name": legacy,
                "in": "header",
                "required": False,
                "schema": STRING,
                "description": "X.Y (legacy).",
            }
        )
        headers[legacy] = header("The microversion used, X.Y (legacy).")
    return parameters, headers


def _generic(method: str, path: str) -> Schema:
    return operation(
        f"{method} {path}",
        {
            "2XX": {
                **response("Success: a JSON body, or none (204)."),
                "content": {"application/json": {"schema": {}}},
            }
        },
    )


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", path)
    return "_".join((method.lower(), *words)) + ("_index" if path.endswith("/") and words else "")


def _served_routes(app: web.Application) -> list[web.AbstractRoute]:
    """The routes the document describes: all but ``*`` ones and HEADs that only mirror a GET."""
    get_handlers = {
        route.resource.canonical: route.handler
        for route in app.router.routes()
        if route.method == "GET" and route.resource is not None
    }
    return [
        route
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "*"
        and not (route.method == "HEAD" and get_handlers.get(route.resource.canonical) == route.handler)
    ]


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route ``app`` serves."""
    paths: dict[str, dict[str, Any]] = {}
    for route in _served_routes(app):
        method, path = route.method, route.resource.canonical  # type: ignore[union-attr]
        service = service_of(path)
        entry = OPERATIONS.get((method, path)) or _generic(method, path)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": STRING}
            for name in re.findall(r"\{(\w+)\}", path)
        ]
        parameters += entry.get("parameters", [])
        responses = entry["responses"]
        if service in RANGES:
            version_parameters, version_headers = _microversion(service)
            parameters += version_parameters
            responses = {
                status: {**answer, "headers": {**answer.get("headers", {}), **version_headers}}
                for status, answer in responses.items()
            }
        described = {
            **entry,
            "operationId": _operation_id(method, path),
            "tags": [service],
            "parameters": parameters,
            "responses": {
                **responses,
                "default": {"$ref": f"#/components/responses/{_error_response(path)}"},
            },
        }
        if getattr(route.handler, "aiostack_public", False):
            described["security"] = []
        elif path == "/ws":
            described["security"] = [{"AuthToken": []}, {"AuthTokenQuery": []}]
        paths.setdefault(path, {})[method.lower()] = described
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aiostack gateway",
            "version": version("aiostack"),
            "description": "OpenStack-shaped REST API: Keystone v3, Nova v2.1, Glance v2, Neutron v2.0, "
            "Cinder v3, and an event WebSocket.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                name: response(description, ref(name))
                for name, description in (
                    ("ComputeError", "An error (compute, volume and the rest)."),
                    ("NeutronError", "An error (network)."),
                    ("KeystoneError", "An error (identity and image)."),
                )
            },
            "headers": {"RequestId": header("The request's id, also in the gateway's and actors' logs.")},
            "securitySchemes": {
                "AuthToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "AuthTokenQuery": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The token in the query: /ws only (browser WebSockets set no headers).",
                },
            },
        },
        "security": [{"AuthToken": []}],
    }


@public
async def openapi_json(request: web.Request) -> web.Response:
    """``GET /openapi.json``: this app's document."""
    return json_response(openapi_document(request.app))


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, openapi_json)
