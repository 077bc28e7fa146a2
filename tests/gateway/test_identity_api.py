"""Keystone v3 routes over real HTTP: login methods and scopes (the system's too), token validation
and revocation, projects, users, groups, roles, role assignments (on projects and on the system),
a user's projects and password change, domains, application credentials, 403s and 400s."""

from __future__ import annotations

import re
from typing import Any

import pytest

from actors.identity.actor import IdentityActor
from tests.conftest import ADMIN_PASSWORD
from tests.helpers import DEMO_PASSWORD, Api

V3 = "/identity/v3"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
AUTH_FAILED = "The request you have made requires authentication."


@pytest.fixture
async def admin(start_actor, config, api: Api) -> Api:
    """The identity actor behind the gateway, and ``api`` logged in as the admin."""
    await start_actor(IdentityActor, config)
    await api.login("admin", ADMIN_PASSWORD)
    return api


@pytest.fixture
async def member(admin: Api) -> Api:
    client = Api(admin.session, admin.base_url)
    await client.login("demo", DEMO_PASSWORD)
    return client


def password_auth(user: dict[str, Any], password: str, scope: Any = None) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "identity": {"methods": ["password"], "password": {"user": {**user, "password": password}}}
    }
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


async def issue(api: Api, body: dict[str, Any]) -> tuple[int, Any, str | None]:
    async with api.session.post(f"{api.base_url}{V3}/auth/tokens", json=body) as response:
        return response.status, await response.json(), response.headers.get("X-Subject-Token")


def identity_error(body: Any, code: int) -> str:
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["title"] and body["error"]["message"], body
    return body["error"]["message"]


async def user_id(admin: Api, name: str) -> str:
    status, body = await admin.get(f"{V3}/users?name={name}")
    assert status == 200, body
    return body["users"][0]["id"]


async def subject(api: Api, method: str, token: str) -> tuple[int, Any]:
    return await api.request(method, f"{V3}/auth/tokens", headers={"X-Subject-Token": token})


# -- tokens -----------------------------------------------------------------------------------


async def test_password_login_by_name_or_id_and_each_scope(admin: Api) -> None:
    default = {"domain": {"id": "default"}}
    status, body, token = await issue(
        admin,
        password_auth(
            {"name": "demo", **default},
            DEMO_PASSWORD,
            {"project": {"name": "demo", "domain": {"name": "Default"}}},
        ),
    )
    assert status == 201 and token
    doc = body["token"]
    assert doc["methods"] == ["password"] and len(doc["audit_ids"]) == 1
    assert doc["user"]["name"] == "demo" and doc["user"]["domain"] == {"id": "default", "name": "Default"}
    assert ISO_Z.match(doc["issued_at"]) and ISO_Z.match(doc["expires_at"])
    assert doc["project"]["name"] == "demo" and doc["is_domain"] is False
    assert [r["name"] for r in doc["roles"]] == ["member"] and doc["roles"][0]["id"]
    assert {entry["type"] for entry in doc["catalog"]} >= {"identity", "compute", "image", "network"}

    status, body, _ = await issue(
        admin,
        password_auth({"id": doc["user"]["id"]}, DEMO_PASSWORD, {"project": {"id": doc["project"]["id"]}}),
    )
    assert status == 201 and body["token"]["project"]["id"] == doc["project"]["id"]
    status, body, _ = await issue(
        admin, password_auth({"name": "demo", **default}, DEMO_PASSWORD, "unscoped")
    )
    assert status == 201 and "project" not in body["token"] and "catalog" not in body["token"]


async def test_every_login_failure_is_the_same_401(admin: Api) -> None:
    messages = set()
    for body in (
        password_auth({"name": "demo"}, "wrong"),
        password_auth({"name": "nobody"}, "wrong"),
        password_auth({"name": "demo", "domain": {"id": "elsewhere"}}, DEMO_PASSWORD),
        password_auth({"name": "demo"}, DEMO_PASSWORD, {"project": {"name": "admin"}}),
        password_auth({"name": "demo"}, DEMO_PASSWORD, {"project": {"id": "nope"}}),
    ):
        status, answer, token = await issue(admin, body)
        assert status == 401 and token is None
        messages.add(identity_error(answer, 401))
    assert messages == {AUTH_FAILED}


async def test_rescope_with_the_token_method(admin: Api) -> None:
    _, body, unscoped = await issue(admin, password_auth({"name": "demo"}, DEMO_PASSWORD, "unscoped"))
    assert unscoped
    status, scoped, token = await issue(
        admin,
        {
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": unscoped}},
                "scope": {"project": {"name": "demo", "domain": {"id": "default"}}},
            }
        },
    )
    assert status == 201 and token and token != unscoped
    assert scoped["token"]["methods"] == ["token", "password"]
    assert scoped["token"]["audit_ids"][1] == body["token"]["audit_ids"][0]
    assert scoped["token"]["expires_at"] <= body["token"]["expires_at"]
    status, _, _ = await issue(
        admin,
        {
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": "garbage"}},
                "scope": {"project": {"name": "demo"}},
            }
        },
    )
    assert status == 401


