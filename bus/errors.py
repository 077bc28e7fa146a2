"""The bus's exception tree. Every error a caller can see is an ``AiostackError``.

* AiostackError                 code "error"
  + CallTimeout (TimeoutError)  no reply before the call's timeout
  + NoResponders                nobody serves the subject
  + BadMessage                  malformed, wrong-version or oversized envelope
  + DeadlineExpired             the call's deadline passed before work started
  + Overloaded                  the actor's in-flight limit and backlog are full
  + ActorStopped                the actor stopped before handling the message
  + NoSuchMethod                the actor has no handler of that name
  + InvalidRequest              the body did not fit the handler's parameters
  + NotFound, Conflict, Forbidden, Unauthorized, QuotaExceeded, NoValidHost
  + RemoteError                 an unexpected exception inside a remote handler

A handler's ``AiostackError`` travels as ``{type, code, message, request_id}`` and is
rebuilt on the caller as the class registered for its code; anything else is logged with
its traceback by the actor and arrives as ``RemoteError`` with ``remote_type`` set to the
remote exception's class name. Either way ``request_id`` names the request that failed.
"""

from __future__ import annotations

from typing import Any, ClassVar

_BY_CODE: dict[str, type[AiostackError]] = {}


class AiostackError(Exception):
    """Root of every aiostack error; ``code`` is stable and travels on the wire."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500

    def __init__(
        self, message: str = "", *, request_id: str | None = None, remote_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.remote_type = remote_type

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE[cls.code] = cls

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.remote_type or type(self).__name__,
            "code": self.code,
            "message": self.message,
            "request_id": self.request_id,
        }

    def __str__(self) -> str:
        return self.message or self.code


def error_from_wire(wire: dict[str, Any]) -> AiostackError:
    """Rebuild the error a remote handler raised from its wire form."""
    cls = _BY_CODE.get(wire.get("code", ""), RemoteError)
    return cls(
        str(wire.get("message", "")),
        request_id=wire.get("request_id"),
        remote_type=str(wire.get("type", cls.__name__)),
    )


class CallTimeout(AiostackError, TimeoutError):
    code = "timeout"
    http_status = 504


class NoResponders(AiostackError):
    code = "no_responders"
    http_status = 503


class BadMessage(AiostackError):
    code = "bad_message"
    http_status = 400


class DeadlineExpired(AiostackError):
    code = "deadline_expired"
    http_status = 504


class Overloaded(AiostackError):
    code = "overloaded"
    http_status = 503


class ActorStopped(AiostackError):
    code = "actor_stopped"
    http_status = 503


class StoreUnavailable(AiostackError):
    """The actor's database did not answer (connection lost or timed out): nothing was changed
    by the statement that failed, and its transaction was rolled back."""

    code = "store_unavailable"
    http_status = 503


class NoSuchMethod(AiostackError):
    code = "no_such_method"
    http_status = 400


class InvalidRequest(AiostackError):
    code = "invalid_request"
    http_status = 400


class NotFound(AiostackError):
    code = "not_found"
    http_status = 404


class Conflict(AiostackError):
    code = "conflict"
    http_status = 409


class Forbidden(AiostackError):
    code = "forbidden"
    http_status = 403


class Unauthorized(AiostackError):
    code = "unauthorized"
    http_status = 401


class QuotaExceeded(AiostackError):
    code = "quota_exceeded"
    http_status = 403


class NoValidHost(AiostackError):
    code = "no_valid_host"
    http_status = 500


class RemoteError(AiostackError):
    """An unexpected exception inside a remote handler (``remote_type`` names its class)."""

    code = "internal"


TRANSIENT_ERRORS = (NoResponders, CallTimeout, ActorStopped, Overloaded, StoreUnavailable)
"""The callee is away, restarting or busy: the same (idempotent) call may well work a moment later."""
