"""The token actor's administration handlers: projects, users, groups, roles, role assignments.

Every handler here is admin only (``Forbidden`` otherwise; a service-internal call with no
user context counts as admin). Arguments naming a project, user, group or role take its
id or its name. Invalid input raises ``InvalidRequest`` before anything is written.
Disabling or deleting a user or a project revokes its tokens at once (``_revoke``).
A user's roles on a project are its own assignments plus those of its groups.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.token_passwords import hash_password
from bus import Conflict, Forbidden, InvalidRequest, NotFound, handler
from runtime.context import caller, sees_all
from runtime.stamps import new_uuid, utcnow
from runtime.store import Store

DOMAIN_ID = "default"
NAME_LIMIT = 255
TEXT_LIMIT = 1024

PROJECT_COLUMNS = "id, name, description, domain_id, enabled, created_at"
USER_COLUMNS = "id, name, description, domain_id, default_project_id, enabled, created_at"
GROUP_COLUMNS = "id, name, description, domain_id, created_at"


def check_name(value: Any, what: str) -> str:
    """A non-empty name of at most 255 characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > NAME_LIMIT:
        raise InvalidRequest(f"{what} must be a non-empty string of at most {NAME_LIMIT} characters")
    return value


def check_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > TEXT_LIMIT:
        raise InvalidRequest(f"{what} must be a string of at most {TEXT_LIMIT} characters")
    return value


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{what} must be true or false")
    return value


def check_domain(value: Any) -> None:
    if value not in (None, DOMAIN_ID):
        raise InvalidRequest("only the domain 'default' exists")


