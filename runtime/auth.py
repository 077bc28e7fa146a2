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
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypedDict

from nats.aio.msg import Msg

from bus import BadMessage, Bus, Context, InvalidRequest, Unauthorized, request_scope
from bus.api import ServiceAPI, Topic, call
from runtime.policy import allowed

log = logging.getLogger(__name__)

RevocationKind = Literal["token", "user", "project"]


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
    async def validate(self, *, token: str) -> TokenInfo:
        """What a valid token says, with the user's current roles.

        :raises Unauthorized: malformed or undecryptable token, expired, revoked, its user or
            project disabled or gone, its application credential gone, or no role left.
        """
        raise NotImplementedError  # a stub: the identity actor serves it


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
        self._cache: dict[str, tuple[Identity, float]] = {}
        self._revoked_tokens: set[str] = set()
        self._revoked_users: dict[str, float] = {}
        self._revoked_projects: dict[str, float] = {}
        self._asking: dict[str, asyncio.Task[Identity]] = {}
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
        for token, (identity, _) in list(self._cache.items()):
            if self._is_revoked(identity):
                del self._cache[token]

    def _is_revoked(self, identity: Identity) -> bool:
        ctx = identity.context
        return (
            (identity.audit_id is not None and identity.audit_id in self._revoked_tokens)
            or self._revoked_users.get(ctx.user_id or "", 0.0) >= identity.issued_at
            or self._revoked_projects.get(ctx.project_id or "", 0.0) >= identity.issued_at
        )

    async def validate(self, token: str) -> Identity:
        """The identity a token carries.

        :raises Unauthorized: unknown, expired or revoked token.
        """
        entry = self._cache.get(token)
        if entry is not None and entry[1] > time.time():
            return entry[0]
        asking = self._asking.get(token)
        if asking is None:
            asking = self._asking[token] = asyncio.create_task(self._ask(token))
            asking.add_done_callback(partial(self._asked, token))
        # a caller that gives up (cancelled) leaves the answer to the others and the cache
        return await asyncio.shield(asking)

    async def _ask(self, token: str) -> Identity:
        """Ask the identity actor about ``token`` and cache the answer."""
        now = time.time()
        with request_scope():
            info = await self.identity.validate(token=token)
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
        self._cache[token] = (identity, min(now + self.ttl, identity.expires_at))
        return identity

    def _asked(self, token: str, task: asyncio.Task[Identity]) -> None:
        if self._asking.get(token) is task:
            del self._asking[token]
        if not task.cancelled():
            task.exception()  # retrieved here, in case every caller gave up waiting

    async def authenticate(self, claimed: Context) -> Context:
        """The caller a message claims, checked against its token: the token's roles, not the claim's.

        :raises Unauthorized: no token, an invalid one, or one of another user or project.
        """
        if not claimed.token:
            raise Unauthorized("The message acts for a user but carries no token.")
        identity = await self.validate(claimed.token)
        ctx = identity.context
        if ctx.user_id != claimed.user_id or ctx.project_id != claimed.project_id:
            raise Unauthorized("The message's user or project does not match its token.")
        return ctx


async def install(bus: Bus) -> TokenValidator:
    """Check every user-context call to the actors on ``bus``, with one shared validator."""
    validator = TokenValidator(bus)
    await validator.start()
    bus.authenticator = validator.authenticate
    bus.policy_check = allowed
    return validator
