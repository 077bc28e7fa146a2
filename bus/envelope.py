"""The one msgpack envelope every message on the bus travels in.

Wire form (a msgpack map; ``v`` is checked, unknown keys are rejected; ``ctx``, ``dl`` and
``err`` may be left out when nil):

    {"v": 1,                  # envelope version; anything else is refused
     "id": "9f1c...",         # message id, new for every message
     "rid": "req-3a7e...",    # request id, kept across every hop of one operation
     "ctx": {...} | None,     # caller context: user, project, roles, token, service_token
     "dl": 1732600000.25 | None,  # deadline, seconds since the epoch
     "body": ...,             # the payload: any msgpack value
     "err": {...}}            # replies only: {type, code, message, request_id}

Version history:
* 1 - initial envelope. ``ctx.service_token`` (a service's token vouching for the user's,
  which may then have expired: ``runtime.auth``) was added later, sent only when set, so a
  context without one is what it always was.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bus.errors import BadMessage, error_from_wire

VERSION = 1
DEFAULT_MAX_BYTES = 1024 * 1024

_KEYS = frozenset(("v", "id", "rid", "ctx", "dl", "body", "err"))
_CONTEXT_KEYS = frozenset(("user_id", "project_id", "roles", "token", "service_token"))


_ID_PREFIX = os.urandom(8).hex()


_unpack = msgspec.msgpack.Decoder().decode
"""msgpack to Python values: msgspec's decoder, twice as fast as msgpack's on a page of instances."""
_pack = msgspec.msgpack.Encoder().encode
"""Python values to msgpack, the same bytes as ``msgpack.packb(use_bin_type=True)`` (a set too
becomes an array), five times as fast."""


_id_counter = itertools.count(1)


def new_id() -> str:
    """A process-unique id: 64 random bits chosen at start, then a counter."""
    return f"{_ID_PREFIX}{next(_id_counter):x}"


@dataclass(frozen=True, slots=True)
class Context:
    """Who a message acts for: the overview's auth-token travelling with every hop."""

    user_id: str | None = None
    project_id: str | None = None
    roles: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    service_token: str | None = field(default=None, repr=False)
    """A token of a service doing long work for the user (a build): with it the user's token is
    accepted a while after it expired (Keystone's X-Service-Token, ``runtime.auth``)."""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "user_id": self.user_id,
            "project_id": self.project_id,
            "roles": list(self.roles),
            "token": self.token,
        }
        if self.service_token is not None:
            wire["service_token"] = self.service_token
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> Context:
        if not isinstance(wire, dict) or not set(wire) <= _CONTEXT_KEYS:
            raise BadMessage("envelope ctx must be a map of user_id, project_id, roles, token, service_token")
        roles = wire.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise BadMessage("envelope ctx.roles must be a list of strings")
        for key in ("user_id", "project_id", "token", "service_token"):
            if wire.get(key) is not None and not isinstance(wire[key], str):
                raise BadMessage(f"envelope ctx.{key} must be a string or nil")
        return cls(
            wire.get("user_id"),
            wire.get("project_id"),
            tuple(roles),
            wire.get("token"),
            wire.get("service_token"),
        )


@dataclass(slots=True)
class Envelope:
    body: Any = None
    request_id: str = field(default_factory=new_id)
    context: Context | None = None
    deadline: float | None = None
    error: dict[str, Any] | None = None
    message_id: str = field(default_factory=new_id)

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (now or time.time()) > self.deadline


def pack(
    request_id: str,
    body: Any,
    *,
    context: Context | None = None,
    deadline: float | None = None,
    error: dict[str, Any] | None = None,
    message_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """Pack one envelope from its fields; raise ``BadMessage`` past ``max_bytes``.

    ``ctx`` and ``dl`` are left out when nil (replies carry neither).
    """
    wire: dict[str, Any] = {"v": VERSION, "id": message_id or new_id(), "rid": request_id}
    if context is not None:
        wire["ctx"] = context.to_wire()
    if deadline is not None:
        wire["dl"] = deadline
    wire["body"] = body
    if error is not None:
        wire["err"] = error
    try:
        data = _pack(wire)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadMessage(f"body cannot be packed as msgpack: {exc}") from exc
    if len(data) > max_bytes:
        raise BadMessage(f"message is {len(data)} bytes, over the {max_bytes}-byte limit")
    return data


def encode(envelope: Envelope, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    return pack(
        envelope.request_id,
        envelope.body,
        context=envelope.context,
        deadline=envelope.deadline,
        error=envelope.error,
        message_id=envelope.message_id,
        max_bytes=max_bytes,
    )


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Unpack and check an envelope; raise ``BadMessage`` saying what is wrong with it."""
    if len(data) > max_bytes:
        raise BadMessage(f"message is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        wire = _unpack(data)
    except Exception as exc:
        raise BadMessage(f"not a msgpack message: {type(exc).__name__}") from exc
    if type(wire) is not dict:
        raise BadMessage("envelope must be a msgpack map")
    if wire.get("v") != VERSION:
        raise BadMessage(f"unsupported envelope version {wire.get('v')!r}; this is {VERSION}")
    if not wire.keys() <= _KEYS or "body" not in wire:
        raise BadMessage("envelope must hold v, id, rid, body and only ctx, dl, err besides")
    message_id, request_id = wire.get("id"), wire.get("rid")
    if type(message_id) is not str or type(request_id) is not str:
        raise BadMessage("envelope id and rid must be strings")
    deadline = wire.get("dl")
    if deadline is not None and type(deadline) is not float and type(deadline) is not int:
        raise BadMessage("envelope dl must be a number or nil")
    error = wire.get("err")
    if error is not None and type(error) is not dict:
        raise BadMessage("envelope err must be a map")
    ctx = wire.get("ctx")
    return Envelope(
        wire["body"],
        request_id,
        Context.from_wire(ctx) if ctx is not None else None,
        deadline,
        error,
        message_id,
    )


def decode_reply(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The body of a reply envelope, or raise the error it carries."""
    reply = decode(data, max_bytes)
    if reply.error is not None:
        raise error_from_wire(reply.error)
    return reply.body


def request_id_of(data: bytes) -> str | None:
    """Best-effort request id of a message that failed to decode, for the error reply."""
    try:
        wire = _unpack(data)
    except Exception:
        return None
    rid = wire.get("rid") if isinstance(wire, dict) else None
    return rid if isinstance(rid, str) else None