async def test_validate_check_and_revoke_a_token(admin: Api, member: Api) -> None:
    demo_token = member.headers["X-Auth-Token"]
    status, body = await subject(admin, "GET", demo_token)
    assert status == 200, body
    doc = body["token"]
    assert doc["user"]["name"] == "demo" and doc["methods"] == ["password"]
    assert doc["roles"][0]["name"] == "member" and doc["roles"][0]["id"]
    assert ISO_Z.match(doc["expires_at"]) and doc["catalog"]
    assert (await subject(member, "GET", demo_token))[0] == 200  # one's own token
    assert (await subject(member, "HEAD", demo_token))[0] == 200
    status, body = await subject(member, "GET", admin.headers["X-Auth-Token"])
    assert status == 403 and identity_error(body, 403)
    assert (await subject(member, "DELETE", admin.headers["X-Auth-Token"]))[0] == 403
    status, body = await subject(admin, "GET", "not-a-token")
    assert status == 404 and identity_error(body, 404)
    assert (await subject(admin, "HEAD", "not-a-token"))[0] == 404

    _, _, other = await issue(admin, password_auth({"name": "demo"}, DEMO_PASSWORD))
    assert other
    assert (await subject(member, "DELETE", other))[0] == 204
    assert (await subject(admin, "GET", other))[0] == 404
    assert (await subject(admin, "DELETE", other))[0] == 404
    assert (await subject(admin, "GET", demo_token))[0] == 200
    assert (await member.delete(f"{V3}/auth/tokens", headers={"X-Subject-Token": demo_token}))[0] == 204
    assert (await member.get(f"{V3}/auth/tokens", headers={"X-Subject-Token": demo_token}))[0] == 401


# -- projects, users, groups, roles -------------------------------------------------------------


async def test_project_crud_shapes(admin: Api) -> None:
    status, body = await admin.post(
        f"{V3}/projects", {"project": {"name": "ops", "description": "operations"}}
    )
    assert status == 201, body
    project = body["project"]
    assert project["domain_id"] == "default" and project["enabled"] is True and project["is_domain"] is False
    assert project["links"]["self"].endswith(f"{V3}/projects/{project['id']}")
    status, body = await admin.get(f"{V3}/projects")
    assert status == 200 and {p["name"] for p in body["projects"]} == {"admin", "demo", "ops", "service"}
    assert body["links"]["next"] is None and body["links"]["previous"] is None and body["links"]["self"]
    status, body = await admin.get(f"{V3}/projects?name=ops")
    assert [p["id"] for p in body["projects"]] == [project["id"]]
    status, body = await admin.get(f"{V3}/projects/{project['id']}")
    assert status == 200 and body["project"] == project
    status, body = await admin.request(
        "PATCH", f"{V3}/projects/{project['id']}", json={"project": {"enabled": False}}
    )
    assert status == 200 and body["project"]["enabled"] is False
    status, body = await admin.get(f"{V3}/projects?enabled=false")
    assert [p["name"] for p in body["projects"]] == ["ops"]
    assert (await admin.delete(f"{V3}/projects/{project['id']}"))[0] == 204
    status, body = await admin.get(f"{V3}/projects/{project['id']}")
    assert status == 404 and identity_error(body, 404)
    status, body = await admin.get(f"{V3}/domains/default")
    assert status == 200 and body["domain"]["name"] == "Default"


