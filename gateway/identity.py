"""Identity (Keystone v3) routes under ``/identity/v3``: tokens, projects, users, groups, roles,
role assignments, application credentials, with Keystone's paths and JSON shapes.

Everything but ``POST /auth/tokens`` needs a token; everything but the token routes and a
user's own application credentials needs the ``admin`` role (403 otherwise). The identity
actor checks again: the REST check only answers early.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from api.identity import ApplicationCredentials, IdentityAdmin, Token, TokenInfo, Tokens, TokenValidation
from bus import Current, Forbidden, InvalidRequest, NotFound, Unauthorized, request_scope
from gateway.http import REQUEST_ID, TOKENS, client, context_of, json_body, json_response, public

V3 = "/identity/v3"
DOMAIN = {"id": "default", "name": "Default"}
# the identity actor's one answer to every failed login (actors/identity/passwords.AUTH_FAILED)
AUTH_FAILED = "The request you have made requires authentication."
AUTH_METHODS = ("password", "token", "application_credential")

SERVICES = (
    ("identity", "keystone", "/identity/v3"),
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    ("network", "neutron", "/network"),
    ("block-storage", "cinder", "/volume/v3/{project_id}"),
    ("volumev3", "cinderv3", "/volume/v3/{project_id}"),
)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def catalog(base_url: str, project_id: str | None) -> list[dict[str, Any]]:
    """The service catalog: every service at this gateway, public/internal/admin alike."""
    entries = []
    for service_type, name, path in SERVICES:
        url = base_url + path.format(project_id=project_id or "")
        entries.append(
            {
                "id": service_type,
                "type": service_type,
                "name": name,
                "endpoints": [
                    {
                        "id": f"{service_type}-{interface}",
                        "interface": interface,
                        "region": "RegionOne",
                        "region_id": "RegionOne",
                        "url": url,
                    }
                    for interface in ("public", "internal", "admin")
                ],
            }
        )
    return entries


# -- helpers ----------------------------------------------------------------------------------


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _url(request: web.Request, *parts: str) -> str:
    return "/".join((_base(request) + V3, *parts))


def _collection(request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
    return json_response(
        {key: items, "links": {"self": _base(request) + request.path_qs, "next": None, "previous": None}}
    )


def _require_admin(request: web.Request) -> None:
    if not context_of(request).is_admin:
        raise Forbidden("You are not authorized to perform the requested action: admin required.")


def _on_own_behalf(request: web.Request) -> AbstractContextManager[Current]:
    """Calls made inside it act on the gateway's own behalf (no user context), for data any
    token holder may see."""
    return request_scope(request[REQUEST_ID], None)


def _query_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() not in ("0", "false", "no", "off")


def _no_content() -> web.Response:
    return web.Response(status=204)


def _only(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: body[key] for key in keys if key in body}


def _check_domain(domain: Any) -> None:
    """Only the default domain exists: a login naming another fails like any other."""
    if domain is None:
        return
    if not isinstance(domain, dict) or not ("id" in domain or "name" in domain):
        raise InvalidRequest("a domain must be an object with an id or a name")
    if domain.get("id", DOMAIN["id"]) != DOMAIN["id"] or domain.get("name", DOMAIN["name"]) != DOMAIN["name"]:
        raise Unauthorized(AUTH_FAILED)


# -- views ------------------------------------------------------------------------------------


def project_view(request: web.Request, project: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": project["id"],
        "name": project["name"],
        "description": project["description"],
        "domain_id": project["domain_id"],
        "enabled": bool(project["enabled"]),
        "parent_id": project["domain_id"],
        "is_domain": False,
        "tags": [],
        "options": {},
        "links": {"self": _url(request, "projects", project["id"])},
    }


def user_view(request: web.Request, user: dict[str, Any]) -> dict[str, Any]:
    view = {
        "id": user["id"],
        "name": user["name"],
        "description": user.get("description", ""),
        "domain_id": user["domain_id"],
        "enabled": bool(user["enabled"]),
        "password_expires_at": None,
        "options": {},
        "links": {"self": _url(request, "users", user["id"])},
    }
    if user.get("default_project_id"):
        view["default_project_id"] = user["default_project_id"]
    return view


def group_view(request: web.Request, group: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": group["id"],
        "name": group["name"],
        "description": group["description"],
        "domain_id": group["domain_id"],
        "links": {"self": _url(request, "groups", group["id"])},
    }


def role_view(request: web.Request, role: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": role["id"],
        "name": role["name"],
        "description": role.get("description", ""),
        "domain_id": None,
        "options": {},
        "links": {"self": _url(request, "roles", role["id"])},
    }


def app_cred_view(request: web.Request, cred: dict[str, Any]) -> dict[str, Any]:
    view = {
        "id": cred["id"],
        "name": cred["name"],
        "description": cred["description"],
        "user_id": cred["user_id"],
        "project_id": cred["project_id"],
        "roles": [{"id": role["id"], "name": role["name"], "domain_id": None} for role in cred["roles"]],
        "expires_at": iso(cred["expires_at"]) if cred["expires_at"] is not None else None,
        "unrestricted": False,
        "access_rules": [],
        "links": {"self": _url(request, "users", cred["user_id"], "application_credentials", cred["id"])},
    }
    if "secret" in cred:
        view["secret"] = cred["secret"]
    return view


def assignment_view(request: web.Request, item: dict[str, Any], include_names: bool) -> dict[str, Any]:
    role: dict[str, Any] = {"id": item["role_id"]}
    if include_names:
        role["name"] = item["role_name"]
    actor_kind, actor_id = ("user", item["user_id"]) if item["user_id"] else ("group", item["group_id"])
    link_kind, link_id = ("groups", item["via_group"]) if item["via_group"] else (f"{actor_kind}s", actor_id)
    view: dict[str, Any] = {
        "role": role,
        "scope": {"project": {"id": item["project_id"]}},
        actor_kind: {"id": actor_id},
        "links": {
            "assignment": _url(
                request, "projects", item["project_id"], link_kind, link_id, "roles", item["role_id"]
            )
        },
    }
    if item["via_group"]:
        view["links"]["membership"] = _url(request, "groups", item["via_group"], "users", actor_id)
    return view


# -- tokens -----------------------------------------------------------------------------------


def token_body(issued: dict[str, Any], base_url: str, with_catalog: bool = True) -> dict[str, Any]:
    """Keystone's token document for what ``Tokens.issue`` (or a sibling) answered."""
    body: dict[str, Any] = {
        "methods": issued["methods"],
        "user": {
            "id": issued["user"]["id"],
            "name": issued["user"]["name"],
            "domain": DOMAIN,
            "password_expires_at": None,
        },
        "audit_ids": issued["audit_ids"],
        "issued_at": iso(issued["issued_at"]),
        "expires_at": iso(issued["expires_at"]),
    }
    if issued["project"] is not None:
        body["project"] = {"id": issued["project"]["id"], "name": issued["project"]["name"], "domain": DOMAIN}
        body["is_domain"] = False
        body["roles"] = [{"id": role["id"], "name": role["name"]} for role in issued["roles"]]
        if with_catalog:
            body["catalog"] = catalog(base_url, issued["project"]["id"])
    if issued.get("application_credential"):
        body["application_credential"] = issued["application_credential"]
    return body


