"""Tokens (``/auth/tokens``) and what a token opens (``/auth/catalog``, ``/auth/projects``,
``/auth/domains``, ``/auth/system``), as keystoneauth, openstacksdk and the openstack CLI use them.

A token is scoped to a project, to the system (``{"system": {"all": true}}``: the user's roles on
the system, which allow identity's administration and nothing of the other services, whose
routes want a project-scoped token), or to nothing.

A login (``POST /auth/tokens``, no token needed) uses a password, a token (re-scoping) or an
application credential, and answers the new token in ``X-Subject-Token`` with Keystone's token
document; every failed login is the same 401. The client's address (the socket's peer,
``request.remote``; never a header such as X-Forwarded-For, which anyone can write) goes with
every password and application credential login: an address that fails too often is answered
429 with ``Retry-After`` (Keystone's error body), without any check, until then. The gateway holds
each such answer up to a second (``REFUSAL_HOLD``; nginx's ``limit_req`` delays excess requests
alike), so a client that does not wait sends one attempt per connection per second, not thousands:
a sleeping coroutine costs nothing, a refusal answered at once costs a bus round trip.
``X-Subject-Token`` names the token to validate (GET), check (HEAD) or revoke (DELETE): the
caller's own, or any for an admin (and to validate or check, for a reader on the system).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.fields import Id
from api.identity import IdentityAdmin, LoginThrottled, Token, TokenInfo, Tokens, TokenValidation
from bus import Forbidden, NotFound, Unauthorized
from gateway.http import JSON, TOKENS, client, context_of, error_body, json_response, no_content
from gateway.identity.common import (
    ADMIN_READ,
    DOMAIN_ID,
    DOMAIN_NAME,
    V3,
    ResourceLinks,
    base,
    iso,
    on_own_behalf,
    self_link,
)
from gateway.identity.domains import DomainList, domain_list
from gateway.identity.projects import ProjectList, project_list
from gateway.routing import NO_POLICY, Body, Headers, OpenRequest, Query, Reply, Routes, Time
from runtime.holds import BoundedHolds
from runtime.policy import SYSTEM_ROLE_PREFIX, allowed

AUTH_TOKENS = f"{V3}/auth/tokens"
AUTH_FAILED = "The request you have made requires authentication."
"""The identity actor's one answer to every failed login (actors/identity/passwords.AUTH_FAILED)."""
METHODS = ("password", "token", "application_credential")
SERVICES = (
    ("identity", "keystone", "/identity/v3"),
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    ("network", "neutron", "/network"),
    ("block-storage", "cinder", "/volume/v3/{project_id}"),
    ("volumev3", "cinderv3", "/volume/v3/{project_id}"),
)
"""The catalog: every service at this gateway (type, name, path), public/internal/admin alike."""
Name = Annotated[str, Meta(min_length=1, max_length=255)]
REFUSAL_HOLD = 1.0
"""How long a throttled login's 429 is held at most (never beyond its Retry-After)."""
MAX_HELD = 1024
"""Answers held at once at most; past it they go at once."""

HELD = web.AppKey("held_login_refusals", BoundedHolds)
"""The throttled logins whose answers the gateway holds (``MAX_HELD`` at once)."""


def _one_of(*members: str) -> list[dict[str, Any]]:
    return [{"required": [member]} for member in members]


# -- the login body ---------------------------------------------------------------------------


class DomainRef(OpenRequest):
    """A domain by id or by name: only ``default`` (``Default``) exists, another fails the login."""

    id: Name | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": _one_of("id", "name")}

    def __post_init__(self) -> None:
        if self.id is UNSET and self.name is UNSET:
            raise ValueError("a domain needs an id or a name")

    @property
    def is_default(self) -> bool:
        return self.id in (UNSET, DOMAIN_ID) and self.name in (UNSET, DOMAIN_NAME)


class PasswordUser(OpenRequest):
    """The user, by id or by name (in its domain), and its password."""

    password: str
    id: Id | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    domain: DomainRef | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": _one_of("id", "name")}

    def __post_init__(self) -> None:
        if self.id is UNSET and self.name is UNSET:
            raise ValueError("the user needs an id or a name")


class PasswordMethod(OpenRequest):
    user: PasswordUser


class TokenMethod(OpenRequest):
    id: str
    """The token to re-scope."""


class ApplicationCredentialMethod(OpenRequest):
    id: Id
    secret: str


