"""Application credentials (``/users/{user_id}/application_credentials``): a user's own, made with a
project-scoped token for its project and some or all of its roles there; its secret is shown
once, in the create answer. A user manages its own (an admin may list, show and delete anyone's).

Unrestricted credentials and access rules are not built: asking for them is a 400.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.identity import ApplicationCredential as Record
from api.identity import ApplicationCredentials, IdentityAdmin, Label, RoleChoice, Secret, Text
from api.identity import NewApplicationCredential as NewRecord
from bus import Forbidden
from gateway.http import client, context_of, json_response, no_content
from gateway.identity.common import CollectionLinks, Filter, ResourceLinks, collection_links, iso, self_link
from gateway.identity.users import USER
from gateway.routing import NO_POLICY, Body, OpenRequest, Query, Reply, Routes, Time, TimeParameter, moment

CREDENTIALS = f"{USER}/application_credentials"
CREDENTIAL = f"{CREDENTIALS}/{{application_credential_id}}"
RoleName = Annotated[str, Meta(min_length=1, max_length=255)]


class RoleRequest(OpenRequest):
    """A role of the caller's on the project, by id or by name."""

    id: RoleName | UnsetType = UNSET
    name: RoleName | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": [{"required": ["id"]}, {"required": ["name"]}]}

    def __post_init__(self) -> None:
        if self.id is UNSET and self.name is UNSET:
            raise ValueError("a role needs an id or a name")

    def choice(self) -> RoleChoice:
        return RoleChoice(id=self.id) if self.id is not UNSET else RoleChoice(name=str(self.name))


class ApplicationCredentialCreate(OpenRequest):
    """A credential on the project of the caller's token. ``secret``: a random one when absent;
    ``expires_at``: never when absent (a time without an offset is UTC; it must be in the
    future); ``roles``: all the caller's roles on the project when absent."""

    name: Label
    secret: Secret | None = None
    description: Text | None = None
    expires_at: TimeParameter | None = None
    roles: Annotated[list[RoleName | RoleRequest], Meta(min_length=1)] | None = None
    unrestricted: (
        Annotated[bool, Meta(extra_json_schema={"const": False}, description="Not supported: false.")] | None
    ) = None
    access_rules: (
        Annotated[list[dict[str, Any]], Meta(max_length=0, description="Not supported: none.")] | None
    ) = None

    def __post_init__(self) -> None:
        if self.unrestricted:
            raise ValueError("unrestricted application credentials are not supported")


class ApplicationCredentialCreateRequest(OpenRequest):
    application_credential: ApplicationCredentialCreate


class ApplicationCredentialQuery(Query):
    name: Annotated[Filter, Meta(description="The credential of this name.")] | UnsetType = UNSET


class CredentialRole(Body):
    id: str
    name: str
    domain_id: None


class ApplicationCredential(Body):
    """A credential (its secret only in the create answer)."""

    id: str
    name: str
    description: str
    user_id: str
    project_id: str
    roles: list[CredentialRole]
    expires_at: Time | None
    unrestricted: bool
    access_rules: list[dict[str, Any]]
    links: ResourceLinks
    secret: Annotated[str, Meta(description="Shown this once.")] | UnsetType = UNSET


class ApplicationCredentialShown(Body):
    application_credential: ApplicationCredential


class ApplicationCredentialList(Body):
    application_credentials: list[ApplicationCredential]
    links: CollectionLinks


def credential_view(request: web.Request, cred: Record | NewRecord) -> ApplicationCredential:
    return ApplicationCredential(
        id=cred["id"],
        name=cred["name"],
        description=cred["description"],
        user_id=cred["user_id"],
        project_id=cred["project_id"],
        roles=[CredentialRole(id=role["id"], name=role["name"], domain_id=None) for role in cred["roles"]],
        expires_at=iso(cred["expires_at"]) if cred["expires_at"] is not None else None,
        unrestricted=False,
        access_rules=[],
        links=self_link(request, "users", cred["user_id"], "application_credentials", cred["id"]),
        secret=cred.get("secret", UNSET),
    )


def _expiry(expires_at: str | None) -> str | None:
    """The ISO 8601 time the identity actor takes (UTC when the request gave no offset)."""
    return None if expires_at is None else moment(expires_at).isoformat()


routes = Routes()


@routes.post(
    CREDENTIALS,
    "Create an application credential",
    policy=NO_POLICY,
    body=ApplicationCredentialCreateRequest,
    replies=[Reply(201, ApplicationCredentialShown, "The credential, with its secret (shown this once).")],
    errors=(409,),
)
async def create_credential(request: web.Request, body: ApplicationCredentialCreateRequest) -> web.Response:
    """403: another user's path, an unscoped token or one from an application credential, or a
    role the caller does not have on the project; 409: the user has a credential of that name;
    400: an expiry in the past."""
    if context_of(request).user_id != request.match_info["user_id"]:
        raise Forbidden("Application credentials are created by their user only.")
    asked = body.application_credential
    created = await client(request, ApplicationCredentials).create_application_credential(
        name=asked.name,
        secret=asked.secret,
        description=asked.description or "",
        expires_at=_expiry(asked.expires_at),
        roles=None
        if asked.roles is None
        else [role if isinstance(role, str) else role.choice() for role in asked.roles],
    )
    return json_response(
        ApplicationCredentialShown(application_credential=credential_view(request, created)), status=201
    )


@routes.get(
    CREDENTIALS,
    "List a user's application credentials",
    policy=NO_POLICY,
    query=ApplicationCredentialQuery,
    replies=[Reply(200, ApplicationCredentialList, "By name (never their secrets).")],
    errors=(404,),
)
async def list_credentials(request: web.Request, query: ApplicationCredentialQuery) -> web.Response:
    """403: neither that user nor an admin; 404: no such user."""
    user_id = request.match_info["user_id"]
    if context_of(request).user_id != user_id:  # another's: the admin's only, of a user that exists
        user_id = (await client(request, IdentityAdmin).get_user(user_id=user_id))["id"]
    creds = await client(request, ApplicationCredentials).list_application_credentials(user_id=user_id)
    shown = [credential_view(request, cred) for cred in creds if query.name in (UNSET, cred["name"])]
    return json_response(
        ApplicationCredentialList(application_credentials=shown, links=collection_links(request))
    )


@routes.get(
    CREDENTIAL,
    "Show an application credential",
    policy=NO_POLICY,
    replies=[Reply(200, ApplicationCredentialShown, "The credential (never its secret).")],
    errors=(404,),
)
async def get_credential(request: web.Request) -> web.Response:
    """403: neither that user nor an admin."""
    match = request.match_info
    cred = await client(request, ApplicationCredentials).get_application_credential(
        user_id=match["user_id"], app_cred_id=match["application_credential_id"]
    )
    return json_response(ApplicationCredentialShown(application_credential=credential_view(request, cred)))


@routes.delete(
    CREDENTIAL,
    "Delete an application credential",
    policy=NO_POLICY,
    replies=[Reply(204, None, "Deleted: its tokens are refused from now on.")],
    errors=(404,),
)
async def delete_credential(request: web.Request) -> web.Response:
    """403: neither that user nor an admin."""
    match = request.match_info
    await client(request, ApplicationCredentials).delete_application_credential(
        user_id=match["user_id"], app_cred_id=match["application_credential_id"]
    )
    return no_content()