def _scope(auth: dict[str, Any]) -> dict[str, Any]:
    """The project a login asks for: ``{project_id}``, ``{project_name}``, ``{unscoped}`` or none."""
    scope = auth.get("scope")
    if scope is None:
        return {}
    if scope == "unscoped":
        return {"unscoped": True}
    if not isinstance(scope, dict) or not isinstance(scope.get("project"), dict):
        raise InvalidRequest("auth.scope must name a project (domain and system scopes are not supported)")
    project = scope["project"]
    if isinstance(project.get("id"), str):
        return {"project_id": project["id"]}
    if isinstance(project.get("name"), str):
        _check_domain(project.get("domain"))
        return {"project_name": project["name"]}
    raise InvalidRequest("auth.scope.project needs an id or a name")


def _member(identity: dict[str, Any], key: str) -> dict[str, Any]:
    value = identity.get(key)
    if not isinstance(value, dict):
        raise InvalidRequest(f"auth.identity.{key} must be an object")
    return value


Login = Callable[[Tokens], Awaitable[Token]]
"""A login, to make with the gateway's ``Tokens`` client."""


def auth_call(auth: Any) -> Login:
    """The login a ``POST /auth/tokens`` body asks for."""
    identity = auth.get("identity") if isinstance(auth, dict) else None
    if not isinstance(identity, dict):
        raise InvalidRequest("auth.identity must be an object")
    methods = identity.get("methods")
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise InvalidRequest("auth.identity.methods must be a non-empty list of strings")
    if len(set(methods)) != 1 or methods[0] not in AUTH_METHODS:
        raise Unauthorized("Attempted to authenticate with an unsupported method.")
    method, scope = methods[0], _scope(auth)
    if method == "password":
        user = _member(_member(identity, "password"), "user")
        if not isinstance(user.get("password"), str):
            raise InvalidRequest("auth.identity.password.user.password must be a string")
        if isinstance(user.get("id"), str):
            return lambda tokens: tokens.issue(user_id=user["id"], password=user["password"], **scope)
        if not isinstance(user.get("name"), str):
            raise InvalidRequest("auth.identity.password.user needs an id or a name")
        _check_domain(user.get("domain"))
        return lambda tokens: tokens.issue(username=user["name"], password=user["password"], **scope)
    if method == "token":
        token = _member(identity, "token").get("id")
        if not isinstance(token, str):
            raise InvalidRequest("auth.identity.token.id must be a string")
        if scope.get("unscoped"):
            raise InvalidRequest("a token can be re-scoped to a project, not unscoped")
        return lambda tokens: tokens.issue_with_token(token=token, **scope)
    credential = _member(identity, "application_credential")
    if not isinstance(credential.get("id"), str) or not isinstance(credential.get("secret"), str):
        raise InvalidRequest("auth.identity.application_credential needs an id and a secret")
    return lambda tokens: tokens.issue_with_application_credential(
        app_cred_id=credential["id"], secret=credential["secret"]
    )