class Identity(OpenRequest):
    """How the user authenticates: one method, ``password``, ``token`` or ``application_credential``,
    with its member (another method, or several, is a 401)."""

    methods: Annotated[
        list[Name], Meta(min_length=1, extra_json_schema={"items": {"enum": METHODS}, "maxItems": 1})
    ]
    password: PasswordMethod | UnsetType = UNSET
    token: TokenMethod | UnsetType = UNSET
    application_credential: ApplicationCredentialMethod | UnsetType = UNSET

    def __post_init__(self) -> None:
        for method in METHODS:
            if method in self.methods and getattr(self, method) is UNSET:
                raise ValueError(f"the {method} method needs its '{method}' member")


class ProjectScope(OpenRequest):
    """A project by id, or by name (in its domain)."""

    id: Id | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    domain: DomainRef | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": _one_of("id", "name")}

    def __post_init__(self) -> None:
        if self.id is UNSET and self.name is UNSET:
            raise ValueError("the project needs an id or a name")


class SystemScope(OpenRequest):
    """The system: the one there is, ``all``."""

    all: Literal[True]


class Scope(OpenRequest):
    """A project, or the system (domain scope is not built)."""

    project: ProjectScope | UnsetType = UNSET
    system: SystemScope | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"oneOf": _one_of("project", "system")}

    def __post_init__(self) -> None:
        if (self.project is UNSET) == (self.system is UNSET):
            raise ValueError("a scope is a project or the system")


def _login_with(method: str, **more: Any) -> dict[str, Any]:
    """The schema of a login with ``method`` (and its member)."""
    identity = {"properties": {"methods": {"contains": {"const": method}}}, "required": [method]}
    return {"properties": {"identity": identity, **more}}


class Auth(OpenRequest):
    """A login; ``scope``: a project, or ``unscoped`` (not when re-scoping a token), else the user's
    default project (unscoped without one) or, re-scoping, the token's own."""

    identity: Identity
    scope: Scope | Literal["unscoped"] | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "anyOf": [
            _login_with("password"),
            _login_with("token", scope={"type": "object"}),
            _login_with("application_credential"),
        ]
    }

    def __post_init__(self) -> None:
        if "token" in self.identity.methods and self.scope == "unscoped":
            raise ValueError("a token can be re-scoped to a project, not unscoped")


class AuthRequest(OpenRequest):
    auth: Auth


class CatalogQuery(Query):
    nocatalog: (
        Annotated[str, Meta(description="Present (any value): no catalog in the token.")] | UnsetType
    ) = UNSET


class SubjectToken(Headers):
    subject: Annotated[str, Meta(min_length=1, max_length=4096, description="The token to look at.")] = (
        msgspec.field(name="X-Subject-Token")
    )


# -- the token document -----------------------------------------------------------------------


class AuthDomain(Body):
    id: str
    name: str


class AuthUser(Body):
    id: str
    name: str
    domain: AuthDomain
    password_expires_at: None


class AuthProject(Body):
    id: str
    name: str
    domain: AuthDomain


class AuthSystem(Body):
    all: Literal[True]


class AuthRole(Body):
    id: str | None
    name: str


class AuthApplicationCredential(Body):
    id: str
    restricted: bool
    name: str | UnsetType = UNSET


class CatalogEndpoint(Body):
    id: str
    interface: Literal["public", "internal", "admin"]
    region: str
    region_id: str
    url: str


class CatalogEntry(Body):
    id: str
    type: str
    name: str
    endpoints: list[CatalogEndpoint]


class TokenDocument(Body):
    """Keystone's token document; a project-scoped token has its project, roles and catalog, a
    system-scoped one its system, roles and catalog."""

    methods: list[str]
    user: AuthUser
    audit_ids: list[str]
    issued_at: Time
    expires_at: Time
    project: AuthProject | UnsetType = UNSET
    is_domain: bool | UnsetType = UNSET
    system: AuthSystem | UnsetType = UNSET
    roles: list[AuthRole] | UnsetType = UNSET
    catalog: Annotated[list[CatalogEntry], Meta(description="Unless nocatalog.")] | UnsetType = UNSET
    application_credential: AuthApplicationCredential | UnsetType = UNSET


class TokenShown(Body):
    token: TokenDocument


class Catalog(Body):
    catalog: list[CatalogEntry]
    links: ResourceLinks


_DOMAIN = AuthDomain(id=DOMAIN_ID, name=DOMAIN_NAME)