async def test_user_crud_and_disabling_stops_its_token(admin: Api) -> None:
    status, body = await admin.get(f"{V3}/projects?name=demo")
    demo_project = body["projects"][0]["id"]
    status, body = await admin.post(
        f"{V3}/users",
        {
            "user": {
                "name": "frank",
                "password": "pw-frank",
                "default_project_id": demo_project,
                "domain_id": "default",
            }
        },
    )
    assert status == 201, body
    user = body["user"]
    assert user["default_project_id"] == demo_project and user["enabled"] is True
    assert "password" not in user and user["links"]["self"].endswith(f"/users/{user['id']}")
    assert (await admin.put(f"{V3}/projects/{demo_project}/users/{user['id']}/roles/member"))[0] == 204
    frank = Api(admin.session, admin.base_url)
    token = await frank.login("frank", "pw-frank", project="demo")
    status, body = await admin.request("PATCH", f"{V3}/users/{user['id']}", json={"user": {"enabled": False}})
    assert status == 200 and body["user"]["enabled"] is False
    assert (await subject(admin, "GET", token))[0] == 404
    status, _, _ = await issue(admin, password_auth({"name": "frank"}, "pw-frank"))
    assert status == 401
    status, body = await admin.request(
        "PATCH", f"{V3}/users/{user['id']}", json={"user": {"enabled": True, "password": "pw-new"}}
    )
    assert status == 200
    assert (await issue(admin, password_auth({"name": "frank"}, "pw-new")))[0] == 201
    status, body = await admin.get(f"{V3}/users")
    assert {u["name"] for u in body["users"]} == {"admin", "aiostack-service", "demo", "frank"}
    assert (await admin.delete(f"{V3}/users/{user['id']}"))[0] == 204
    assert (await admin.get(f"{V3}/users/{user['id']}"))[0] == 404


async def test_groups_membership_and_group_roles(admin: Api) -> None:
    demo = await user_id(admin, "demo")
    status, body = await admin.post(f"{V3}/groups", {"group": {"name": "ops", "description": "on call"}})
    assert status == 201, body
    group = body["group"]
    assert group["links"]["self"].endswith(f"/groups/{group['id']}") and group["domain_id"] == "default"
    membership = f"{V3}/groups/{group['id']}/users/{demo}"
    assert (await admin.request("HEAD", membership))[0] == 404
    assert (await admin.put(membership))[0] == 204
    assert (await admin.request("HEAD", membership))[0] == 204
    assert (await admin.get(membership))[0] == 204
    status, body = await admin.get(f"{V3}/groups/{group['id']}/users")
    assert status == 200 and [u["name"] for u in body["users"]] == ["demo"]
    status, body = await admin.get(f"{V3}/users/{demo}/groups")
    assert [g["name"] for g in body["groups"]] == ["ops"]

    _, body = await admin.post(f"{V3}/projects", {"project": {"name": "pager"}})
    pager = body["project"]["id"]
    assert (await issue(admin, password_auth({"name": "demo"}, DEMO_PASSWORD, {"project": {"id": pager}})))[
        0
    ] == 401
    grant = f"{V3}/projects/{pager}/groups/{group['id']}/roles/reader"
    assert (await admin.put(grant))[0] == 204
    assert (await admin.request("HEAD", grant))[0] == 204
    status, body, _ = await issue(
        admin, password_auth({"name": "demo"}, DEMO_PASSWORD, {"project": {"id": pager}})
    )
    assert status == 201 and [r["name"] for r in body["token"]["roles"]] == ["reader"]
    status, body = await admin.get(f"{V3}/projects/{pager}/groups/{group['id']}/roles")
    assert [r["name"] for r in body["roles"]] == ["reader"]
    status, body = await admin.request(
        "PATCH", f"{V3}/groups/{group['id']}", json={"group": {"name": "oncall"}}
    )
    assert status == 200 and body["group"]["name"] == "oncall"
    assert (await admin.delete(membership))[0] == 204
    assert (await admin.delete(membership))[0] == 404
    assert (await admin.delete(f"{V3}/groups/{group['id']}"))[0] == 204
    assert (await admin.get(f"{V3}/groups"))[1]["groups"] == []


async def test_roles_and_role_assignments(admin: Api) -> None:
    status, body = await admin.get(f"{V3}/roles")
    assert status == 200 and {r["name"] for r in body["roles"]} >= {"admin", "member", "reader"}
    status, body = await admin.post(f"{V3}/roles", {"role": {"name": "auditor"}})
    assert status == 201 and body["role"]["name"] == "auditor"
    role = body["role"]
    assert (await admin.get(f"{V3}/roles/{role['id']}"))[1]["role"]["id"] == role["id"]
    demo = await user_id(admin, "demo")
    _, body = await admin.get(f"{V3}/projects?name=demo")
    project = body["projects"][0]["id"]
    path = f"{V3}/projects/{project}/users/{demo}/roles/{role['id']}"
    assert (await admin.request("HEAD", path))[0] == 404
    assert (await admin.put(path))[0] == 204
    assert (await admin.request("HEAD", path))[0] == 204
    status, body = await admin.get(f"{V3}/projects/{project}/users/{demo}/roles")
    assert {r["name"] for r in body["roles"]} == {"auditor", "member"}
    status, body = await admin.get(f"{V3}/role_assignments?user.id={demo}&scope.project.id={project}")
    assert status == 200, body
    assignments = body["role_assignments"]
    assert {a["role"]["id"] for a in assignments} >= {role["id"]}
    one = next(a for a in assignments if a["role"]["id"] == role["id"])
    assert one["user"] == {"id": demo} and one["scope"] == {"project": {"id": project}}
    assert one["links"]["assignment"].endswith(path)
    status, body = await admin.get(f"{V3}/role_assignments?role.id={role['id']}&include_names")
    assert [a["role"] for a in body["role_assignments"]] == [{"id": role["id"], "name": "auditor"}]
    default = {"id": "default", "name": "Default"}
    (named,) = body["role_assignments"]
    assert named["user"] == {"id": demo, "name": "demo", "domain": default}
    assert named["scope"] == {"project": {"id": project, "name": "demo", "domain": default}}
    assert (await admin.delete(path))[0] == 204
    assert (await admin.delete(path))[0] == 404
    status, body = await admin.get(f"{V3}/role_assignments?effective&group.id=x")
    assert status == 200 and body["role_assignments"] == []  # the effective ones through group x: none