@public
async def issue_token(request: web.Request) -> web.Response:
    login = auth_call(await json_body(request, "auth"))
    issued = await login(client(request, Tokens))
    return json_response(
        {"token": token_body(issued, _base(request), "nocatalog" not in request.query)},
        status=201,
        headers={"X-Subject-Token": issued["token"]},
    )


async def _subject(request: web.Request) -> tuple[str, TokenInfo]:
    """The X-Subject-Token and what it says; 404 when it is not valid, 403 when not the caller's."""
    subject = request.headers.get("X-Subject-Token")
    if not subject:
        raise InvalidRequest("X-Subject-Token header is required")
    try:
        info = await client(request, TokenValidation).validate(token=subject)
    except Unauthorized:
        raise web.HTTPNotFound(text=f"Could not find token: {subject[:16]}...") from None
    ctx = context_of(request)
    if not ctx.is_admin and ctx.user_id != info["user_id"]:
        raise Forbidden("Only the token's owner or an admin may inspect it.")
    return subject, info


async def validate_token(request: web.Request) -> web.Response:
    subject, info = await _subject(request)
    ids = {}
    if info["roles"]:
        with _on_own_behalf(request):
            roles = await client(request, IdentityAdmin).list_roles()
        ids = {role["name"]: role["id"] for role in roles}
    issued = {
        "methods": info["methods"],
        "user": {"id": info["user_id"], "name": info["user_name"]},
        "audit_ids": [info["audit_id"]],
        "issued_at": info["issued_at"],
        "expires_at": info["expires_at"],
        "project": {"id": info["project_id"], "name": info["project_name"]} if info["project_id"] else None,
        "roles": [{"id": ids.get(name), "name": name} for name in info["roles"]],
        "application_credential": {"id": info["app_cred_id"], "restricted": True}
        if info["app_cred_id"]
        else None,
    }
    return json_response(
        {"token": token_body(issued, _base(request), "nocatalog" not in request.query)},
        headers={"X-Subject-Token": subject},
    )


async def auth_catalog(request: web.Request) -> web.Response:
    """GET /v3/auth/catalog: the catalog for the token's project."""
    ctx = context_of(request)
    return json_response(
        {
            "catalog": catalog(_base(request), ctx.project_id),
            "links": {"self": _url(request, "auth", "catalog")},
        }
    )


async def auth_projects(request: web.Request) -> web.Response:
    """GET /v3/auth/projects: the projects the token's user has a role on (directly or by group)."""
    ctx = context_of(request)
    admin = client(request, IdentityAdmin)
    with _on_own_behalf(request):
        assignments = await admin.list_role_assignments(user_id=ctx.user_id, effective=True)
        projects = [
            project_view(request, await admin.get_project(project_id=project_id))
            for project_id in sorted({a["project_id"] for a in assignments})
        ]
    return _collection(request, "projects", projects)


async def auth_domains(request: web.Request) -> web.Response:
    """GET /v3/auth/domains: the one domain there is (no domain-scoped roles are built)."""
    return _collection(request, "domains", [_domain_view(request)])