def catalog(base_url: str, project_id: str | None) -> list[CatalogEntry]:
    """Every service at this gateway, public/internal/admin alike; without a project, those whose
    URL needs one are left out (as Keystone leaves out the endpoints it cannot fill in)."""
    entries = []
    for service_type, name, path in SERVICES:
        if project_id is None and "{project_id}" in path:
            continue
        url = base_url + path.format(project_id=project_id)
        endpoints = [
            CatalogEndpoint(
                id=f"{service_type}-{interface}",
                interface=interface,
                region="RegionOne",
                region_id="RegionOne",
                url=url,
            )
            for interface in ("public", "internal", "admin")
        ]
        entries.append(CatalogEntry(id=service_type, type=service_type, name=name, endpoints=endpoints))
    return entries


def token_document(
    request: web.Request,
    *,
    methods: list[str],
    user: AuthUser,
    audit_ids: list[str],
    issued_at: float,
    expires_at: float,
    project: AuthProject | None,
    system: bool,
    roles: list[AuthRole],
    credential: AuthApplicationCredential | None,
    with_catalog: bool,
) -> TokenDocument:
    """Keystone's token document."""
    document = TokenDocument(
        methods=methods,
        user=user,
        audit_ids=audit_ids,
        issued_at=iso(issued_at),
        expires_at=iso(expires_at),
        application_credential=credential or UNSET,
    )
    if project is not None:
        document.project, document.is_domain, document.roles = project, False, roles
        if with_catalog:
            document.catalog = catalog(base(request), project.id)
    elif system:
        document.system, document.roles = AuthSystem(all=True), roles
        if with_catalog:
            document.catalog = catalog(base(request), None)
    return document


def issued_document(request: web.Request, issued: Token, with_catalog: bool) -> TokenDocument:
    """The document of a token a login just made."""
    project, credential = issued["project"], issued["application_credential"]
    return token_document(
        request,
        methods=issued["methods"],
        user=AuthUser(
            id=issued["user"]["id"], name=issued["user"]["name"], domain=_DOMAIN, password_expires_at=None
        ),
        audit_ids=issued["audit_ids"],
        issued_at=issued["issued_at"],
        expires_at=issued["expires_at"],
        project=AuthProject(id=project["id"], name=project["name"], domain=_DOMAIN) if project else None,
        system=issued["system"],
        roles=[AuthRole(id=role["id"], name=role["name"]) for role in issued["roles"]],
        credential=AuthApplicationCredential(
            id=credential["id"], name=credential["name"], restricted=credential["restricted"]
        )
        if credential
        else None,
        with_catalog=with_catalog,
    )


def validated_document(
    request: web.Request, info: TokenInfo, role_ids: dict[str, str], with_catalog: bool
) -> TokenDocument:
    """The document of a token that was validated (its roles' ids from ``role_ids``, by name)."""
    project_id, project_name = info["project_id"], info["project_name"]
    system, names = system_scoped(info)
    return token_document(
        request,
        methods=info["methods"],
        user=AuthUser(id=info["user_id"], name=info["user_name"], domain=_DOMAIN, password_expires_at=None),
        audit_ids=[info["audit_id"]],
        issued_at=info["issued_at"],
        expires_at=info["expires_at"],
        project=AuthProject(id=project_id, name=project_name or "", domain=_DOMAIN) if project_id else None,
        system=system,
        roles=[AuthRole(id=role_ids.get(name), name=name) for name in names],
        credential=AuthApplicationCredential(id=info["app_cred_id"], restricted=True)
        if info["app_cred_id"]
        else None,
        with_catalog=with_catalog,
    )


def system_scoped(info: TokenInfo) -> tuple[bool, list[str]]:
    """Whether a validated token is scoped to the system, and its roles' names: a valid
    system-scoped token has roles, all of them ``system:<name>`` (and no project)."""
    roles = info["roles"]
    if info["project_id"] is None and roles and all(role.startswith(SYSTEM_ROLE_PREFIX) for role in roles):
        return True, [role.removeprefix(SYSTEM_ROLE_PREFIX) for role in roles]
    return False, roles


# -- logins -----------------------------------------------------------------------------------

Login = Callable[[Tokens], Awaitable[Token]]
"""A login, to make with the gateway's ``Tokens`` client."""


def _check_domain(domain: DomainRef | UnsetType) -> None:
    """:raises Unauthorized: a domain other than the one there is (the login fails like any other)."""
    if isinstance(domain, DomainRef) and not domain.is_default:
        raise Unauthorized(AUTH_FAILED)


