"""Identity (Keystone v3) routes: token issue and validation, with a service catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bus import InvalidRequest, Unauthorized
from gateway.app import call, json_body, public

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


def token_body(issued: dict[str, Any], base_url: str, methods: list[str]) -> dict[str, Any]:
    domain = {"id": "default", "name": "Default"}
    body: dict[str, Any] = {
        "methods": methods,
        "user": {
            "id": issued["user"]["id"],
            "name": issued["user"]["name"],
            "domain": domain,
            "password_expires_at": None,
        },
        "audit_ids": [issued["token"][-22:]],
        "issued_at": iso(issued["issued_at"]),
        "expires_at": iso(issued["expires_at"]),
    }
    if issued["project"] is not None:
        body["project"] = {"id": issued["project"]["id"], "name": issued["project"]["name"], "domain": domain}
        body["is_domain"] = False
        body["roles"] = [{"id": role["id"], "name": role["name"]} for role in issued["roles"]]
        body["catalog"] = catalog(base_url, issued["project"]["id"])
    return body


def _password_request(auth: dict[str, Any]) -> dict[str, Any]:
    identity = auth.get("identity")
    if not isinstance(identity, dict) or "password" not in (identity.get("methods") or []):
        raise InvalidRequest("auth.identity.methods must include 'password'")
    user = (identity.get("password") or {}).get("user")
    if not isinstance(user, dict) or not isinstance(user.get("password"), str):
        raise InvalidRequest("auth.identity.password.user must give a name and a password")
    if not isinstance(user.get("name"), str):
        raise InvalidRequest("auth.identity.password.user.name must be a string")
    request: dict[str, Any] = {"username": user["name"], "password": user["password"]}
    scope = auth.get("scope")
    if isinstance(scope, dict) and isinstance(scope.get("project"), dict):
        project = scope["project"]
        if isinstance(project.get("id"), str):
            request["project_id"] = project["id"]
        elif isinstance(project.get("name"), str):
            request["project_name"] = project["name"]
        else:
            raise InvalidRequest("auth.scope.project needs an id or a name")
    return request


@public
async def issue_token(request: web.Request) -> web.Response:
    auth = await json_body(request, "auth")
    issued = await call(request, "token.issue", _password_request(auth))
    base_url = f"{request.scheme}://{request.host}"
    return web.json_response(
        {"token": token_body(issued, base_url, ["password"])},
        status=201,
        headers={"X-Subject-Token": issued["token"]},
    )


async def validate_token(request: web.Request) -> web.Response:
    subject = request.headers.get("X-Subject-Token")
    if not subject:
        raise InvalidRequest("X-Subject-Token header is required")
    try:
        info = await call(request, "token.validate", {"token": subject})
    except Unauthorized:
        raise web.HTTPNotFound(text="The token could not be found.") from None
    return web.json_response(
        {
            "token": {
                "methods": ["password"],
                "user": {
                    "id": info["user_id"],
                    "name": info["user_name"],
                    "domain": {"id": "default", "name": "Default"},
                },
                "project": {
                    "id": info["project_id"],
                    "name": info["project_name"],
                    "domain": {"id": "default", "name": "Default"},
                },
                "roles": [{"name": role} for role in info["roles"]],
                "issued_at": iso(info["issued_at"]),
                "expires_at": iso(info["expires_at"]),
            }
        },
        headers={"X-Subject-Token": subject},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/identity/v3/auth/tokens", issue_token)
    app.router.add_get("/identity/v3/auth/tokens", validate_token)