async def test_role_assignments_with_names_name_groups_and_members_too(admin: Api) -> None:
    """Keystone's ``include_names``: the role's name, and the name and domain of the project, the
    user and the group, directly and through a group (``effective``)."""
    demo = await user_id(admin, "demo")
    _, body = await admin.post(f"{V3}/groups", {"group": {"name": "ops"}})
    group = body["group"]["id"]
    _, body = await admin.post(f"{V3}/projects", {"project": {"name": "pager"}})
    pager = body["project"]["id"]
    assert (await admin.put(f"{V3}/groups/{group}/users/{demo}"))[0] == 204
    assert (await admin.put(f"{V3}/projects/{pager}/groups/{group}/roles/reader"))[0] == 204
    default = {"id": "default", "name": "Default"}
    project = {"id": pager, "name": "pager", "domain": default}

    status, body = await admin.get(f"{V3}/role_assignments?scope.project.id={pager}&include_names=true")
    assert status == 200, body
    (direct,) = body["role_assignments"]
    assert direct["group"] == {"id": group, "name": "ops", "domain": default} and "user" not in direct
    assert direct["scope"] == {"project": project} and direct["role"]["name"] == "reader"
    status, body = await admin.get(f"{V3}/role_assignments?scope.project.id={pager}&effective&include_names")
    (through,) = body["role_assignments"]
    assert through["user"] == {"id": demo, "name": "demo", "domain": default} and "group" not in through
    assert through["links"]["membership"].endswith(f"/groups/{group}/users/{demo}")
    status, body = await admin.get(f"{V3}/role_assignments?scope.project.id={pager}&include_names=0")
    assert body["role_assignments"][0]["group"] == {"id": group}
    assert body["role_assignments"][0]["scope"] == {"project": {"id": pager}}


SYSTEM = {"system": {"all": True}}


async def system_login(api: Api, user: str, password: str) -> tuple[int, Any, str | None]:
    return await issue(api, password_auth({"name": user, "domain": {"id": "default"}}, password, SYSTEM))


async def test_a_system_scoped_token_administers_identity_and_nothing_else(admin: Api, member: Api) -> None:
    status, body, token = await system_login(admin, "admin", ADMIN_PASSWORD)
    assert status == 201 and token, body
    doc = body["token"]
    assert doc["system"] == {"all": True} and "project" not in doc and "is_domain" not in doc
    assert [role["name"] for role in doc["roles"]] == ["admin"] and doc["roles"][0]["id"]
    catalog = {entry["type"] for entry in doc["catalog"]}
    assert catalog >= {"identity", "compute", "image", "network"}
    assert not catalog & {"block-storage", "volumev3"}  # their URLs need a project
    system_admin = Api(admin.session, admin.base_url)
    system_admin.headers = {"X-Auth-Token": token}

    status, shown = await subject(admin, "GET", token)
    assert status == 200 and shown["token"]["system"] == {"all": True}
    assert shown["token"]["roles"] == doc["roles"] and "project" not in shown["token"]
    status, shown = await subject(system_admin, "GET", token)
    assert status == 200 and shown["token"]["roles"][0]["name"] == "admin"
    assert (await system_admin.get(f"{V3}/auth/system"))[1]["system"] == [{"all": True}]
    assert (await member.get(f"{V3}/auth/system"))[1]["system"] == []
    status, body = await system_admin.get(f"{V3}/users")
    assert status == 200 and {"admin", "demo"} <= {user["name"] for user in body["users"]}
    assert (await system_admin.post(f"{V3}/projects", {"project": {"name": "by-system"}}))[0] == 201
    assert (await system_admin.get(f"{V3}/domains/default"))[0] == 200
    # the other services want a project-scoped token: refused before any of them is asked
    for path in ("/compute/v2.1/servers", "/image/v2/images", "/network/v2.0/networks"):
        status, body = await system_admin.get(path)
        assert status == 403, (path, body)

    status, body, _ = await system_login(admin, "demo", DEMO_PASSWORD)
    assert status == 401 and identity_error(body, 401) == AUTH_FAILED  # no role on the system


