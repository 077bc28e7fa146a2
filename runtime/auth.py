"""Token validation with a cache, shared by the gateway and every actor of a process.

A cache hit costs no bus round trip; a miss asks the identity actor
(``TokenValidation.validate``), once for all the requests that miss on the same token at the
same time (they wait for that one answer). Entries live until the earlier of the token's expiry and
``ttl``; revocations the identity actor publishes on ``REVOKED`` drop them at once (by token,
by user, by project), and are remembered so a validation already in flight cannot bring a
revoked token back.

``TokenValidation``, ``REVOKED`` and their types are the part of the identity service's API
(``api/identity.py``, which re-exports them) that every process uses; they are declared here
because the runtime sits below ``api/``.

``install(bus)`` makes every actor on that bus check the token of each call that carries a
user context (the overview's steps 4-5, 21, 24, 27) and enforce the handlers' policies.

Service tokens (Keystone's X-Service-Token): a process doing long work for a user (the
conductor and the nodes: a build, a snapshot) keeps a token of the identity service's own
service user (``keep_service_token``, from ``api.identity.ServiceTokens``), and its bus
sends it with every call and cast made for a user (``Context.service_token``). A call that
carries one is accepted with a user token that has expired (not one revoked, nor one expired
longer than the identity actor's stale window: ``validate(allow_expired=True)``) as long as the
service token is valid and its holder has the ``service`` role; a service token that is not
valid, or not a service's (a user's own token), refuses the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypedDict

from nats.aio.msg import Msg

from bus import AiostackError, BadMessage, Bus, Context, InvalidRequest, Unauthorized, request_scope
from bus.api import ServiceAPI, Topic, call
from runtime.policy import allowed

log = logging.getLogger(__name__)

RevocationKind = Literal["token", "user", "project"]

MIN_SERVICE_TOKEN_REFRESH = 1.0
"""The shortest wait before a service token is asked for again (tokens live an hour by default)."""
SERVICE_ROLE = "service"
"""The role a service token's holder has (Keystone's): what lets it vouch for an expired user token."""


class TokenInfo(TypedDict):
    """What a valid token says, with the user's current roles (``validate``)."""

    user_id: str
    user_name: str
    domain_id: str
    project_id: str | None
    project_name: str | None
    roles: list[str]
    """Role names."""
    audit_id: str
    methods: list[str]
    issued_at: float
    expires_at: float
    app_cred_id: str | None


class Revocation(TypedDict):
    """Tokens refused from now on: one token (by audit id), or a user's or a project's issued
    until ``issued_before``."""

    kind: RevocationKind
    id: str
    issued_before: float


REVOKED = Topic("auth.revoked", Revocation)
"""Each revocation, published by the identity actor when it is made; every process's token
cache listens (and drops what it names at once)."""


class TokenValidation(ServiceAPI, address="identity"):
    """What every process asks the identity service: is this token valid, and whose is it."""

    @call(idempotent=True)
    async def validate(self, *, token: str, service_token: str | None = None) -> TokenInfo:
        """What a valid token says, with the user's current roles; with ``service_token``, a valid
        (unexpired) token of a service (``SERVICE_ROLE``), a token that expired less than the
        identity service's stale window ago is valid too (Keystone's service-token vouching).

        :raises Unauthorized: malformed or undecryptable token, expired, revoked, its user or
            project disabled or gone, its application credential gone, or no role left; a
            ``service_token`` that is invalid or no service's.
        """
        raise NotImplementedError  # a stub: the identity actor serves it


class ServiceToken(TypedDict):
    """A token of the identity service's service user (``SERVICE_ROLE`` on its project)."""

    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Identity:
    """What the identity actor said about a token."""

    context: Context
    audit_id: str | None
    issued_at: float
    expires_at: float