def _scope(auth: Auth) -> dict[str, Any]:
    """The scope a login asks for: ``{project_id}``, ``{project_name}``, ``{system}``,
    ``{unscoped}`` or none."""
    if auth.scope is UNSET:
        return {}
    if auth.scope == "unscoped":
        return {"unscoped": True}
    project = auth.scope.project
    if project is UNSET:
        return {"system": True}
    if project.id is not UNSET:
        return {"project_id": project.id}
    _check_domain(project.domain)
    return {"project_name": project.name}


def login(auth: Auth, source: str | None) -> Login:
    """The login a ``POST /auth/tokens`` body asks for, from the client at ``source``.

    :raises Unauthorized: another method than the three, or several; a domain that is not the
        default one.
    """
    identity = auth.identity
    if len(identity.methods) != 1 or identity.methods[0] not in METHODS:
        raise Unauthorized("Attempted to authenticate with an unsupported method.")
    method, scope = identity.methods[0], _scope(auth)
    if method == "password":
        assert isinstance(identity.password, PasswordMethod)  # Identity.__post_init__ saw to it
        user = identity.password.user
        if isinstance(user.id, str):
            user_id = user.id
            return lambda tokens: tokens.issue(
                user_id=user_id, password=user.password, source=source, **scope
            )
        _check_domain(user.domain)
        username = str(user.name)
        return lambda tokens: tokens.issue(username=username, password=user.password, source=source, **scope)
    if method == "token":
        assert isinstance(identity.token, TokenMethod)
        token = identity.token.id
        return lambda tokens: tokens.issue_with_token(token=token, **scope)
    credential = identity.application_credential
    assert isinstance(credential, ApplicationCredentialMethod)
    return lambda tokens: tokens.issue_with_application_credential(
        app_cred_id=credential.id, secret=credential.secret, source=source
    )


def too_many_requests(refusal: LoginThrottled) -> web.HTTPTooManyRequests:
    """429 in Keystone's error format, with ``Retry-After`` (raised: the route declares it as an error)."""
    body = error_body("identity", 429, str(refusal), "Too Many Requests")
    return web.HTTPTooManyRequests(
        text=msgspec.json.encode(body).decode(),
        content_type=JSON,
        headers={"Retry-After": str(refusal.retry_after)},
    )


async def _subject(request: web.Request, subject: str) -> TokenInfo:
    """What the X-Subject-Token says. :raises NotFound: it is not valid. :raises Forbidden: it is
    neither the caller's own nor is the caller an admin or a reader on the system."""
    try:
        info = await client(request, TokenValidation).validate(token=subject)
    except Unauthorized:
        raise NotFound(f"Could not find token: {subject[:16]}...") from None
    ctx = context_of(request)
    if not allowed(ADMIN_READ, ctx) and ctx.user_id != info["user_id"]:
        raise Forbidden("Only the token's owner, an admin or a reader on the system may inspect it.")
    return info


# -- routes -----------------------------------------------------------------------------------

routes = Routes()
_TOKEN = {"X-Subject-Token": "The token."}


@routes.post(
    AUTH_TOKENS,
    "Issue a token",
    public=True,
    body=AuthRequest,
    query=CatalogQuery,
    replies=[Reply(201, TokenShown, "The token's document; the token is X-Subject-Token.", headers=_TOKEN)],
    errors=(401, 403, 429, 503),
)
async def issue_token(request: web.Request, body: AuthRequest, query: CatalogQuery) -> web.Response:
    """Log in with a password, a token (re-scoping) or an application credential. 401 for every
    failed login (unknown user, wrong password, a project the user has no role on...); 403 for a
    re-scoping token made from an application credential; 429 (with Retry-After) for a client
    address that failed too often or has too many logins in flight; 503 when too many logins wait
    for a password check."""
    try:
        issued = await login(body.auth, request.remote)(client(request, Tokens))
    except LoginThrottled as refusal:
        await request.app[HELD].hold(min(REFUSAL_HOLD, refusal.retry_after))
        raise too_many_requests(refusal) from None
    document = issued_document(request, issued, query.nocatalog is UNSET)
    return json_response(TokenShown(token=document), status=201, headers={"X-Subject-Token": issued["token"]})


