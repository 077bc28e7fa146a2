"""The one policy table: which operation a caller may perform, by role.

Rules: ``admin`` (the admin role), ``member`` (admin or member of the token's project),
``reader`` (any of admin, member, reader), ``system_admin`` (the admin role on a project or on
the system), ``system_reader`` (that, or any of admin, member, reader on the system). A
system-scoped token's roles are ``system:<name>`` (``system_role``): they satisfy
``system_admin`` (identity's administration) and ``system_reader`` (reading what it administers)
and no other rule, so the other services keep requiring a project-scoped token. Which project a
resource belongs to is the actors' part: another project's resource answers NotFound
(``runtime.context.check_visible``).

The gateway enforces the table on every request (``<service>:read`` for GET and HEAD,
``<service>:write`` otherwise, finer names where a route needs them) and each actor again
on the methods its API declares with ``@call(policy=...)`` for calls that carry a user.
"""

from __future__ import annotations

from bus import Context, Forbidden

ADMIN, MEMBER, READER = "admin", "member", "reader"
SYSTEM_ADMIN, SYSTEM_READER = "system_admin", "system_reader"
SYSTEM_ROLE_PREFIX = "system:"
"""What a role held on the system (a system-scoped token's) is called in a ``Context``: no role
name may start with it."""


def system_role(name: str) -> str:
    """The ``Context`` role of the role ``name`` held on the system."""
    return SYSTEM_ROLE_PREFIX + name


RULES: dict[str, frozenset[str]] = {
    ADMIN: frozenset({"admin"}),
    SYSTEM_ADMIN: frozenset({"admin", system_role("admin")}),
    SYSTEM_READER: frozenset({"admin", *(system_role(name) for name in ("admin", "member", "reader"))}),
    MEMBER: frozenset({"admin", "member"}),
    READER: frozenset({"admin", "member", "reader"}),
}

POLICY: dict[str, str] = {
    "compute:read": READER,
    "compute:write": MEMBER,
    "compute:admin": ADMIN,
    "image:read": READER,
    "image:write": MEMBER,
    "image:publicize": ADMIN,
    "network:read": READER,
    "network:write": MEMBER,
    "network:shared": ADMIN,
    "volume:read": READER,
    "volume:write": MEMBER,
    "identity:read": READER,
    "identity:admin": SYSTEM_ADMIN,
    "identity:admin_read": SYSTEM_READER,
    "events:read": READER,
}


def allowed(operation: str, ctx: Context) -> bool:
    """Whether ``ctx`` may perform ``operation`` (an unknown operation is refused)."""
    rule = POLICY.get(operation)
    return rule is not None and bool(RULES[rule].intersection(ctx.roles))


def enforce(operation: str, ctx: Context) -> None:
    """:raises Forbidden: the caller's roles do not allow ``operation``."""
    if not allowed(operation, ctx):
        raise Forbidden(f"Policy doesn't allow {operation} to be performed.")