async def check_token(request: web.Request) -> web.Response:
    subject, _ = await _subject(request)
    return web.Response(status=200, headers={"X-Subject-Token": subject})


async def revoke_token(request: web.Request) -> web.Response:
    subject = request.headers.get("X-Subject-Token")
    if not subject:
        raise InvalidRequest("X-Subject-Token header is required")
    try:
        revoked = await client(request, Tokens).revoke_token(token=subject)
    except Unauthorized:
        raise web.HTTPNotFound(text=f"Could not find token: {subject[:16]}...") from None
    # the revocation is also published; applying it here closes the window before it arrives
    request.app[TOKENS].revoke(revoked["kind"], revoked["id"], revoked["issued_before"])
    return _no_content()


# -- domains, projects, users, groups, roles ----------------------------------------------------


async def list_domains(request: web.Request) -> web.Response:
    _require_admin(request)
    return _collection(request, "domains", [_domain_view(request)])


async def get_domain(request: web.Request) -> web.Response:
    _require_admin(request)
    if request.match_info["domain_id"] != DOMAIN["id"]:
        raise NotFound(f"Could not find domain: {request.match_info['domain_id']}.")
    return json_response({"domain": _domain_view(request)})


def _domain_view(request: web.Request) -> dict[str, Any]:
    return {
        **DOMAIN,
        "description": "The default domain",
        "enabled": True,
        "tags": [],
        "options": {},
        "links": {"self": _url(request, "domains", DOMAIN["id"])},
    }


View = Callable[[web.Request, dict[str, Any]], dict[str, Any]]
Call = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class _Operations:
    """The ``IdentityAdmin`` methods behind one kind's five routes."""

    list: Call
    create: Call
    get: Call
    update: Call
    delete: Call


def _project_operations(admin: IdentityAdmin) -> _Operations:
    return _Operations(
        admin.list_projects,
        admin.create_project,
        admin.get_project,
        admin.update_project,
        admin.delete_project,
    )


def _user_operations(admin: IdentityAdmin) -> _Operations:
    return _Operations(
        admin.list_users, admin.create_user, admin.get_user, admin.update_user, admin.delete_user
    )


def _group_operations(admin: IdentityAdmin) -> _Operations:
    return _Operations(
        admin.list_groups, admin.create_group, admin.get_group, admin.update_group, admin.delete_group
    )


def _crud(
    kind: str,
    view: View,
    fields: tuple[str, ...],
    filters: tuple[str, ...],
    operations_of: Callable[[IdentityAdmin], _Operations],
) -> dict[str, Any]:
    """List, create, get, update and delete handlers for one kind (``project``, ``user``, ``group``)."""
    plural = f"{kind}s"
    id_key = f"{kind}_id"

    def operations(request: web.Request) -> _Operations:
        return operations_of(client(request, IdentityAdmin))

    async def list_all(request: web.Request) -> web.Response:
        _require_admin(request)
        if request.query.get("domain_id", DOMAIN["id"]) != DOMAIN["id"]:
            return _collection(request, plural, [])
        args: dict[str, Any] = {"name": request.query.get("name")}
        if "enabled" in filters:
            args["enabled"] = _query_bool(request.query.get("enabled"))
        rows = await operations(request).list(**args)
        return _collection(request, plural, [view(request, row) for row in rows])

    async def create(request: web.Request) -> web.Response:
        _require_admin(request)
        body = await json_body(request, kind)
        args = _only(body, *fields, "domain_id")
        if kind == "user" and body.get("default_project_id"):
            args["default_project"] = body["default_project_id"]
        row = await operations(request).create(**args)
        return json_response({kind: view(request, row)}, status=201)

    async def get(request: web.Request) -> web.Response:
        _require_admin(request)
        row = await operations(request).get(**{id_key: request.match_info[id_key]})
        return json_response({kind: view(request, row)})

    async def update(request: web.Request) -> web.Response:
        _require_admin(request)
        body = await json_body(request, kind)
        if body.get("domain_id", DOMAIN["id"]) != DOMAIN["id"]:
            raise InvalidRequest("a domain cannot be changed")
        args = {id_key: request.match_info[id_key], **_only(body, *fields)}
        if kind == "user" and "default_project_id" in body:
            args["default_project"] = body["default_project_id"] or ""
        for key, value in list(args.items()):
            if value is None:
                raise InvalidRequest(f"{key} cannot be null")
        row = await operations(request).update(**args)
        return json_response({kind: view(request, row)})

    async def delete(request: web.Request) -> web.Response:
        _require_admin(request)
        await operations(request).delete(**{id_key: request.match_info[id_key]})
        return _no_content()

    return {"list": list_all, "create": create, "get": get, "update": update, "delete": delete}