class TokenValidator:
    def __init__(self, bus: Bus, *, ttl: float = 60.0, max_entries: int = 100_000) -> None:
        self.bus = bus
        self.identity = TokenValidation.client(bus)
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[tuple[str, bool], tuple[Identity, float]] = {}
        """By (token, whether a service token vouched for it, allowing it expired): the identity
        and until when it is kept."""
        self._revoked_tokens: set[str] = set()
        self._revoked_users: dict[str, float] = {}
        self._revoked_projects: dict[str, float] = {}
        self._asking: dict[tuple[str, bool], asyncio.Task[Identity]] = {}
        # invariant: _asking holds a task per token being asked about, until the task is done

    async def start(self) -> None:
        """Listen for revocations (call once the bus is connected)."""
        await self.bus.subscribe(self.bus.subject(REVOKED.pattern), self._on_revoked)
        await self.bus.flush()

    async def _on_revoked(self, msg: Msg) -> None:
        try:
            _, revocation = REVOKED.parse(msg.data, self.bus.max_bytes)
        except (BadMessage, InvalidRequest) as exc:
            log.warning("ignoring a malformed revocation: %s", exc)
            return
        self.revoke(revocation["kind"], revocation["id"], revocation["issued_before"])

    def revoke(self, kind: str, revoked_id: str, issued_before: float) -> None:
        if kind == "token":
            self._revoked_tokens.add(revoked_id)
        elif kind == "user":
            self._revoked_users[revoked_id] = max(issued_before, self._revoked_users.get(revoked_id, 0.0))
        elif kind == "project":
            self._revoked_projects[revoked_id] = max(
                issued_before, self._revoked_projects.get(revoked_id, 0.0)
            )
        for key, (identity, _) in list(self._cache.items()):
            if self._is_revoked(identity):
                del self._cache[key]

    def _is_revoked(self, identity: Identity) -> bool:
        ctx = identity.context
        return (
            (identity.audit_id is not None and identity.audit_id in self._revoked_tokens)
            or self._revoked_users.get(ctx.user_id or "", 0.0) >= identity.issued_at
            or self._revoked_projects.get(ctx.project_id or "", 0.0) >= identity.issued_at
        )

    async def validate(self, token: str, *, service_token: str | None = None) -> Identity:
        """The identity a token carries; with a ``service_token`` (checked by the identity
        service), one that expired within the identity service's stale window too.

        :raises Unauthorized: unknown, expired or revoked token; an invalid service token.
        """
        now = time.time()
        vouched = service_token is not None
        for key in ((token, False), (token, True)) if vouched else ((token, False),):
            entry = self._cache.get(key)
            if entry is not None and entry[1] > now:
                return entry[0]
        key = (token, vouched)
        asking = self._asking.get(key)
        if asking is None:
            asking = self._asking[key] = asyncio.create_task(self._ask(token, service_token))
            asking.add_done_callback(partial(self._asked, key))
        # a caller that gives up (cancelled) leaves the answer to the others and the cache
        return await asyncio.shield(asking)

    async def _ask(self, token: str, service_token: str | None) -> Identity:
        """Ask the identity actor about ``token`` and cache the answer (one a service token
        vouched for, for ``ttl``: the identity actor bounds how long after its expiry it is allowed)."""
        now = time.time()
        with request_scope():
            info = await self.identity.validate(token=token, service_token=service_token)
        identity = Identity(
            Context(info["user_id"], info["project_id"], tuple(info["roles"]), token),
            info["audit_id"],
            float(info["issued_at"]),
            float(info["expires_at"]),
        )
        if self._is_revoked(identity):
            raise Unauthorized("The token has been revoked.")
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        vouched = service_token is not None
        until = now + self.ttl if vouched else min(now + self.ttl, identity.expires_at)
        self._cache[(token, vouched)] = (identity, until)
        return identity

    def _asked(self, key: tuple[str, bool], task: asyncio.Task[Identity]) -> None:
        if self._asking.get(key) is task:
            del self._asking[key]
        if not task.cancelled():
            task.exception()  # retrieved here, in case every caller gave up waiting

    async def authenticate(self, claimed: Context) -> Context:
        """The caller a message claims, checked against its token: the token's roles, not the claim's.

        With a service token (valid, its holder with the ``service`` role) the user's token may
        have expired within the stale window; the checked context keeps the service token, so the
        calls made for it carry it on.

        :raises Unauthorized: no token, an invalid one, or one of another user or project; a
            service token that is invalid or not a service's.
        """
        if not claimed.token:
            raise Unauthorized("The message acts for a user but carries no token.")
        if claimed.service_token is not None:
            service = await self.validate(claimed.service_token)
            if SERVICE_ROLE not in service.context.roles:
                raise Unauthorized("The message's service token is not a service's.")
        identity = await self.validate(claimed.token, service_token=claimed.service_token)
        ctx = identity.context
        if ctx.user_id != claimed.user_id or ctx.project_id != claimed.project_id:
            raise Unauthorized("The message's user or project does not match its token.")
        if claimed.service_token is not None:
            return dataclasses.replace(ctx, service_token=claimed.service_token)
        return ctx


async def keep_service_token(
    bus: Bus, issue: Callable[[], Awaitable[ServiceToken]], *, retry: float = 5.0
) -> None:
    """Keep a service token on ``bus`` (``Bus.service_token``), for a process doing long work for
    users: ``issue`` (``api.identity.ServiceTokens.issue_service_token``) asked now, and again
    halfway to the token's expiry (every ``retry`` seconds while the identity service gives none;
    said once; a token past its expiry is no longer sent). Runs until cancelled (an actor's
    background task). One keeper per bus works at a time: another (node actors sharing their
    process's connection) waits, and takes over if that one stops."""
    me = asyncio.current_task()
    while (keeper := bus.service_token_keeper) is not None and keeper is not me and not keeper.done():
        await asyncio.wait({keeper})
    bus.service_token_keeper = me
    told, expires_at = False, 0.0
    while True:
        try:
            with request_scope():
                issued = await issue()
        except AiostackError as exc:
            if not told:
                log.warning(
                    "no service token yet (%s: %s); asking every %.0f s", type(exc).__name__, exc, retry
                )
                told = True
            if time.time() >= expires_at:
                bus.service_token = None
            await asyncio.sleep(retry)
            continue
        bus.service_token, expires_at, told = issued["token"], issued["expires_at"], False
        await asyncio.sleep(max(MIN_SERVICE_TOKEN_REFRESH, (issued["expires_at"] - time.time()) / 2))


async def install(bus: Bus) -> TokenValidator:
    """Check every user-context call to the actors on ``bus``, with one shared validator."""
    validator = TokenValidator(bus)
    await validator.start()
    bus.authenticator = validator.authenticate
    bus.policy_check = allowed
    return validator
