"""The identity service's API (Keystone): projects, users, groups, roles, tokens, application credentials.

Tokens are self-contained (Fernet-sealed: nothing of them is stored); ``validate`` decrypts
one and checks its user, project, roles and the revocations. Every process validates the
tokens of the user calls it gets (``runtime.auth.TokenValidator``, a cache in front of
``TokenValidation.validate``) and drops cached ones when a revocation is published on
``REVOKED``.

Who may do what: the administration API (``IdentityAdmin``) is for admins only (``Forbidden``
otherwise; a service-internal call with no user context counts as admin; an admin is a user with
the admin role on its token's project or on the system); its reads (``identity:admin_read``) are
also for a user with any role on the system (a system reader), and ``list_user_projects`` for
the user itself too. ``revoke_token``
is for the token's owner or an admin, ``revoke_user``, ``revoke_project`` and
``rotate_keys`` for admins; the logins, ``change_password``, ``validate`` and ``revocations``
for anyone. A user
manages its own application credentials (an admin may see and delete anyone's). Arguments
naming a project, user, group or role take its id or its name.

Facets: ``TokenValidation`` (what every process calls: ``validate``; declared in
``runtime/auth.py`` with ``REVOKED``, beside the cache that uses them, since the runtime sits
below ``api/``; re-exported here), ``ServiceTokens`` (the service tokens of the processes doing
long work for users), ``Tokens`` (built on both: logins,
re-scoping, revocation, key rotation — the gateway's ``/auth/tokens`` — and service tokens),
``IdentityAdmin`` and ``ApplicationCredentials``.

Version history:

* 1 - initial: projects, users, roles, assignments; opaque random tokens stored as sha256.
* 2 - identity in depth: Fernet tokens and key rotation (no token table), re-scoping,
  revocation by token/user/project published on ``REVOKED``, groups, login lockout,
  application credentials, enable/disable, the full administration API.
* 3 - the actor is ``identity`` (was ``token``); arguments are checked against these
  declarations before a handler runs.
* 4 - no lockout: logins take the client's address (``source``) and failures are throttled per
  source and per (account, source), refused with ``LoginThrottled`` (the gateway's 429); password
  checks are bounded (``Overloaded`` past the bound); role assignments carry names.
* 5 - system scope: roles of users and groups on the system (``grant_system_role`` ...), tokens
  scoped to it (``issue``/``issue_with_token`` take ``system``, ``Token.system``; a valid one's
  roles are ``runtime.policy.system_role`` names), assignments on it (``RoleAssignment`` with no
  project; ``list_role_assignments`` takes ``scope``); the administration's reads for readers
  on the system (``identity:admin_read``); ``update_role``, ``delete_role``;
  ``list_user_projects`` (the user itself or a reader); ``change_password`` (the user, with its
  password). Role names may not start with ``system:``.
* 6 - service tokens: ``ServiceTokens.issue_service_token`` (the service user, ``SERVICE_ROLE`` on
  the ``service`` project, made at every start if missing), ``validate(service_token=...)``
  (a token expired within the stale window, vouched for by a valid service token);
  ``rotate_keys`` also on a schedule.

Events: none in the event stream; revocations are published on ``REVOKED`` (core NATS).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal, TypedDict

from msgspec import Meta

from api.fields import Id
from bus import AiostackError
from bus.api import ServiceAPI, call

# the part of this API every process uses, declared beside the token cache (runtime/ is below api/)
from runtime.auth import REVOKED as REVOKED
from runtime.auth import SERVICE_ROLE as SERVICE_ROLE
from runtime.auth import Revocation as Revocation
from runtime.auth import RevocationKind as RevocationKind
from runtime.auth import ServiceToken as ServiceToken
from runtime.auth import TokenInfo as TokenInfo
from runtime.auth import TokenValidation as TokenValidation

NAME_LIMIT = 255
TEXT_LIMIT = 1024

Label = Annotated[str, Meta(min_length=1, max_length=NAME_LIMIT, pattern=r"\S")]
"""The name of a project, user, group, role or application credential: 1 to 255 characters,
not all blank."""
Secret = Annotated[str, Meta(min_length=1, max_length=NAME_LIMIT, pattern=r"\S")]
"""A password or an application credential's secret, as it is set: 1 to 255 characters, not all blank."""
Text = Annotated[str, Meta(max_length=TEXT_LIMIT)]
"""A description: at most 1024 characters."""
DomainId = Literal["default"]
"""The one domain there is."""
Source = Annotated[str, Meta(max_length=128)]
"""Where a login comes from: the client's IP address as the gateway's socket sees it."""