async def test_system_role_assignments_of_users_and_groups(admin: Api) -> None:
    demo = await user_id(admin, "demo")
    path = f"{V3}/system/users/{demo}/roles/reader"
    assert (await admin.request("HEAD", path))[0] == 404
    assert (await admin.put(path))[0] == 204
    assert (await admin.request("HEAD", path))[0] == 204
    assert (await admin.get(path))[0] == 204
    status, body = await admin.get(f"{V3}/system/users/{demo}/roles")
    assert status == 200 and [role["name"] for role in body["roles"]] == ["reader"]

    status, body = await admin.get(f"{V3}/role_assignments?scope.system=all&user.id={demo}&include_names")
    assert status == 200, body
    (one,) = body["role_assignments"]
    assert one["scope"] == {"system": {"all": True}} and one["role"]["name"] == "reader"
    assert one["links"]["assignment"].endswith(f"/system/users/{demo}/roles/{one['role']['id']}")
    status, body = await admin.get(f"{V3}/role_assignments?user.id={demo}")
    assert {"system", "project"} == {next(iter(a["scope"])) for a in body["role_assignments"]}
    status, body = await admin.get(
        f"{V3}/role_assignments?user.id={demo}&scope.project.id=x&scope.system=all"
    )
    assert status == 200 and body["role_assignments"] == []

    status, body, token = await system_login(admin, "demo", DEMO_PASSWORD)
    assert status == 201 and [role["name"] for role in body["token"]["roles"]] == ["reader"]
    reader = Api(admin.session, admin.base_url)
    reader.headers = {"X-Auth-Token": str(token)}
    # a system reader reads identities, and changes nothing of them nor reads anything else
    assert (await reader.get(f"{V3}/users"))[0] == 200
    assert (await reader.get(f"{V3}/role_assignments?scope.system=all"))[0] == 200
    assert (await reader.request("HEAD", path))[0] == 204
    assert (await reader.put(f"{V3}/system/users/{demo}/roles/admin"))[0] == 403
    assert (await reader.post(f"{V3}/projects", {"project": {"name": "by-a-reader"}}))[0] == 403
    assert (await reader.get("/compute/v2.1/servers"))[0] == 403
    admins = admin.headers["X-Auth-Token"]
    assert (await subject(reader, "GET", admins))[0] == 200  # it may inspect anyone's token
    assert (await subject(reader, "DELETE", admins))[0] == 403  # and revoke none but its own
    assert (await admin.delete(path))[0] == 204
    assert (await admin.delete(path))[0] == 404
    assert (await subject(admin, "GET", str(token)))[0] == 404  # no role left on the system

    _, body = await admin.post(f"{V3}/groups", {"group": {"name": "operators"}})
    group = body["group"]["id"]
    assert (await admin.put(f"{V3}/groups/{group}/users/{demo}"))[0] == 204
    assert (await admin.put(f"{V3}/system/groups/{group}/roles/admin"))[0] == 204
    assert (await admin.request("HEAD", f"{V3}/system/groups/{group}/roles/admin"))[0] == 204
    status, body = await admin.get(f"{V3}/system/groups/{group}/roles")
    assert [role["name"] for role in body["roles"]] == ["admin"]
    status, body = await admin.get(f"{V3}/role_assignments?scope.system=all&effective&user.id={demo}")
    (through,) = body["role_assignments"]
    assert through["links"]["membership"].endswith(f"/groups/{group}/users/{demo}")
    status, body, token = await system_login(admin, "demo", DEMO_PASSWORD)
    assert status == 201 and [role["name"] for role in body["token"]["roles"]] == ["admin"]
    assert (await admin.delete(f"{V3}/system/groups/{group}/roles/admin"))[0] == 204
    assert (await admin.get(f"{V3}/system/users/nobody/roles"))[0] == 404
    assert (await admin.put(f"{V3}/system/users/{demo}/roles/nosuchrole"))[0] == 404


async def test_rescoping_to_and_from_the_system(admin: Api) -> None:
    _, _, unscoped = await issue(admin, password_auth({"name": "admin"}, ADMIN_PASSWORD, "unscoped"))
    rescope = {"identity": {"methods": ["token"], "token": {"id": unscoped}}}
    status, body, system = await issue(admin, {"auth": {**rescope, "scope": SYSTEM}})
    assert status == 201 and body["token"]["system"] == {"all": True}, body
    assert body["token"]["methods"] == ["token", "password"]
    status, body, _ = await issue(
        admin,
        {
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": system}},
                "scope": {"project": {"name": "admin"}},
            }
        },
    )
    assert status == 201 and body["token"]["project"]["name"] == "admin" and "system" not in body["token"]
    status, body, _ = await issue(
        admin, {"auth": {**rescope, "scope": {"project": {"name": "admin"}, "system": {"all": True}}}}
    )
    assert status == 400 and identity_error(body, 400)