@routes.get(
    AUTH_TOKENS,
    "Validate a token",
    policy=NO_POLICY,
    query=CatalogQuery,
    headers=SubjectToken,
    replies=[Reply(200, TokenShown, "The token's document.", headers=_TOKEN)],
    errors=(404,),
)
async def validate_token(request: web.Request, query: CatalogQuery, headers: SubjectToken) -> web.Response:
    """404: the X-Subject-Token is not valid; 403: it is not the caller's, and the caller neither an
    admin nor a reader on the system."""
    info = await _subject(request, headers.subject)
    role_ids: dict[str, str] = {}
    if info["roles"]:
        with on_own_behalf(request):
            role_ids = {
                role["name"]: role["id"] for role in await client(request, IdentityAdmin).list_roles()
            }
    document = validated_document(request, info, role_ids, query.nocatalog is UNSET)
    return json_response(TokenShown(token=document), headers={"X-Subject-Token": headers.subject})


@routes.head(
    AUTH_TOKENS,
    "Check a token",
    policy=NO_POLICY,
    headers=SubjectToken,
    replies=[Reply(200, None, "Valid.", headers=_TOKEN)],
    errors=(404,),
)
async def check_token(request: web.Request, headers: SubjectToken) -> web.Response:
    """404: the X-Subject-Token is not valid; 403: it is not the caller's, and the caller neither an
    admin nor a reader on the system."""
    await _subject(request, headers.subject)
    return no_content(200, headers={"X-Subject-Token": headers.subject})


@routes.delete(
    AUTH_TOKENS,
    "Revoke a token",
    policy=NO_POLICY,
    headers=SubjectToken,
    replies=[Reply(204, None, "Revoked: refused from now on, here and by every service.")],
    errors=(404,),
)
async def revoke_token(request: web.Request, headers: SubjectToken) -> web.Response:
    """404: the X-Subject-Token is not valid; 403: it is not the caller's, and the caller no admin."""
    try:
        revoked = await client(request, Tokens).revoke_token(token=headers.subject)
    except Unauthorized:
        raise NotFound(f"Could not find token: {headers.subject[:16]}...") from None
    # the revocation is also published; applying it here closes the window before it arrives
    request.app[TOKENS].revoke(revoked["kind"], revoked["id"], revoked["issued_before"])
    return no_content()


@routes.get(
    f"{V3}/auth/catalog",
    "The catalog for the token's project",
    policy=NO_POLICY,
    replies=[Reply(200, Catalog, "Every service at this gateway.")],
)
async def auth_catalog(request: web.Request) -> web.Response:
    return json_response(
        Catalog(
            catalog=catalog(base(request), context_of(request).project_id),
            links=self_link(request, "auth", "catalog"),
        )
    )


@routes.get(
    f"{V3}/auth/projects",
    "The projects the token's user may scope to",
    policy=NO_POLICY,
    replies=[Reply(200, ProjectList, "The projects it has a role on, itself or through a group.")],
)
async def auth_projects(request: web.Request) -> web.Response:
    user_id = context_of(request).user_id
    admin = client(request, IdentityAdmin)
    with on_own_behalf(request):
        assignments = await admin.list_role_assignments(user_id=user_id, effective=True, scope="project")
        projects = [
            await admin.get_project(project_id=project_id)
            for project_id in sorted({a["project_id"] for a in assignments if a["project_id"]})
        ]
    return json_response(project_list(request, projects))


@routes.get(
    f"{V3}/auth/domains",
    "The domains the token's user may scope to",
    policy=NO_POLICY,
    replies=[Reply(200, DomainList, "The one domain there is.")],
)
async def auth_domains(request: web.Request) -> web.Response:
    return json_response(domain_list(request))


class SystemEntry(Body):
    all: Literal[True]


class SystemList(Body):
    system: Annotated[list[SystemEntry], Meta(description="The system, if the user has a role on it.")]
    links: ResourceLinks


@routes.get(
    f"{V3}/auth/system",
    "The systems the token's user may scope to",
    policy=NO_POLICY,
    replies=[
        Reply(200, SystemList, "The system, when the user has a role on it, itself or through a group.")
    ],
)
async def auth_system(request: web.Request) -> web.Response:
    user_id = context_of(request).user_id
    with on_own_behalf(request):
        held = await client(request, IdentityAdmin).list_role_assignments(
            user_id=user_id, effective=True, scope="system"
        )
    return json_response(
        SystemList(system=[SystemEntry(all=True)] if held else [], links=self_link(request, "auth", "system"))
    )