async def list_group_users(request: web.Request) -> web.Response:
    _require_admin(request)
    users = await client(request, IdentityAdmin).list_group_users(group_id=request.match_info["group_id"])
    return _collection(request, "users", [user_view(request, user) for user in users])


async def list_user_groups(request: web.Request) -> web.Response:
    _require_admin(request)
    groups = await client(request, IdentityAdmin).list_user_groups(user_id=request.match_info["user_id"])
    return _collection(request, "groups", [group_view(request, group) for group in groups])


async def membership(request: web.Request) -> web.Response:
    """PUT adds, DELETE removes, HEAD/GET checks a user's membership of a group (204 or 404)."""
    _require_admin(request)
    group_id, user_id = request.match_info["group_id"], request.match_info["user_id"]
    admin = client(request, IdentityAdmin)
    if request.method == "PUT":
        await admin.add_user_to_group(group_id=group_id, user_id=user_id)
    elif request.method == "DELETE":
        await admin.remove_user_from_group(group_id=group_id, user_id=user_id)
    elif not await admin.check_user_in_group(group_id=group_id, user_id=user_id):
        raise NotFound(f"User {user_id} is not a member of group {group_id}.")
    return _no_content()


async def list_roles(request: web.Request) -> web.Response:
    _require_admin(request)
    roles = await client(request, IdentityAdmin).list_roles(name=request.query.get("name"))
    return _collection(request, "roles", [role_view(request, role) for role in roles])


async def create_role(request: web.Request) -> web.Response:
    _require_admin(request)
    body = await json_body(request, "role")
    role = await client(request, IdentityAdmin).create_role(**_only(body, "name", "description"))
    return json_response({"role": role_view(request, role)}, status=201)


async def get_role(request: web.Request) -> web.Response:
    _require_admin(request)
    role = await client(request, IdentityAdmin).get_role(role_id=request.match_info["role_id"])
    return json_response({"role": role_view(request, role)})


# -- role assignments -------------------------------------------------------------------------


async def assignment(request: web.Request) -> web.Response:
    """PUT grants, DELETE revokes, HEAD/GET checks a role of a user or group on a project."""
    _require_admin(request)
    match = request.match_info
    kind = "user" if "user_id" in match else "group"
    who = match[f"{kind}_id"]
    admin = client(request, IdentityAdmin)
    if request.method in ("PUT", "DELETE"):
        grant = request.method == "PUT"
        if kind == "user":
            change = admin.grant_role if grant else admin.revoke_role
            await change(user=who, project=match["project_id"], role=match["role_id"])
        else:
            change = admin.grant_group_role if grant else admin.revoke_group_role
            await change(group=who, project=match["project_id"], role=match["role_id"])
        return _no_content()
    found = await admin.list_role_assignments(
        **{f"{kind}_id": who}, project_id=match["project_id"], role_id=match["role_id"]
    )
    if not found:
        raise NotFound(f"Could not find role assignment of {match['role_id']} on {match['project_id']}.")
    return _no_content()


async def list_actor_roles(request: web.Request) -> web.Response:
    """GET /projects/{p}/users/{u}/roles and /projects/{p}/groups/{g}/roles: the direct roles."""
    _require_admin(request)
    match = request.match_info
    kind = "user" if "user_id" in match else "group"
    found = await client(request, IdentityAdmin).list_role_assignments(
        **{f"{kind}_id": match[f"{kind}_id"]}, project_id=match["project_id"]
    )
    roles = [role_view(request, {"id": item["role_id"], "name": item["role_name"]}) for item in found]
    return _collection(request, "roles", roles)


async def list_role_assignments(request: web.Request) -> web.Response:
    _require_admin(request)
    query = request.query
    effective = "effective" in query and _query_bool(query.get("effective") or "true")
    if effective and "group.id" in query:
        raise InvalidRequest("effective and group.id cannot be combined")
    found = await client(request, IdentityAdmin).list_role_assignments(
        user_id=query.get("user.id"),
        group_id=query.get("group.id"),
        project_id=query.get("scope.project.id"),
        role_id=query.get("role.id"),
        effective=bool(effective),
    )
    include_names = "include_names" in query and bool(_query_bool(query.get("include_names") or "true"))
    return _collection(
        request, "role_assignments", [assignment_view(request, item, include_names) for item in found]
    )


