"""The actor bus: NATS + msgpack envelopes, call/cast/publish, actors and their supervisor.

``bus.api`` declares what actors serve (typed facets) and makes their typed clients."""

from bus.actor import Actor, ActorCrashed, ActorState, Supervisor
from bus.bus import Bus, BusClosed, Current, current, current_request_id, request_scope
from bus.envelope import Context, Envelope, decode, encode
from bus.errors import (
    TRANSIENT_ERRORS,
    ActorStopped,
    AiostackError,
    BadMessage,
    CallTimeout,
    Conflict,
    DeadlineExpired,
    Forbidden,
    InvalidRequest,
    NoResponders,
    NoSuchMethod,
    NotFound,
    NoValidHost,
    Overloaded,
    QuotaExceeded,
    RemoteError,
    StoreUnavailable,
    Unauthorized,
)
from bus.server import EmbeddedNatsServer, NatsServerError

__all__ = [
    "TRANSIENT_ERRORS",
    "Actor",
    "ActorCrashed",
    "ActorState",
    "ActorStopped",
    "AiostackError",
    "BadMessage",
    "Bus",
    "BusClosed",
    "CallTimeout",
    "Conflict",
    "Context",
    "Current",
    "DeadlineExpired",
    "EmbeddedNatsServer",
    "Envelope",
    "Forbidden",
    "InvalidRequest",
    "NatsServerError",
    "NoResponders",
    "NoSuchMethod",
    "NoValidHost",
    "NotFound",
    "Overloaded",
    "QuotaExceeded",
    "RemoteError",
    "StoreUnavailable",
    "Supervisor",
    "Unauthorized",
    "current",
    "current_request_id",
    "decode",
    "encode",
    "request_scope",
]