async def test_role_update_and_delete(admin: Api) -> None:
    _, body = await admin.post(f"{V3}/roles", {"role": {"name": "observer"}})
    role = body["role"]["id"]
    status, body = await admin.request("PATCH", f"{V3}/roles/{role}", json={"role": {"name": "watcher"}})
    assert status == 200 and body["role"]["name"] == "watcher" and body["role"]["id"] == role
    status, body = await admin.request("PATCH", f"{V3}/roles/{role}", json={"role": {"description": "eyes"}})
    assert status == 200 and body["role"] == {**body["role"], "name": "watcher", "description": "eyes"}
    status, body = await admin.request("PATCH", f"{V3}/roles/{role}", json={"role": {"name": "member"}})
    assert status == 409 and identity_error(body, 409)
    status, body = await admin.request("PATCH", f"{V3}/roles/nope", json={"role": {"name": "x"}})
    assert status == 404 and identity_error(body, 404)

    demo = await user_id(admin, "demo")
    _, body = await admin.get(f"{V3}/projects?name=demo")
    project = body["projects"][0]["id"]
    assert (await admin.put(f"{V3}/projects/{project}/users/{demo}/roles/{role}"))[0] == 204
    assert (await admin.put(f"{V3}/system/users/{demo}/roles/{role}"))[0] == 204
    assert (await admin.delete(f"{V3}/roles/{role}"))[0] == 204
    assert (await admin.get(f"{V3}/roles/{role}"))[0] == 404
    assert (await admin.delete(f"{V3}/roles/{role}"))[0] == 404
    status, body = await admin.get(f"{V3}/role_assignments?user.id={demo}")
    assert role not in {a["role"]["id"] for a in body["role_assignments"]}


async def test_a_users_own_projects(admin: Api, member: Api) -> None:
    demo, admin_id = await user_id(admin, "demo"), await user_id(admin, "admin")
    _, body = await admin.post(f"{V3}/projects", {"project": {"name": "shared"}})
    shared = body["project"]["id"]
    _, body = await admin.post(f"{V3}/groups", {"group": {"name": "sharers"}})
    group = body["group"]["id"]
    assert (await admin.put(f"{V3}/groups/{group}/users/{demo}"))[0] == 204
    assert (await admin.put(f"{V3}/projects/{shared}/groups/{group}/roles/reader"))[0] == 204
    status, body = await member.get(f"{V3}/users/{demo}/projects")
    assert status == 200 and [p["name"] for p in body["projects"]] == ["demo", "shared"], body
    assert body["projects"][0]["links"]["self"].endswith(f"/projects/{body['projects'][0]['id']}")
    status, body = await admin.get(f"{V3}/users/{demo}/projects")
    assert status == 200 and len(body["projects"]) == 2
    status, body = await member.get(f"{V3}/users/{admin_id}/projects")
    assert status == 403 and identity_error(body, 403)
    assert (await member.get(f"{V3}/users/nobody/projects"))[0] == 403  # no existence leak
    assert (await member.get(f"{V3}/users/demo/projects"))[0] == 200  # by name, as openstack --user does
    assert (await admin.get(f"{V3}/users/nobody/projects"))[0] == 404


async def test_a_user_changes_its_own_password(admin: Api, member: Api) -> None:
    demo = await user_id(admin, "demo")
    path = f"{V3}/users/{demo}/password"
    old_token = member.headers["X-Auth-Token"]
    status, body = await admin.post(path, {"user": {"password": "new-secret", "original_password": "wrong"}})
    assert status == 401 and identity_error(body, 401) == AUTH_FAILED
    assert (await subject(admin, "GET", old_token))[0] == 200  # nothing changed
    status, body = await admin.post(path, {"user": {"password": "", "original_password": DEMO_PASSWORD}})
    assert status == 400 and identity_error(body, 400)

    async with admin.session.post(
        f"{admin.base_url}{path}",
        json={"user": {"password": "new-secret", "original_password": DEMO_PASSWORD}},
    ) as response:  # no token needed: the original password is the proof
        assert response.status == 204, await response.text()
    assert (await subject(admin, "GET", old_token))[0] == 404
    assert (await member.get(f"{V3}/auth/projects"))[0] == 401
    status, _, _ = await issue(admin, password_auth({"name": "demo"}, DEMO_PASSWORD))
    assert status == 401
    status, _, _ = await issue(admin, password_auth({"name": "demo"}, "new-secret"))
    assert status == 201
    assert (
        await admin.post(f"{V3}/users/nobody/password", {"user": {"password": "x", "original_password": "y"}})
    )[0] == 401


