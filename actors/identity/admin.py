"""Identity administration: projects, users, groups, roles, role assignments — the ``IdentityAdmin``
facet of ``api/identity.py``.

Every handler here is admin only (``Forbidden`` otherwise; a service-internal call with no
user context counts as admin; so does a user with the admin role on the system); those that
only read also serve a user with any role on the system (Keystone's system reader), and
``list_user_projects`` the user itself. Arguments naming a project, user, group or role take
its id or its name. The arguments' types and bounds are checked before a handler runs; what is
left here are the checks of meaning (a name taken, a row that does not exist), all made before
anything is written. Disabling or deleting a user or a project revokes its tokens at once. A
user's roles on a project (or on the system) are its own assignments plus those of its groups.
Role names starting with ``system:`` are refused: that is what roles held on the system are
called in a caller's context (``runtime.policy.system_role``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.identity.passwords import hash_password
from actors.identity.state import IdentityState, reads_all
from api.identity import Group, IdentityAdmin, Project, Role, RoleAssignment, User
from bus import Conflict, Forbidden, InvalidRequest, NotFound
from runtime.context import caller
from runtime.policy import SYSTEM_ROLE_PREFIX
from runtime.stamps import new_uuid, utcnow

DOMAIN_ID = "default"

PROJECT_COLUMNS = "id, name, description, domain_id, enabled, created_at"
USER_COLUMNS = "id, name, description, domain_id, default_project_id, enabled, created_at"
GROUP_COLUMNS = "id, name, description, domain_id, created_at"
ROLE_COLUMNS = "id, name, description"


def _project(row: dict[str, Any]) -> Project:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "domain_id": row["domain_id"],
        "enabled": bool(row["enabled"]),
        "created_at": row["created_at"],
    }


def _user(row: dict[str, Any]) -> User:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "domain_id": row["domain_id"],
        "default_project_id": row["default_project_id"],
        "enabled": bool(row["enabled"]),
        "created_at": row["created_at"],
    }


def _group(row: dict[str, Any]) -> Group:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "domain_id": row["domain_id"],
        "created_at": row["created_at"],
    }


def _role(row: dict[str, Any]) -> Role:
    return {"id": row["id"], "name": row["name"], "description": row["description"]}


def _new_id() -> str:
    return new_uuid().replace("-", "")


def _check_role_name(name: str) -> None:
    """:raises InvalidRequest: ``name`` starts with ``system:``."""
    if name.startswith(SYSTEM_ROLE_PREFIX):
        raise InvalidRequest(f"Role names may not start with {SYSTEM_ROLE_PREFIX!r}: {name!r}.")


class AdminService(IdentityAdmin):
    """Serves ``IdentityAdmin`` for the identity actor."""

    def __init__(self, state: IdentityState) -> None:
        self.state = state
        self.store = state.store

    async def _unique(self, table: str, name: str, what: str, except_id: str | None = None) -> None:
        """:raises Conflict: another row of ``table`` has that name."""
        row = await self.store.fetchone(f"SELECT id FROM {table} WHERE name = ?", (name,))
        if row is not None and row["id"] != except_id:
            raise Conflict(f"{what} {name!r} already exists")

    async def _update(self, table: str, row_id: str, changes: dict[str, Any]) -> None:
        if changes:
            assignments = ", ".join(f"{column} = :{column}" for column in changes)
            await self.store.execute(
                f"UPDATE {table} SET {assignments} WHERE id = :id", {**changes, "id": row_id}
            )

    # -- projects ---------------------------------------------------------------------------

    async def create_project(
        self, *, name: str, description: str = "", enabled: bool = True, domain_id: str | None = None
    ) -> Project:
        self.state.require_admin()
        project: Project = {
            "id": _new_id(),
            "name": name,
            "description": description,
            "domain_id": DOMAIN_ID,
            "enabled": enabled,
            "created_at": utcnow(),
        }
        await self._unique("projects", name, "project")
        await self.store.execute(
            "INSERT INTO projects (id, name, description, domain_id, enabled, created_at)"
            " VALUES (:id, :name, :description, :domain_id, :enabled, :created_at)",
            dict(project),
        )
        return project

    async def list_projects(self, *, name: str | None = None, enabled: bool | None = None) -> list[Project]:
        self.state.require_reader()
        rows = await self.store.fetchall(
            f"SELECT {PROJECT_COLUMNS} FROM projects"
            " WHERE (name = :name OR :name IS NULL) AND (enabled = :enabled OR :enabled IS NULL)"
            " ORDER BY name",
            {"name": name, "enabled": enabled},
        )
        return [_project(row) for row in rows]

    async def get_project(self, *, project_id: str) -> Project:
        self.state.require_reader()
        return _project(await self.state.find("projects", project_id, PROJECT_COLUMNS))

    async def update_project(
        self,
        *,
        project_id: str,
        name: str | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Project:
        self.state.require_admin()
        project = _project(await self.state.find("projects", project_id, PROJECT_COLUMNS))
        was_enabled = project["enabled"]
        changes: dict[str, Any] = {}
        if name is not None:
            await self._unique("projects", name, "project", project["id"])
            changes["name"] = project["name"] = name
        if description is not None:
            changes["description"] = project["description"] = description
        if enabled is not None:
            changes["enabled"] = project["enabled"] = enabled
        await self._update("projects", project["id"], changes)
        if enabled is False and was_enabled:
            await self.state.revoke("project", project["id"])
        return project

    async def delete_project(self, *, project_id: str) -> None:
        self.state.require_admin()
        project = await self.state.find("projects", project_id, "id")
        await self.store.execute("DELETE FROM projects WHERE id = ?", (project["id"],))
        await self.state.revoke("project", project["id"])

    # -- users ------------------------------------------------------------------------------

    async def create_user(
        self,
        *,
        name: str,
        password: str | None = None,
        default_project: str | None = None,
        enabled: bool = True,
        description: str = "",
        domain_id: str | None = None,
    ) -> User:
        self.state.require_admin()
        project_id = None
        if default_project:
            project_id = (await self.state.find("projects", default_project, "id"))["id"]
        user: User = {
            "id": _new_id(),
            "name": name,
            "description": description,
            "domain_id": DOMAIN_ID,
            "default_project_id": project_id,
            "enabled": enabled,
            "created_at": utcnow(),
        }
        await self._unique("users", name, "user")
        password_hash = await asyncio.to_thread(hash_password, password) if password is not None else ""
        await self.store.execute(
            "INSERT INTO users (id, name, description, password_hash, domain_id, default_project_id,"
            " enabled, created_at) VALUES (:id, :name, :description, :password_hash, :domain_id,"
            " :default_project_id, :enabled, :created_at)",
            {**user, "password_hash": password_hash},
        )
        return user

    async def list_users(self, *, name: str | None = None, enabled: bool | None = None) -> list[User]:
        self.state.require_reader()
        rows = await self.store.fetchall(
            f"SELECT {USER_COLUMNS} FROM users"
            " WHERE (name = :name OR :name IS NULL) AND (enabled = :enabled OR :enabled IS NULL)"
            " ORDER BY name",
            {"name": name, "enabled": enabled},
        )
        return [_user(row) for row in rows]

    async def get_user(self, *, user_id: str) -> User:
        self.state.require_reader()
        return _user(await self.state.find("users", user_id, USER_COLUMNS))

    async def list_user_projects(self, *, user_id: str) -> list[Project]:
        ctx = caller()
        reader = reads_all(ctx)
        try:
            user: dict[str, Any] | None = await self.state.find("users", user_id, "id")
        except NotFound:
            if reader:
                raise
            user = None  # to anyone else, another user's and no user's projects are refused alike
        if user is None or not (reader or (ctx is not None and ctx.user_id == user["id"])):
            raise Forbidden("only the user itself, an admin or a reader on the system may list its projects")
        columns = ", ".join(f"p.{column.strip()}" for column in PROJECT_COLUMNS.split(","))
        rows = await self.store.fetchall(
            f"SELECT {columns} FROM projects p WHERE p.id IN ("
            " SELECT project_id FROM assignments WHERE user_id = :user"
            " UNION SELECT a.project_id FROM group_assignments a"
            " JOIN group_members m ON m.group_id = a.group_id WHERE m.user_id = :user) ORDER BY p.name",
            {"user": user["id"]},
        )
        return [_project(row) for row in rows]

    async def update_user(
        self,
        *,
        user_id: str,
        name: str | None = None,
        password: str | None = None,
        enabled: bool | None = None,
        description: str | None = None,
        default_project: str | None = None,
    ) -> User:
        self.state.require_admin()
        user = _user(await self.state.find("users", user_id, USER_COLUMNS))
        was_enabled = user["enabled"]
        changes: dict[str, Any] = {}
        if name is not None:
            await self._unique("users", name, "user", user["id"])
            changes["name"] = user["name"] = name
        if description is not None:
            changes["description"] = user["description"] = description
        if enabled is not None:
            changes["enabled"] = user["enabled"] = enabled
        if default_project is not None:
            changes["default_project_id"] = user["default_project_id"] = (
                (await self.state.find("projects", default_project, "id"))["id"] if default_project else None
            )
        if password is not None:
            changes["password_hash"] = await asyncio.to_thread(hash_password, password)
        await self._update("users", user["id"], changes)
        if password is not None or (enabled is False and was_enabled):
            await self.state.revoke("user", user["id"])
        return user

    async def delete_user(self, *, user_id: str) -> None:
        self.state.require_admin()
        user = await self.state.find("users", user_id, "id")
        await self.store.execute("DELETE FROM users WHERE id = ?", (user["id"],))
        await self.state.revoke("user", user["id"])

    # -- groups -----------------------------------------------------------------------------

    async def create_group(self, *, name: str, description: str = "", domain_id: str | None = None) -> Group:
        self.state.require_admin()
        group: Group = {
            "id": _new_id(),
            "name": name,
            "description": description,
            "domain_id": DOMAIN_ID,
            "created_at": utcnow(),
        }
        await self._unique("user_groups", name, "group")
        await self.store.execute(
            "INSERT INTO user_groups (id, name, description, domain_id, created_at)"
            " VALUES (:id, :name, :description, :domain_id, :created_at)",
            dict(group),
        )
        return group

    async def list_groups(self, *, name: str | None = None) -> list[Group]:
        self.state.require_reader()
        return await self.store.fetchall(
            f"SELECT {GROUP_COLUMNS} FROM user_groups WHERE (name = :name OR :name IS NULL) ORDER BY name",
            {"name": name},
            row=Group,
        )

    async def get_group(self, *, group_id: str) -> Group:
        self.state.require_reader()
        return _group(await self.state.find("user_groups", group_id, GROUP_COLUMNS))

    async def update_group(
        self, *, group_id: str, name: str | None = None, description: str | None = None
    ) -> Group:
        self.state.require_admin()
        group = _group(await self.state.find("user_groups", group_id, GROUP_COLUMNS))
        changes: dict[str, Any] = {}
        if name is not None:
            await self._unique("user_groups", name, "group", group["id"])
            changes["name"] = group["name"] = name
        if description is not None:
            changes["description"] = group["description"] = description
        await self._update("user_groups", group["id"], changes)
        return group

    async def delete_group(self, *, group_id: str) -> None:
        self.state.require_admin()
        group = await self.state.find("user_groups", group_id, "id")
        await self.store.execute("DELETE FROM user_groups WHERE id = ?", (group["id"],))

    async def _member(self, group_id: str, user_id: str) -> tuple[str, str]:
        """The ids of the group and the user (each given by id or name)."""
        group = await self.state.find("user_groups", group_id, "id")
        user = await self.state.find("users", user_id, "id")
        return group["id"], user["id"]

    async def add_user_to_group(self, *, group_id: str, user_id: str) -> None:
        self.state.require_admin()
        await self.store.execute(
            "INSERT INTO group_members (group_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            await self._member(group_id, user_id),
        )

    async def remove_user_from_group(self, *, group_id: str, user_id: str) -> None:
        self.state.require_admin()
        removed = await self.store.execute(
            "DELETE FROM group_members WHERE group_id = ? AND user_id = ?",
            await self._member(group_id, user_id),
        )
        if not removed:
            raise NotFound(f"User {user_id} is not a member of group {group_id}.")

    async def check_user_in_group(self, *, group_id: str, user_id: str) -> bool:
        self.state.require_reader()
        return bool(
            await self.store.fetchone(
                "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?",
                await self._member(group_id, user_id),
            )
        )

    async def list_group_users(self, *, group_id: str) -> list[User]:
        self.state.require_reader()
        group = await self.state.find("user_groups", group_id, "id")
        columns = ", ".join(f"users.{column.strip()}" for column in USER_COLUMNS.split(","))
        rows = await self.store.fetchall(
            f"SELECT {columns} FROM users JOIN group_members ON group_members.user_id = users.id"
            " WHERE group_members.group_id = ? ORDER BY users.name",
            (group["id"],),
        )
        return [_user(row) for row in rows]

    async def list_user_groups(self, *, user_id: str) -> list[Group]:
        self.state.require_reader()
        user = await self.state.find("users", user_id, "id")
        columns = ", ".join(f"user_groups.{column.strip()}" for column in GROUP_COLUMNS.split(","))
        return await self.store.fetchall(
            f"SELECT {columns} FROM user_groups JOIN group_members ON group_members.group_id = user_groups.id"
            " WHERE group_members.user_id = ? ORDER BY user_groups.name",
            (user["id"],),
            row=Group,
        )

    # -- roles and assignments ------------------------------------------------------------

    async def list_roles(self, *, name: str | None = None) -> list[Role]:
        self.state.require_reader()
        return await self.store.fetchall(
            f"SELECT {ROLE_COLUMNS} FROM roles WHERE (name = :name OR :name IS NULL) ORDER BY name",
            {"name": name},
            row=Role,
        )

    async def create_role(self, *, name: str, description: str = "") -> Role:
        self.state.require_admin()
        _check_role_name(name)
        role: Role = {"id": _new_id(), "name": name, "description": description}
        await self._unique("roles", name, "role")
        await self.store.execute(
            "INSERT INTO roles (id, name, description) VALUES (:id, :name, :description)", dict(role)
        )
        return role

    async def get_role(self, *, role_id: str) -> Role:
        self.state.require_reader()
        return _role(await self.state.find("roles", role_id, ROLE_COLUMNS))

    async def update_role(
        self, *, role_id: str, name: str | None = None, description: str | None = None
    ) -> Role:
        self.state.require_admin()
        role = _role(await self.state.find("roles", role_id, ROLE_COLUMNS))
        changes: dict[str, Any] = {}
        if name is not None:
            _check_role_name(name)
            await self._unique("roles", name, "role", role["id"])
            changes["name"] = role["name"] = name
        if description is not None:
            changes["description"] = role["description"] = description
        await self._update("roles", role["id"], changes)
        return role

    async def delete_role(self, *, role_id: str) -> None:
        self.state.require_admin()
        role = await self.state.find("roles", role_id, "id")
        # its assignments on projects and on the system go with it (ON DELETE CASCADE)
        await self.store.execute("DELETE FROM roles WHERE id = ?", (role["id"],))

    async def grant_role(self, *, user: str, project: str, role: str) -> None:
        self.state.require_admin()
        target = await self.state.find("users", user, "id")
        await self._assign("assignments", "user_id", target["id"], project, role)

    async def revoke_role(self, *, user: str, project: str, role: str) -> None:
        self.state.require_admin()
        target = await self.state.find("users", user, "id")
        await self._unassign("assignments", "user_id", target["id"], project, role)

    async def grant_group_role(self, *, group: str, project: str, role: str) -> None:
        self.state.require_admin()
        target = await self.state.find("user_groups", group, "id")
        await self._assign("group_assignments", "group_id", target["id"], project, role)

    async def revoke_group_role(self, *, group: str, project: str, role: str) -> None:
        self.state.require_admin()
        target = await self.state.find("user_groups", group, "id")
        await self._unassign("group_assignments", "group_id", target["id"], project, role)

    async def grant_system_role(self, *, user: str, role: str) -> None:
        self.state.require_admin()
        target = await self.state.find("users", user, "id")
        await self._assign_system("system_assignments", "user_id", target["id"], role)

    async def revoke_system_role(self, *, user: str, role: str) -> None:
        self.state.require_admin()
        target = await self.state.find("users", user, "id")
        await self._unassign_system("system_assignments", "user_id", target["id"], role)

    async def grant_group_system_role(self, *, group: str, role: str) -> None:
        self.state.require_admin()
        target = await self.state.find("user_groups", group, "id")
        await self._assign_system("system_group_assignments", "group_id", target["id"], role)

    async def revoke_group_system_role(self, *, group: str, role: str) -> None:
        self.state.require_admin()
        target = await self.state.find("user_groups", group, "id")
        await self._unassign_system("system_group_assignments", "group_id", target["id"], role)

    async def _assign_system(self, table: str, column: str, target_id: str, role: str) -> None:
        role_row = await self.state.find("roles", role, "id")
        await self.store.execute(
            f"INSERT INTO {table} ({column}, role_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (target_id, role_row["id"]),
        )

    async def _unassign_system(self, table: str, column: str, target_id: str, role: str) -> None:
        role_row = await self.state.find("roles", role, "id")
        removed = await self.store.execute(
            f"DELETE FROM {table} WHERE {column} = ? AND role_id = ?", (target_id, role_row["id"])
        )
        if not removed:
            raise NotFound(f"Could not find role assignment of {role} on the system.")

    async def _assign(self, table: str, column: str, target_id: str, project: str, role: str) -> None:
        project_row = await self.state.find("projects", project, "id")
        role_row = await self.state.find("roles", role, "id")
        await self.store.execute(
            f"INSERT INTO {table} ({column}, project_id, role_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (target_id, project_row["id"], role_row["id"]),
        )

    async def _unassign(self, table: str, column: str, target_id: str, project: str, role: str) -> None:
        project_row = await self.state.find("projects", project, "id")
        role_row = await self.state.find("roles", role, "id")
        removed = await self.store.execute(
            f"DELETE FROM {table} WHERE {column} = ? AND project_id = ? AND role_id = ?",
            (target_id, project_row["id"], role_row["id"]),
        )
        if not removed:
            raise NotFound(f"Could not find role assignment of {role} on project {project}.")

    async def list_role_assignments(
        self,
        *,
        user_id: str | None = None,
        group_id: str | None = None,
        project_id: str | None = None,
        role_id: str | None = None,
        effective: bool = False,
        scope: str | None = None,
    ) -> list[RoleAssignment]:
        self.state.require_reader()
        if role_id is not None:
            role_id = (await self.state.find("roles", role_id, "id"))["id"]
        params = {"user": user_id, "group": group_id, "project": project_id, "role": role_id}
        rows = EFFECTIVE if effective else f"SELECT d.*, CAST(NULL AS TEXT) AS via_group FROM ({DIRECT}) d"
        group_column = "via_group" if effective else "group_id"
        where = [
            f"({_absent('project')} OR x.project_id = :project)",
            f"({_absent('role')} OR x.role_id = :role)",
            f"({_absent('user')} OR x.user_id = :user)",
            f"({_absent('group')} OR x.{group_column} = :group)",
        ]
        if scope is not None:
            where.append(f"x.project_id IS {'NOT ' if scope == 'project' else ''}NULL")
        sql = (
            "SELECT x.role_id, r.name AS role_name, x.project_id, p.name AS project_name,"
            " x.user_id, u.name AS user_name, x.group_id, g.name AS group_name, x.via_group"
            f" FROM ({rows}) x JOIN roles r ON r.id = x.role_id"
            " LEFT JOIN projects p ON p.id = x.project_id LEFT JOIN users u ON u.id = x.user_id"
            " LEFT JOIN user_groups g ON g.id = x.group_id"
            f" WHERE {' AND '.join(where)} ORDER BY 3, 2, 5, 7"
        )
        return await self.store.fetchall(sql, params, row=RoleAssignment)


DIRECT = (
    "SELECT user_id, CAST(NULL AS TEXT) AS group_id, project_id, role_id FROM assignments"
    " UNION ALL SELECT NULL, group_id, project_id, role_id FROM group_assignments"
    " UNION ALL SELECT user_id, NULL, NULL, role_id FROM system_assignments"
    " UNION ALL SELECT NULL, group_id, NULL, role_id FROM system_group_assignments"
)
"""Every assignment as (user_id, group_id, project_id, role_id): a user's or a group's, on a
project or on the system (no project)."""
EFFECTIVE = (
    f"SELECT d.*, CAST(NULL AS TEXT) AS via_group FROM ({DIRECT}) d WHERE d.user_id IS NOT NULL"
    f" UNION ALL SELECT m.user_id, NULL, d.project_id, d.role_id, d.group_id FROM ({DIRECT}) d"
    " JOIN group_members m ON m.group_id = d.group_id"
)
"""The assignments each user holds (DIRECT's columns and ``via_group``): its own, and its groups'
once per member."""


def _absent(name: str) -> str:
    """The condition "parameter ``name`` is None", typed (PostgreSQL must know a parameter's type)."""
    return f"CAST(:{name} AS TEXT) IS NULL"