# -- application credentials --------------------------------------------------------------------


async def create_app_cred(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    if context_of(request).user_id != user_id:
        raise Forbidden("Application credentials are created by their user only.")
    body = await json_body(request, "application_credential")
    if body.get("unrestricted"):
        raise InvalidRequest("unrestricted application credentials are not supported")
    if body.get("access_rules"):
        raise InvalidRequest("access rules are not supported")
    created = await client(request, ApplicationCredentials).create_application_credential(
        **_only(body, "name", "secret", "description", "expires_at", "roles")
    )
    return json_response({"application_credential": app_cred_view(request, created)}, status=201)


async def list_app_creds(request: web.Request) -> web.Response:
    creds = await client(request, ApplicationCredentials).list_application_credentials(
        user_id=request.match_info["user_id"]
    )
    name = request.query.get("name")
    shown = [app_cred_view(request, cred) for cred in creds if name is None or cred["name"] == name]
    return _collection(request, "application_credentials", shown)


async def app_cred(request: web.Request) -> web.Response:
    """GET shows, DELETE deletes one of a user's application credentials."""
    user_id, app_cred_id = request.match_info["user_id"], request.match_info["app_cred_id"]
    creds = client(request, ApplicationCredentials)
    if request.method == "DELETE":
        await creds.delete_application_credential(user_id=user_id, app_cred_id=app_cred_id)
        return _no_content()
    cred = await creds.get_application_credential(user_id=user_id, app_cred_id=app_cred_id)
    return json_response({"application_credential": app_cred_view(request, cred)})


# -- routes -----------------------------------------------------------------------------------

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Route]] = [
        ("POST", "/auth/tokens", issue_token),
        ("GET", "/auth/tokens", validate_token),
        ("HEAD", "/auth/tokens", check_token),
        ("GET", "/auth/catalog", auth_catalog),
        ("GET", "/auth/projects", auth_projects),
        ("GET", "/auth/domains", auth_domains),
        ("DELETE", "/auth/tokens", revoke_token),
        ("GET", "/domains", list_domains),
        ("GET", "/domains/{domain_id}", get_domain),
        ("GET", "/groups/{group_id}/users", list_group_users),
        ("GET", "/users/{user_id}/groups", list_user_groups),
        ("GET", "/roles", list_roles),
        ("POST", "/roles", create_role),
        ("GET", "/roles/{role_id}", get_role),
        ("GET", "/role_assignments", list_role_assignments),
        ("GET", "/projects/{project_id}/users/{user_id}/roles", list_actor_roles),
        ("GET", "/projects/{project_id}/groups/{group_id}/roles", list_actor_roles),
        ("POST", "/users/{user_id}/application_credentials", create_app_cred),
        ("GET", "/users/{user_id}/application_credentials", list_app_creds),
        ("GET", "/users/{user_id}/application_credentials/{app_cred_id}", app_cred),
        ("DELETE", "/users/{user_id}/application_credentials/{app_cred_id}", app_cred),
    ]
    for path, route in (
        ("/groups/{group_id}/users/{user_id}", membership),
        ("/projects/{project_id}/users/{user_id}/roles/{role_id}", assignment),
        ("/projects/{project_id}/groups/{group_id}/roles/{role_id}", assignment),
    ):
        routes += [(method, path, route) for method in ("PUT", "DELETE", "HEAD", "GET")]
    for kind, view, fields, filters, operations_of in (
        (
            "project",
            project_view,
            ("name", "description", "enabled"),
            ("name", "enabled"),
            _project_operations,
        ),
        (
            "user",
            user_view,
            ("name", "password", "description", "enabled"),
            ("name", "enabled"),
            _user_operations,
        ),
        ("group", group_view, ("name", "description"), ("name",), _group_operations),
    ):
        handlers = _crud(kind, view, fields, filters, operations_of)
        routes += [
            ("GET", f"/{kind}s", handlers["list"]),
            ("POST", f"/{kind}s", handlers["create"]),
            ("GET", f"/{kind}s/{{{kind}_id}}", handlers["get"]),
            ("PATCH", f"/{kind}s/{{{kind}_id}}", handlers["update"]),
            ("DELETE", f"/{kind}s/{{{kind}_id}}", handlers["delete"]),
        ]
    for method, path, route in routes:
        app.router.add_route(method, V3 + path, route)