async def test_the_default_domain_is_shown_to_tokens_scoped_in_it(admin: Api, member: Api) -> None:
    status, body = await member.get(f"{V3}/domains/default")
    assert status == 200 and body["domain"]["id"] == "default" and body["domain"]["name"] == "Default"
    assert (await member.get(f"{V3}/domains/elsewhere"))[0] == 404
    assert (await member.get(f"{V3}/domains"))[0] == 403
    _, _, unscoped = await issue(admin, password_auth({"name": "demo"}, DEMO_PASSWORD, "unscoped"))
    nobody = Api(admin.session, admin.base_url)
    nobody.headers = {"X-Auth-Token": str(unscoped)}
    status, body = await nobody.get(f"{V3}/domains/default")
    assert status == 403 and identity_error(body, 403)


async def test_a_throttled_address_gets_429_with_retry_after_in_keystones_format(admin: Api) -> None:
    """The gateway hands the socket's peer address to the identity actor, never a header."""
    statuses = []
    for _ in range(6):  # five free failures for one user from one address; the sixth earns a refusal
        statuses.append((await issue(admin, password_auth({"name": "admin"}, "guess")))[0])
    assert statuses == [401] * 6
    async with admin.session.post(  # a header naming another address is not believed
        f"{admin.base_url}{V3}/auth/tokens",
        json=password_auth({"name": "admin"}, ADMIN_PASSWORD),
        headers={"X-Forwarded-For": "198.51.100.1"},
    ) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["x-openstack-request-id"].startswith("req-")
        message = identity_error(await response.json(), 429)
    assert "address" in message and "admin" not in message
    assert (await issue(admin, password_auth({"name": "demo"}, DEMO_PASSWORD)))[0] == 201  # other users


