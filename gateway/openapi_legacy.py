"""The parts of ``/openapi.json`` still written by hand: identity, network and the event socket.

These modules have not moved to the route registry (``gateway.routing``) yet; until they do,
their operations are described here as they were, and ``gateway.openapi`` takes them from
``OPERATIONS`` (and their schemas from ``SCHEMAS``). Delete each part when its module declares
its routes on the registry (then this file).
"""

from __future__ import annotations

from typing import Any

from gateway.network import RESOURCES, Resource

Schema = dict[str, Any]

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

_DOMAIN = closed({"id": STRING, "name": STRING})
_IDENTITY_LINKS = closed({"self": STRING})
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
    "Links": array(ref("Link")),
    "Versions": closed({"versions": array(closed({"id": STRING, "status": STRING, "links": ref("Links")}))}),
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
}

V3 = "/identity/v3"
NETWORK = "/network/v2.0"
_TOKEN = response(
    "The token document; the token itself is the X-Subject-Token header.",
    closed({"token": ref("Token")}),
    **{"X-Subject-Token": header("The token.")},
)
_NOCATALOG = query("nocatalog", "Leave the service catalog out of the token document.")
_SUBJECT = {"name": "X-Subject-Token", "in": "header", "required": True, "schema": STRING}


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


_NETWORK_VERSIONS = operation(
    "Network API versions", {"200": response("The versions of the network API.", ref("Versions"))}
)

OPERATIONS: dict[tuple[str, str], Schema] = {
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
    # network
    ("GET", "/network"): _NETWORK_VERSIONS,
    ("GET", "/network/"): _NETWORK_VERSIONS,
    **{key: entry for resource in RESOURCES for key, entry in _neutron(resource).items()},
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
