"""Who is calling, and what they may see: the caller's context of the request being handled."""

from __future__ import annotations

from bus import Context, NotFound, Unauthorized, current


def caller() -> Context | None:
    """The context of the request being handled (None for a service-internal call)."""
    cur = current.get()
    return cur.context if cur is not None else None


def require_caller() -> Context:
    """The calling user's context; ``Unauthorized`` when the message acts for no one."""
    ctx = caller()
    if ctx is None or ctx.user_id is None:
        raise Unauthorized("this operation needs a user context")
    return ctx


def sees_all(ctx: Context | None) -> bool:
    """Service-internal calls (no user) and admins see every project."""
    return ctx is None or ctx.user_id is None or ctx.is_admin


def check_visible(kind: str, resource_id: str, owner: str | None, *, public: bool = False) -> None:
    """Raise ``NotFound`` (never Forbidden: no existence leak) unless the caller may see it."""
    ctx = caller()
    if public or sees_all(ctx) or (ctx is not None and owner == ctx.project_id):
        return
    raise NotFound(f"{kind} {resource_id} could not be found")