async def test_application_credentials_over_rest(admin: Api, member: Api) -> None:
    demo = await user_id(admin, "demo")
    _, body = await admin.get(f"{V3}/projects?name=demo")
    project = body["projects"][0]["id"]
    assert (await admin.put(f"{V3}/projects/{project}/users/{demo}/roles/reader"))[0] == 204
    creds = f"{V3}/users/{demo}/application_credentials"
    status, body = await member.post(
        creds, {"application_credential": {"name": "ci", "roles": [{"name": "reader"}], "expires_at": None}}
    )
    assert status == 201, body
    cred = body["application_credential"]
    assert cred["secret"] and cred["project_id"] == project and cred["unrestricted"] is False
    assert [r["name"] for r in cred["roles"]] == ["reader"] and cred["expires_at"] is None
    status, body = await member.get(creds)
    assert status == 200 and [c["id"] for c in body["application_credentials"]] == [cred["id"]]
    assert "secret" not in body["application_credentials"][0]
    assert (await member.get(f"{creds}/{cred['id']}"))[1]["application_credential"]["name"] == "ci"

    login = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": cred["id"], "secret": cred["secret"]},
            }
        }
    }
    status, body, token = await issue(member, login)
    assert status == 201 and token
    assert body["token"]["methods"] == ["application_credential"]
    assert [r["name"] for r in body["token"]["roles"]] == ["reader"]
    assert body["token"]["application_credential"]["id"] == cred["id"]
    status, body = await subject(admin, "GET", token)
    assert status == 200 and body["token"]["application_credential"]["id"] == cred["id"]

    admin_id = await user_id(admin, "admin")
    status, body = await member.post(
        f"{V3}/users/{admin_id}/application_credentials", {"application_credential": {"name": "x"}}
    )
    assert status == 403 and identity_error(body, 403)
    assert (await member.get(f"{V3}/users/{admin_id}/application_credentials"))[0] == 403
    status, body = await member.post(
        creds, {"application_credential": {"name": "y", "roles": [{"name": "admin"}]}}
    )
    assert status == 403
    assert (await member.delete(f"{creds}/{cred['id']}"))[0] == 204
    assert (await member.delete(f"{creds}/{cred['id']}"))[0] == 404
    assert (await issue(member, login))[0] == 401
    assert (await subject(admin, "GET", token))[0] == 404


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/projects", None),
        ("POST", "/projects", {"project": {"name": "sneaky"}}),
        ("GET", "/projects/PROJECT", None),
        ("PATCH", "/projects/PROJECT", {"project": {"enabled": False}}),
        ("DELETE", "/projects/PROJECT", None),
        ("GET", "/users", None),
        ("POST", "/users", {"user": {"name": "sneaky", "password": "pw"}}),
        ("PATCH", "/users/USER", {"user": {"password": "mine"}}),
        ("DELETE", "/users/USER", None),
        ("GET", "/groups", None),
        ("POST", "/groups", {"group": {"name": "sneaky"}}),
        ("GET", "/roles", None),
        ("POST", "/roles", {"role": {"name": "boss"}}),
        ("PUT", "/projects/PROJECT/users/USER/roles/admin", None),
        ("DELETE", "/projects/PROJECT/users/USER/roles/member", None),
        ("GET", "/role_assignments", None),
        ("GET", "/domains", None),
        ("PATCH", "/roles/member", {"role": {"name": "boss"}}),
        ("DELETE", "/roles/admin", None),
        ("PUT", "/system/users/USER/roles/admin", None),
        ("GET", "/system/users/USER/roles", None),
        ("HEAD", "/system/users/USER/roles/admin", None),
    ],
)
async def test_a_member_gets_403_on_admin_paths(
    admin: Api, member: Api, method: str, path: str, body: Any
) -> None:
    _, projects = await admin.get(f"{V3}/projects?name=demo")
    path = path.replace("PROJECT", projects["projects"][0]["id"]).replace(
        "USER", await user_id(admin, "demo")
    )
    status, answer = await member.request(method, V3 + path, **({"json": body} if body else {}))
    assert status == 403, answer
    if method != "HEAD":
        assert identity_error(answer, 403)
    assert (await admin.get(f"{V3}/projects?name=sneaky"))[1]["projects"] == []
    assert (await subject(admin, "GET", member.headers["X-Auth-Token"]))[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/projects", {"project": {"name": ""}}),
        ("POST", "/projects", {"project": {"name": "x" * 300}}),
        ("POST", "/projects", {"project": {"name": "ok", "enabled": "yes"}}),
        ("POST", "/projects", {"project": {"name": "ok", "domain_id": "elsewhere"}}),
        ("POST", "/projects", {"project": "ok"}),
        ("POST", "/projects", {"name": "ok"}),
        ("PATCH", "/projects/PROJECT", {"project": {"name": "renamed", "enabled": "no"}}),
        ("PATCH", "/projects/PROJECT", {"project": {"name": None}}),
        ("POST", "/users", {"user": {"name": "ok", "password": 5}}),
        ("PATCH", "/users/USER", {"user": {"name": "renamed", "enabled": 0}}),
        ("POST", "/groups", {"group": {"name": ["x"]}}),
        ("POST", "/roles", {"role": {}}),
        ("POST", "/roles", {"role": {"name": "system:admin"}}),
        ("PATCH", "/roles/reader", {"role": {"name": "system:reader"}}),
        ("PATCH", "/roles/reader", {"role": {"name": ""}}),
        ("POST", "/auth/tokens", {"auth": "nonsense"}),
        ("POST", "/auth/tokens", {"auth": {"identity": {"methods": "password"}}}),
        ("POST", "/auth/tokens", {"auth": {"identity": {"methods": ["password"], "password": {"user": {}}}}}),
        ("POST", "/auth/tokens", {"auth": {"identity": {"methods": ["token"], "token": {}}}}),
        ("POST", "/auth/tokens", {"auth": {"identity": {"methods": ["application_credential"]}}}),
        (
            "POST",
            "/auth/tokens",
            {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {"user": {"name": "demo", "password": "x"}},
                    },
                    "scope": {"domain": {"id": "default"}},
                }
            },
        ),
    ],
)
async def test_bad_input_is_400_with_a_message_and_changes_nothing(
    admin: Api, method: str, path: str, body: Any
) -> None:
    _, projects = await admin.get(f"{V3}/projects?name=demo")
    path = path.replace("PROJECT", projects["projects"][0]["id"]).replace(
        "USER", await user_id(admin, "demo")
    )
    before = [(await admin.get(f"{V3}/{kind}"))[1][kind] for kind in ("projects", "users", "groups", "roles")]
    status, answer = await admin.request(method, V3 + path, json=body)
    assert status == 400, answer
    assert identity_error(answer, 400)
    after = [(await admin.get(f"{V3}/{kind}"))[1][kind] for kind in ("projects", "users", "groups", "roles")]
    assert after == before


async def test_unparsable_json_and_unsupported_methods(admin: Api) -> None:
    status, body = await admin.request(
        "POST", f"{V3}/projects", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and identity_error(body, 400)
    status, body, _ = await issue(admin, {"auth": {"identity": {"methods": ["totp"], "totp": {}}}})
    assert status == 401 and identity_error(body, 401)