def _enabled(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None and "enabled" in row:
        row["enabled"] = bool(row["enabled"])
    return row


class IdentityAdmin:
    """Mixin of ``TokenActor``: the Keystone administration API over the bus."""

    store: Store

    async def _revoke(self, kind: str, target: str) -> dict[str, Any]:
        raise NotImplementedError  # TokenActor's

    async def _roles_of(self, user_id: str, project_id: str) -> list[dict[str, str]]:
        raise NotImplementedError  # TokenActor's

    def _require_admin(self) -> None:
        if not sees_all(caller()):
            raise Forbidden("only an admin may manage identities")

    async def _find(self, table: str, name_or_id: Any, columns: str = "*") -> dict[str, Any]:
        """The row of ``table`` with that id or name; ``NotFound`` otherwise."""
        what = {"user_groups": "group"}.get(table, table[:-1])
        if not isinstance(name_or_id, str) or not name_or_id:
            raise InvalidRequest(f"{what} must be given by a non-empty id or name")
        row = await self.store.fetchone(
            f"SELECT {columns} FROM {table} WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
            (name_or_id, name_or_id, name_or_id),
        )
        if row is None:
            raise NotFound(f"Could not find {what}: {name_or_id}.")
        return _enabled(row)  # type: ignore[return-value]

    async def _unique(self, table: str, name: str, what: str, except_id: str | None = None) -> None:
        row = await self.store.fetchone(f"SELECT id FROM {table} WHERE name = ?", (name,))
        if row is not None and row["id"] != except_id:
            raise Conflict(f"{what} {name!r} already exists")

    # -- projects ---------------------------------------------------------------------------

    @handler(policy="identity:admin")
    async def create_project(
        self, name: str, description: str = "", enabled: bool = True, domain_id: str | None = None
    ) -> dict[str, Any]:
        """Create a project in the default domain.

        :raises Forbidden: the caller is not an admin.
        :raises InvalidRequest: bad name, description, enabled or domain.
        :raises Conflict: a project of that name exists.
        """
        self._require_admin()
        check_domain(domain_id)
        return await self._create_project(name, description, enabled)

    async def _create_project(self, name: Any, description: Any, enabled: Any = True) -> dict[str, Any]:
        project = {
            "id": new_uuid().replace("-", ""),
            "name": check_name(name, "project name"),
            "description": check_text(description, "description"),
            "domain_id": DOMAIN_ID,
            "enabled": check_bool(enabled, "enabled"),
            "created_at": utcnow(),
        }
        await self._unique("projects", name, "project")
        await self.store.execute(
            "INSERT INTO projects (id, name, description, domain_id, enabled, created_at)"
            " VALUES (:id, :name, :description, :domain_id, :enabled, :created_at)",
            project,
        )
        return project

    @handler(policy="identity:admin")
    async def list_projects(
        self, name: str | None = None, enabled: bool | None = None
    ) -> list[dict[str, Any]]:
        """Projects by name, optionally only those of one name or enabled state.

        :raises Forbidden: the caller is not an admin.
        """
        self._require_admin()
        rows = await self.store.fetchall(
            f"SELECT {PROJECT_COLUMNS} FROM projects"
            " WHERE (:name IS NULL OR name = :name) AND (:enabled IS NULL OR enabled = :enabled)"
            " ORDER BY name",
            {"name": name, "enabled": enabled},
        )
        return [_enabled(row) for row in rows]  # type: ignore[misc]

    @handler(policy="identity:admin")
    async def get_project(self, project_id: str) -> dict[str, Any]:
        """:raises NotFound: no such project. :raises Forbidden: not an admin."""
        self._require_admin()
        return await self._find("projects", project_id, PROJECT_COLUMNS)

    @handler(policy="identity:admin")
    async def update_project(
        self,
        project_id: str,
        name: str | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """Rename, describe, enable or disable a project; disabling revokes its tokens.

        :raises Forbidden: not an admin. :raises NotFound: no such project.
        :raises InvalidRequest: bad values. :raises Conflict: the new name is taken.
        """
        self._require_admin()
        project = await self._find("projects", project_id, PROJECT_COLUMNS)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = check_name(name, "project name")
            await self._unique("projects", name, "project", project["id"])
        if description is not None:
            changes["description"] = check_text(description, "description")
        if enabled is not None:
            changes["enabled"] = check_bool(enabled, "enabled")
        await self._update("projects", project["id"], changes)
        if changes.get("enabled") is False and project["enabled"]:
            await self._revoke("project", project["id"])
        return {**project, **changes}

    @handler(policy="identity:admin")
    async def delete_project(self, project_id: str) -> None:
        """Delete a project, its assignments and application credentials; revoke its tokens.

        :raises Forbidden: not an admin. :raises NotFound: no such project.
        """
        self._require_admin()
        project = await self._find("projects", project_id, "id")
        await self.store.execute("DELETE FROM projects WHERE id = ?", (project["id"],))
        await self._revoke("project", project["id"])

    async def _update(self, table: str, row_id: str, changes: dict[str, Any]) -> None:
        if changes:
            assignments = ", ".join(f"{column} = :{column}" for column in changes)
            await self.store.execute(
                f"UPDATE {table} SET {assignments} WHERE id = :id", {**changes, "id": row_id}
            )

    # -- users ------------------------------------------------------------------------------

    @handler(policy="identity:admin")
    async def create_user(
        self,
        name: str,
        password: str | None = None,
        default_project: str | None = None,
        enabled: bool = True,
        description: str = "",
        domain_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a user (without a password it cannot log in with one).

        :raises Forbidden: not an admin. :raises NotFound: no such default project.
        :raises InvalidRequest: bad values. :raises Conflict: the name is taken.
        """
        self._require_admin()
        check_domain(domain_id)
        project_id = None
        if default_project:
            project_id = (await self._find("projects", default_project, "id"))["id"]
        return await self._create_user(name, password, project_id, enabled, description)

    async def _create_user(
        self,
        name: Any,
        password: Any,
        default_project_id: str | None,
        enabled: Any = True,
        description: Any = "",
    ) -> dict[str, Any]:
        user = {
            "id": new_uuid().replace("-", ""),
            "name": check_name(name, "user name"),
            "description": check_text(description, "description"),
            "domain_id": DOMAIN_ID,
            "default_project_id": default_project_id,
            "enabled": check_bool(enabled, "enabled"),
            "created_at": utcnow(),
        }
        if password is not None:
            check_name(password, "password")
        await self._unique("users", name, "user")
        password_hash = await asyncio.to_thread(hash_password, password) if password is not None else ""
        await self.store.execute(
            "INSERT INTO users (id, name, description, password_hash, domain_id, default_project_id,"
            " enabled, created_at) VALUES (:id, :name, :description, :password_hash, :domain_id,"
            " :default_project_id, :enabled, :created_at)",
            {**user, "password_hash": password_hash},
        )
        return user

    @handler(policy="identity:admin")
    async def list_users(self, name: str | None = None, enabled: bool | None = None) -> list[dict[str, Any]]:
        """Users by name (never their password hashes).

        :raises Forbidden: not an admin.
        """
        self._require_admin()
        rows = await self.store.fetchall(
            f"SELECT {USER_COLUMNS} FROM users"
            " WHERE (:name IS NULL OR name = :name) AND (:enabled IS NULL OR enabled = :enabled)"
            " ORDER BY name",
            {"name": name, "enabled": enabled},
        )
        return [_enabled(row) for row in rows]  # type: ignore[misc]

    @handler(policy="identity:admin")
    async def get_user(self, user_id: str) -> dict[str, Any]:
        """:raises NotFound: no such user. :raises Forbidden: not an admin."""
        self._require_admin()
        return await self._find("users", user_id, USER_COLUMNS)

    @handler(policy="identity:admin")
    async def update_user(
        self,
        user_id: str,
        name: str | None = None,
        password: str | None = None,
        enabled: bool | None = None,
        description: str | None = None,
        default_project: str | None = None,
    ) -> dict[str, Any]:
        """Change a user; ``default_project=""`` clears it. Disabling the user or changing its
        password revokes its tokens.

        :raises Forbidden: not an admin. :raises NotFound: no such user or default project.
        :raises InvalidRequest: bad values. :raises Conflict: the new name is taken.
        """
        self._require_admin()
        user = await self._find("users", user_id, USER_COLUMNS)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = check_name(name, "user name")
            await self._unique("users", name, "user", user["id"])
        if description is not None:
            changes["description"] = check_text(description, "description")
        if enabled is not None:
            changes["enabled"] = check_bool(enabled, "enabled")
        if default_project is not None:
            changes["default_project_id"] = (
                (await self._find("projects", default_project, "id"))["id"] if default_project else None
            )
        if password is not None:
            check_name(password, "password")
            changes["password_hash"] = await asyncio.to_thread(hash_password, password)
        await self._update("users", user["id"], changes)
        if "password_hash" in changes or (changes.get("enabled") is False and user["enabled"]):
            await self._revoke("user", user["id"])
        changes.pop("password_hash", None)
        return {**user, **changes}

    @handler(policy="identity:admin")
    async def delete_user(self, user_id: str) -> None:
        """Delete a user, its assignments, memberships and application credentials.

        :raises Forbidden: not an admin. :raises NotFound: no such user.
        """
        self._require_admin()
        user = await self._find("users", user_id, "id")
        await self.store.execute("DELETE FROM users WHERE id = ?", (user["id"],))
        await self._revoke("user", user["id"])

    # -- groups -----------------------------------------------------------------------------

    @handler(policy="identity:admin")
    async def create_group(
        self, name: str, description: str = "", domain_id: str | None = None
    ) -> dict[str, Any]:
        """:raises Forbidden: not an admin. :raises InvalidRequest: bad values.
        :raises Conflict: the name is taken."""
        self._require_admin()
        check_domain(domain_id)
        group = {
            "id": new_uuid().replace("-", ""),
            "name": check_name(name, "group name"),
            "description": check_text(description, "description"),
            "domain_id": DOMAIN_ID,
            "created_at": utcnow(),
        }
        await self._unique("user_groups", name, "group")
        await self.store.execute(
            "INSERT INTO user_groups (id, name, description, domain_id, created_at)"
            " VALUES (:id, :name, :description, :domain_id, :created_at)",
            group,
        )
        return group

    @handler(policy="identity:admin")
    async def list_groups(self, name: str | None = None) -> list[dict[str, Any]]:
        """:raises Forbidden: not an admin."""
        self._require_admin()
        return await self.store.fetchall(
            f"SELECT {GROUP_COLUMNS} FROM user_groups WHERE (:name IS NULL OR name = :name) ORDER BY name",
            {"name": name},
        )

    @handler(policy="identity:admin")
    async def get_group(self, group_id: str) -> dict[str, Any]:
        """:raises NotFound: no such group. :raises Forbidden: not an admin."""
        self._require_admin()
        return await self._find("user_groups", group_id, GROUP_COLUMNS)

    @handler(policy="identity:admin")
    async def update_group(
        self, group_id: str, name: str | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """:raises Forbidden: not an admin. :raises NotFound: no such group.
        :raises InvalidRequest: bad values. :raises Conflict: the new name is taken."""
        self._require_admin()
        group = await self._find("user_groups", group_id, GROUP_COLUMNS)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = check_name(name, "group name")
            await self._unique("user_groups", name, "group", group["id"])
        if description is not None:
            changes["description"] = check_text(description, "description")
        await self._update("user_groups", group["id"], changes)
        return {**group, **changes}

    @handler(policy="identity:admin")
    async def delete_group(self, group_id: str) -> None:
        """Delete a group, its memberships and role assignments.

        :raises Forbidden: not an admin. :raises NotFound: no such group.
        """
        self._require_admin()
        group = await self._find("user_groups", group_id, "id")
        await self.store.execute("DELETE FROM user_groups WHERE id = ?", (group["id"],))

    @handler(policy="identity:admin")
    async def add_user_to_group(self, group_id: str, user_id: str) -> None:
        """:raises Forbidden: not an admin. :raises NotFound: no such group or user."""
        self._require_admin()
        group = await self._find("user_groups", group_id, "id")
        user = await self._find("users", user_id, "id")
        await self.store.execute(
            "INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?, ?)", (group["id"], user["id"])
        )

    @handler(policy="identity:admin")
    async def remove_user_from_group(self, group_id: str, user_id: str) -> None:
        """:raises Forbidden: not an admin. :raises NotFound: no such group, user or membership."""
        self._require_admin()
        group = await self._find("user_groups", group_id, "id")
        user = await self._find("users", user_id, "id")
        removed = await self.store.execute(
            "DELETE FROM group_members WHERE group_id = ? AND user_id = ?", (group["id"], user["id"])
        )
        if not removed:
            raise NotFound(f"User {user_id} is not a member of group {group_id}.")

    @handler(policy="identity:admin")
    async def check_user_in_group(self, group_id: str, user_id: str) -> bool:
        """:raises Forbidden: not an admin. :raises NotFound: no such group or user."""
        self._require_admin()
        group = await self._find("user_groups", group_id, "id")
        user = await self._find("users", user_id, "id")
        return bool(
            await self.store.fetchone(
                "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", (group["id"], user["id"])
            )
        )

    @handler(policy="identity:admin")
    async def list_group_users(self, group_id: str) -> list[dict[str, Any]]:
        """:raises Forbidden: not an admin. :raises NotFound: no such group."""
        self._require_admin()
        group = await self._find("user_groups", group_id, "id")
        columns = ", ".join(f"users.{column.strip()}" for column in USER_COLUMNS.split(","))
        rows = await self.store.fetchall(
            f"SELECT {columns} FROM users JOIN group_members ON group_members.user_id = users.id"
            " WHERE group_members.group_id = ? ORDER BY users.name",
            (group["id"],),
        )
        return [_enabled(row) for row in rows]  # type: ignore[misc]

    @handler(policy="identity:admin")
    async def list_user_groups(self, user_id: str) -> list[dict[str, Any]]:
        """:raises Forbidden: not an admin. :raises NotFound: no such user."""
        self._require_admin()
        user = await self._find("users", user_id, "id")
        columns = ", ".join(f"user_groups.{column.strip()}" for column in GROUP_COLUMNS.split(","))
        return await self.store.fetchall(
            f"SELECT {columns} FROM user_groups JOIN group_members ON group_members.group_id = user_groups.id"
            " WHERE group_members.user_id = ? ORDER BY user_groups.name",
            (user["id"],),
        )

    # -- roles and assignments ------------------------------------------------------------

    @handler(policy="identity:admin")
    async def list_roles(self, name: str | None = None) -> list[dict[str, Any]]:
        """:raises Forbidden: not an admin."""
        self._require_admin()
        return await self.store.fetchall(
            "SELECT id, name, description FROM roles WHERE (:name IS NULL OR name = :name) ORDER BY name",
            {"name": name},
        )

    @handler(policy="identity:admin")
    async def create_role(self, name: str, description: str = "") -> dict[str, Any]:
        """:raises Forbidden: not an admin. :raises InvalidRequest: bad values.
        :raises Conflict: the name is taken."""
        self._require_admin()
        role = {
            "id": new_uuid().replace("-", ""),
            "name": check_name(name, "role name"),
            "description": check_text(description, "description"),
        }
        await self._unique("roles", name, "role")
        await self.store.execute(
            "INSERT INTO roles (id, name, description) VALUES (:id, :name, :description)", role
        )
        return role

    @handler(policy="identity:admin")
    async def get_role(self, role_id: str) -> dict[str, Any]:
        """:raises NotFound: no such role. :raises Forbidden: not an admin."""
        self._require_admin()
        return await self._find("roles", role_id, "id, name, description")

    @handler(policy="identity:admin")
    async def grant_role(self, user: str, project: str, role: str) -> None:
        """Give ``user`` the ``role`` on ``project``.

        :raises Forbidden: not an admin. :raises NotFound: no such user, project or role.
        """
        self._require_admin()
        await self._assign("assignments", "user_id", await self._find("users", user, "id"), project, role)

    @handler(policy="identity:admin")
    async def revoke_role(self, user: str, project: str, role: str) -> None:
        """Take ``role`` on ``project`` from ``user`` (its tokens lose the role at once).

        :raises Forbidden: not an admin. :raises NotFound: no such user, project, role or assignment.
        """
        self._require_admin()
        await self._unassign("assignments", "user_id", await self._find("users", user, "id"), project, role)

    @handler(policy="identity:admin")
    async def grant_group_role(self, group: str, project: str, role: str) -> None:
        """Give every member of ``group`` the ``role`` on ``project``.

        :raises Forbidden: not an admin. :raises NotFound: no such group, project or role.
        """
        self._require_admin()
        target = await self._find("user_groups", group, "id")
        await self._assign("group_assignments", "group_id", target, project, role)

    @handler(policy="identity:admin")
    async def revoke_group_role(self, group: str, project: str, role: str) -> None:
        """:raises Forbidden: not an admin.
        :raises NotFound: no such group, project, role or assignment."""
        self._require_admin()
        target = await self._find("user_groups", group, "id")
        await self._unassign("group_assignments", "group_id", target, project, role)

    async def _grant(self, user_id: str, project_id: str, role: str) -> None:
        await self._assign("assignments", "user_id", {"id": user_id}, project_id, role)

    async def _assign(self, table: str, column: str, actor: dict[str, Any], project: str, role: str) -> None:
        project_row = await self._find("projects", project, "id")
        role_row = await self._find("roles", role, "id")
        await self.store.execute(
            f"INSERT OR IGNORE INTO {table} ({column}, project_id, role_id) VALUES (?, ?, ?)",
            (actor["id"], project_row["id"], role_row["id"]),
        )

    async def _unassign(
        self, table: str, column: str, actor: dict[str, Any], project: str, role: str
    ) -> None:
        project_row = await self._find("projects", project, "id")
        role_row = await self._find("roles", role, "id")
        removed = await self.store.execute(
            f"DELETE FROM {table} WHERE {column} = ? AND project_id = ? AND role_id = ?",
            (actor["id"], project_row["id"], role_row["id"]),
        )
        if not removed:
            raise NotFound(f"Could not find role assignment of {role} on project {project}.")

    @handler(policy="identity:admin")
    async def list_role_assignments(
        self,
        user_id: str | None = None,
        group_id: str | None = None,
        project_id: str | None = None,
        role_id: str | None = None,
        effective: bool = False,
    ) -> list[dict[str, Any]]:
        """Assignments, each ``{role_id, role_name, project_id, user_id, group_id, via_group}``.

        Filters take ids (a role also by name). With ``effective`` a group's assignments
        appear once per member user (``via_group`` names the group) and filtering by user
        includes those of its groups.

        :raises Forbidden: not an admin.
        """
        self._require_admin()
        if role_id is not None:
            role_id = (await self._find("roles", role_id, "id"))["id"]
        params = {"user": user_id, "group": group_id, "project": project_id, "role": role_id}
        common = "(:project IS NULL OR a.project_id = :project) AND (:role IS NULL OR a.role_id = :role)"
        if effective:
            sql = (
                "SELECT a.role_id, roles.name AS role_name, a.project_id, a.user_id, NULL AS group_id,"
                " NULL AS via_group FROM assignments a JOIN roles ON roles.id = a.role_id"
                f" WHERE {common} AND (:user IS NULL OR a.user_id = :user) AND :group IS NULL"
                " UNION ALL SELECT a.role_id, roles.name, a.project_id, m.user_id, NULL, a.group_id"
                " FROM group_assignments a JOIN roles ON roles.id = a.role_id"
                " JOIN group_members m ON m.group_id = a.group_id"
                f" WHERE {common} AND (:user IS NULL OR m.user_id = :user)"
                " AND (:group IS NULL OR a.group_id = :group)"
            )
        else:
            sql = (
                "SELECT a.role_id, roles.name AS role_name, a.project_id, a.user_id, NULL AS group_id,"
                " NULL AS via_group FROM assignments a JOIN roles ON roles.id = a.role_id"
                f" WHERE {common} AND (:user IS NULL OR a.user_id = :user) AND :group IS NULL"
                " UNION ALL SELECT a.role_id, roles.name, a.project_id, NULL, a.group_id, NULL"
                " FROM group_assignments a JOIN roles ON roles.id = a.role_id"
                f" WHERE {common} AND (:group IS NULL OR a.group_id = :group) AND :user IS NULL"
            )
        return await self.store.fetchall(sql + " ORDER BY 3, 2, 4, 5", params)