class LoginThrottled(AiostackError):
    """Too many failed logins (or logins at once) from the caller's address: refused without any
    check for ``retry_after`` seconds (the gateway answers 429 with ``Retry-After``). It names
    the address's conduct, never whether the user exists."""

    code = "login_throttled"
    http_status = 429

    @classmethod
    def after(cls, seconds: float, why: str) -> LoginThrottled:
        return cls(f"{why}; retry after {max(1, math.ceil(seconds))} s.")

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait (at least 1), as the message says."""
        found = re.search(r"retry after (\d+) s\.$", self.message)
        return int(found.group(1)) if found else 1


# -- tokens -------------------------------------------------------------------------------------


class TokenUser(TypedDict):
    id: str
    name: str
    domain_id: str


class TokenProject(TypedDict):
    id: str
    name: str
    domain_id: str


class RoleRef(TypedDict):
    """A role by id and name (of a token, or of an application credential)."""

    id: str
    name: str


class TokenApplicationCredential(TypedDict):
    id: str
    name: str
    restricted: bool


class Token(TypedDict):
    """A new token and what it says (the gateway makes Keystone's token document of it)."""

    token: str
    """The Fernet token (base64 padding stripped): the ``X-Auth-Token`` of later requests."""
    issued_at: float
    expires_at: float
    user: TokenUser
    project: TokenProject | None
    """The project it is scoped to; None for an unscoped or a system-scoped token."""
    system: bool
    """Scoped to the system (Keystone's ``{"system": {"all": true}}``): ``roles`` are the user's
    roles on the system."""
    roles: list[RoleRef]
    audit_id: str
    audit_ids: list[str]
    """``[audit_id]``, or ``[audit_id, chain root]`` for a re-scoped token (Keystone's audit chain)."""
    methods: list[str]
    """How the user authenticated: ``password``, ``token`` (re-scoped), ``application_credential``."""
    application_credential: TokenApplicationCredential | None


class KeyLayout(TypedDict):
    """The token keys after a rotation: the primary key's number and every active key's."""

    primary: int
    keys: list[int]


class ServiceTokens(ServiceAPI, address="identity"):
    """What the processes doing long work for users ask: a service token (only the kinds whose
    NATS users may send here, the conductor and the nodes, can ask; the gateway cannot)."""

    @call
    async def issue_service_token(self) -> ServiceToken:
        """A new token of the service user, scoped to the service project with the service role.

        :raises Forbidden: asked for a user (a call with a user context), not by a service.
        """
        ...


class Tokens(TokenValidation, address="identity"):
    """Logins, re-scoping, revocation and key rotation (the gateway's ``/auth/tokens``)."""

    @call(idempotent=True)
    async def issue(
        self,
        *,
        username: str | None = None,
        password: str = "",
        project_name: str | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        unscoped: bool = False,
        system: bool = False,
        source: Source | None = None,
    ) -> Token:
        """Password login (user by name or id), scoped to a project by name or id, to the system
        (``system``), else to the user's default project (unscoped without one, or with ``unscoped``).

        ``source`` is the client's address (the gateway's peer; a bus caller without one is one
        source, ``bus``): failures are counted per source and per (user, source), never so as
        to lock a user out (``actors/identity/throttle.py``).

        :raises Unauthorized: unknown user, wrong password, disabled user, unknown or disabled
            project, or no role on it (or on the system): one answer, one scrypt, for all of them (a user many
            sources fail for gets its failures' answers a little later, at most 2 s).
        :raises LoginThrottled: the source failed too often (for this user, or for any), or has
            too many logins in flight: refused at once, without a check.
        :raises Overloaded: too many logins wait for a password check.
        :raises InvalidRequest: no user named; the system and a project (or ``unscoped``) both
            asked for.
        """
        ...

    @call(idempotent=True)
    async def issue_with_token(
        self,
        *,
        token: str,
        project_id: str | None = None,
        project_name: str | None = None,
        system: bool = False,
    ) -> Token:
        """Re-scope: a new token for the same user on the project given, or on the system (else
        the token's own scope), expiring no later than the old one, its audit chain naming the
        old one's.

        :raises Unauthorized: the token is not valid, or the project is unknown, disabled or
            the user has no role on it (or none on the system).
        :raises InvalidRequest: a project and the system both asked for.
        :raises Forbidden: the token comes from an application credential.
        """
        ...

    @call(idempotent=True)
    async def issue_with_application_credential(
        self, *, app_cred_id: str, secret: str, source: Source | None = None
    ) -> Token:
        """Log in with an application credential: a token like ``issue``'s, on the credential's
        project with the credential's roles the user still holds, methods ``["application_credential"]``,
        expiring no later than the credential. Failures are throttled as ``issue``'s are.

        :raises Unauthorized: unknown, expired or deleted credential, wrong secret, disabled
            user or project, or none of the credential's roles left (one answer for all).
        :raises LoginThrottled: as ``issue``.
        :raises Overloaded: as ``issue``.
        """
        ...

    @call
    async def change_password(
        self, *, user_id: Id, original_password: str, password: Secret, source: Source | None = None
    ) -> None:
        """The user's own password change (Keystone's needs no token: the original password is
        the proof): every token the user has so far is revoked. Checked and throttled as a login.

        :raises Unauthorized: unknown or disabled user, or a wrong original password (one answer).
        :raises LoginThrottled: as ``issue``.
        :raises Overloaded: as ``issue``.
        """
        ...

    @call
    async def revoke_token(self, *, token: str) -> Revocation:
        """Revoke one token (its audit id); its owner or an admin may.

        :raises Unauthorized: the token is not valid (nothing left to revoke).
        :raises Forbidden: the caller is neither its owner nor an admin.
        """
        ...

    @call
    async def revoke_user(self, *, user_id: Id) -> Revocation:
        """Revoke every token the user has so far.

        :raises Forbidden: not an admin.
        :raises NotFound: no such user.
        """
        ...

    @call
    async def revoke_project(self, *, project_id: Id) -> Revocation:
        """Revoke every token scoped to the project so far.

        :raises Forbidden: not an admin.
        :raises NotFound: no such project.
        """
        ...

    @call(idempotent=True)
    async def revocations(self) -> list[Revocation]:
        """The revocations still in force (younger than the longest token lifetime and the stale
        window after it), oldest first; any caller may ask (validation caches warm up with it)."""
        ...

    @call
    async def rotate_keys(self) -> KeyLayout:
        """Promote the staged key to primary, stage a new one, keep at most ``max_active_keys``.

        Tokens sealed with a key still in the repository stay valid until they expire.

        :raises Forbidden: not an admin.
        """
        ...


# -- administration -------------------------------------------------------------------------------


class Project(TypedDict):
    id: str
    name: str
    description: str
    domain_id: str
    enabled: bool
    created_at: str


class User(TypedDict):
    """A user (never its password hash)."""

    id: str
    name: str
    description: str
    domain_id: str
    default_project_id: str | None
    enabled: bool
    created_at: str


class Group(TypedDict):
    id: str
    name: str
    description: str
    domain_id: str
    created_at: str


class Role(TypedDict):
    id: str
    name: str
    description: str


class RoleAssignment(TypedDict):
    """A role on a project, or on the system (no project), of a user (``user_id``) or of a group
    (``group_id``); in an effective listing a group's assignment appears once per member user,
    ``via_group`` naming it. The names are those of the role, project, user and group (None
    where there is none)."""

    role_id: str
    role_name: str
    project_id: str | None
    project_name: str | None
    user_id: str | None
    user_name: str | None
    group_id: str | None
    group_name: str | None
    via_group: str | None


class IdentityAdmin(ServiceAPI, address="identity"):
    """The administration API: projects, users, groups, roles and role assignments on projects and
    on the system (admins only; its reads for readers on the system too, ``list_user_projects``
    for the user itself).

    Invalid input is refused before anything is written. Disabling or deleting a user or a
    project revokes its tokens at once. A user's roles on a project are its own assignments
    plus those of its groups.
    """

    # -- projects

    @call(policy="identity:admin")
    async def create_project(
        self,
        *,
        name: Label,
        description: Text = "",
        enabled: bool = True,
        domain_id: DomainId | None = None,
    ) -> Project:
        """Create a project in the default domain.

        :raises Forbidden: the caller is not an admin.
        :raises Conflict: a project of that name exists.
        """
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def list_projects(self, *, name: str | None = None, enabled: bool | None = None) -> list[Project]:
        """Projects by name, optionally only those of one name or enabled state.

        :raises Forbidden: neither an admin nor a reader on the system.
        """
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def get_project(self, *, project_id: Id) -> Project:
        """:raises NotFound: no such project.
        :raises Forbidden: neither an admin nor a reader on the system."""
        ...

    @call(policy="identity:admin")
    async def update_project(
        self,
        *,
        project_id: Id,
        name: Label | None = None,
        description: Text | None = None,
        enabled: bool | None = None,
    ) -> Project:
        """Rename, describe, enable or disable a project; disabling revokes its tokens.

        :raises Forbidden: not an admin. :raises NotFound: no such project.
        :raises Conflict: the new name is taken.
        """
        ...

    @call(policy="identity:admin")
    async def delete_project(self, *, project_id: Id) -> None:
        """Delete a project, its assignments and application credentials; revoke its tokens.

        :raises Forbidden: not an admin. :raises NotFound: no such project.
        """
        ...

    # -- users

    @call(policy="identity:admin")
    async def create_user(
        self,
        *,
        name: Label,
        password: Secret | None = None,
        default_project: str | None = None,
        enabled: bool = True,
        description: Text = "",
        domain_id: DomainId | None = None,
    ) -> User:
        """Create a user (without a password it cannot log in with one).

        :raises Forbidden: not an admin. :raises NotFound: no such default project.
        :raises Conflict: the name is taken.
        """
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def list_users(self, *, name: str | None = None, enabled: bool | None = None) -> list[User]:
        """Users by name (never their password hashes).

        :raises Forbidden: neither an admin nor a reader on the system.
        """
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def get_user(self, *, user_id: Id) -> User:
        """:raises NotFound: no such user. :raises Forbidden: neither an admin nor a reader on the system."""
        ...

    @call(idempotent=True)
    async def list_user_projects(self, *, user_id: Id) -> list[Project]:
        """The projects the user has a role on, itself or through a group, by name; the user
        itself, an admin or a reader on the system may ask.

        :raises Forbidden: the caller is none of them (asked of another user or of none).
        :raises NotFound: no such user (asked by an admin).
        """
        ...

    @call(policy="identity:admin")
    async def update_user(
        self,
        *,
        user_id: Id,
        name: Label | None = None,
        password: Secret | None = None,
        enabled: bool | None = None,
        description: Text | None = None,
        default_project: str | None = None,
    ) -> User:
        """Change a user; ``default_project=""`` clears it. Disabling the user or changing its
        password revokes its tokens.

        :raises Forbidden: not an admin. :raises NotFound: no such user or default project.
        :raises Conflict: the new name is taken.
        """
        ...

    @call(policy="identity:admin")
    async def delete_user(self, *, user_id: Id) -> None:
        """Delete a user, its assignments, memberships and application credentials; revoke its tokens.

        :raises Forbidden: not an admin. :raises NotFound: no such user.
        """
        ...

    # -- groups

    @call(policy="identity:admin")
    async def create_group(
        self, *, name: Label, description: Text = "", domain_id: DomainId | None = None
    ) -> Group:
        """:raises Forbidden: not an admin. :raises Conflict: the name is taken."""
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def list_groups(self, *, name: str | None = None) -> list[Group]:
        """:raises Forbidden: neither an admin nor a reader on the system."""
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def get_group(self, *, group_id: Id) -> Group:
        """:raises NotFound: no such group. :raises Forbidden: neither an admin nor a reader on the system."""
        ...

    @call(policy="identity:admin")
    async def update_group(
        self, *, group_id: Id, name: Label | None = None, description: Text | None = None
    ) -> Group:
        """:raises Forbidden: not an admin. :raises NotFound: no such group.
        :raises Conflict: the new name is taken."""
        ...

    @call(policy="identity:admin")
    async def delete_group(self, *, group_id: Id) -> None:
        """Delete a group, its memberships and role assignments.

        :raises Forbidden: not an admin. :raises NotFound: no such group.
        """
        ...

    @call(policy="identity:admin")
    async def add_user_to_group(self, *, group_id: Id, user_id: Id) -> None:
        """:raises Forbidden: not an admin. :raises NotFound: no such group or user."""
        ...

    @call(policy="identity:admin")
    async def remove_user_from_group(self, *, group_id: Id, user_id: Id) -> None:
        """:raises Forbidden: not an admin. :raises NotFound: no such group, user or membership."""
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def check_user_in_group(self, *, group_id: Id, user_id: Id) -> bool:
        """Whether the user is a member of the group.

        :raises Forbidden: neither an admin nor a reader on the system.
        :raises NotFound: no such group or user.
        """
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def list_group_users(self, *, group_id: Id) -> list[User]:
        """:raises Forbidden: neither an admin nor a reader on the system. :raises NotFound: no such group."""
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def list_user_groups(self, *, user_id: Id) -> list[Group]:
        """:raises Forbidden: neither an admin nor a reader on the system. :raises NotFound: no such user."""
        ...

    # -- roles and assignments

    @call(policy="identity:admin_read", idempotent=True)
    async def list_roles(self, *, name: str | None = None) -> list[Role]:
        """:raises Forbidden: neither an admin nor a reader on the system."""
        ...

    @call(policy="identity:admin")
    async def create_role(self, *, name: Label, description: Text = "") -> Role:
        """:raises Forbidden: not an admin. :raises Conflict: the name is taken.
        :raises InvalidRequest: a name starting with ``system:`` (what the system's roles are
            called in a caller's context)."""
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def get_role(self, *, role_id: Id) -> Role:
        """:raises NotFound: no such role. :raises Forbidden: neither an admin nor a reader on the system."""
        ...

    @call(policy="identity:admin")
    async def update_role(
        self, *, role_id: Id, name: Label | None = None, description: Text | None = None
    ) -> Role:
        """Rename or describe a role.

        :raises Forbidden: not an admin. :raises NotFound: no such role.
        :raises Conflict: the new name is taken. :raises InvalidRequest: a ``system:`` name.
        """
        ...

    @call(policy="identity:admin")
    async def delete_role(self, *, role_id: Id) -> None:
        """Delete a role and every assignment of it (on projects and on the system); the tokens
        that carried it lose it.

        :raises Forbidden: not an admin. :raises NotFound: no such role.
        """
        ...

    @call(policy="identity:admin")
    async def grant_role(self, *, user: Id, project: Id, role: Id) -> None:
        """Give ``user`` the ``role`` on ``project``.

        :raises Forbidden: not an admin. :raises NotFound: no such user, project or role.
        """
        ...

    @call(policy="identity:admin")
    async def revoke_role(self, *, user: Id, project: Id, role: Id) -> None:
        """Take ``role`` on ``project`` from ``user`` (its tokens lose the role at once).

        :raises Forbidden: not an admin. :raises NotFound: no such user, project, role or assignment.
        """
        ...

    @call(policy="identity:admin")
    async def grant_group_role(self, *, group: Id, project: Id, role: Id) -> None:
        """Give every member of ``group`` the ``role`` on ``project``.

        :raises Forbidden: not an admin. :raises NotFound: no such group, project or role.
        """
        ...

    @call(policy="identity:admin")
    async def revoke_group_role(self, *, group: Id, project: Id, role: Id) -> None:
        """:raises Forbidden: not an admin.
        :raises NotFound: no such group, project, role or assignment."""
        ...

    @call(policy="identity:admin")
    async def grant_system_role(self, *, user: Id, role: Id) -> None:
        """Give ``user`` the ``role`` on the system.

        :raises Forbidden: not an admin. :raises NotFound: no such user or role.
        """
        ...

    @call(policy="identity:admin")
    async def revoke_system_role(self, *, user: Id, role: Id) -> None:
        """Take ``role`` on the system from ``user`` (its system-scoped tokens lose the role at once).

        :raises Forbidden: not an admin. :raises NotFound: no such user, role or assignment.
        """
        ...

    @call(policy="identity:admin")
    async def grant_group_system_role(self, *, group: Id, role: Id) -> None:
        """Give every member of ``group`` the ``role`` on the system.

        :raises Forbidden: not an admin. :raises NotFound: no such group or role.
        """
        ...

    @call(policy="identity:admin")
    async def revoke_group_system_role(self, *, group: Id, role: Id) -> None:
        """:raises Forbidden: not an admin. :raises NotFound: no such group, role or assignment."""
        ...

    @call(policy="identity:admin_read", idempotent=True)
    async def list_role_assignments(
        self,
        *,
        user_id: str | None = None,
        group_id: str | None = None,
        project_id: str | None = None,
        role_id: Id | None = None,
        effective: bool = False,
        scope: Literal["project", "system"] | None = None,
    ) -> list[RoleAssignment]:
        """Assignments, by project, role, user and group; on projects and on the system, or
        only those on one (``scope``; a ``project_id`` filter leaves only projects').

        Filters take ids (a role also by name). With ``effective`` a group's assignments
        appear once per member user (``via_group`` names the group) and filtering by user
        includes those of its groups.

        :raises Forbidden: neither an admin nor a reader on the system. :raises NotFound: no such role.
        """
        ...


# -- application credentials ----------------------------------------------------------------------


class RoleChoice(TypedDict, total=False):
    """A role asked for by id or by name (other keys are ignored)."""

    id: str
    name: str


class ApplicationCredential(TypedDict):
    """An application credential (never its secret): its roles are those of the user it still names."""

    id: str
    name: str
    description: str
    user_id: str
    project_id: str
    roles: list[RoleRef]
    expires_at: float | None
    unrestricted: bool
    created_at: str


class NewApplicationCredential(ApplicationCredential):
    """A credential just made, with its secret (shown this once, kept only as a hash)."""

    secret: str


class ApplicationCredentials(ServiceAPI, address="identity"):
    """A user's application credentials: made with a project-scoped token for its project,
    limited to some or all of the user's roles there."""

    @call
    async def create_application_credential(
        self,
        *,
        name: Label,
        secret: Secret | None = None,
        expires_at: float | str | None = None,
        roles: Annotated[list[str | RoleChoice], Meta(min_length=1)] | None = None,
        description: Text = "",
    ) -> NewApplicationCredential:
        """A credential for the calling user on the project of its token; its secret shown once.

        ``secret`` defaults to a random one; ``expires_at`` is epoch seconds or an ISO 8601
        time (UTC when no offset), None for never; ``roles`` (ids, names or ``{"id"}`` /
        ``{"name"}`` maps) defaults to all the caller's roles on the project.

        :raises Unauthorized: no user context, or its token is not valid.
        :raises Forbidden: the token is unscoped or itself from an application credential,
            or a role asked for is not the caller's.
        :raises InvalidRequest: an expiry that does not parse or is past, a role map with
            neither id nor name.
        :raises Conflict: the user has a credential of that name.
        """
        ...

    @call(idempotent=True)
    async def list_application_credentials(self, *, user_id: Id) -> list[ApplicationCredential]:
        """The user's credentials (never their secrets), by name.

        :raises Forbidden: the caller is neither that user nor an admin.
        """
        ...

    @call(idempotent=True)
    async def get_application_credential(self, *, user_id: Id, app_cred_id: Id) -> ApplicationCredential:
        """:raises Forbidden: neither that user nor an admin. :raises NotFound: no such credential."""
        ...

    @call
    async def delete_application_credential(self, *, user_id: Id, app_cred_id: Id) -> None:
        """Delete a credential; its tokens are refused from now on.

        :raises Forbidden: neither that user nor an admin. :raises NotFound: no such credential.
        """
        ...
