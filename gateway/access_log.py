"""The gateway's access log: one line per answered request, never a secret.

Each line (logger ``aiostack.access``, level INFO) says who asked what and how it went: the
client's address, method, path, status, bytes sent, milliseconds taken, the user agent, and the
request id the answer carried (``x-openstack-request-id``), which every log line the request
caused in any process also carries (``runtime.logs``). A query parameter whose name holds
``token``, ``password`` or ``secret`` (the websocket's and the serial console's ``?token=``) is
shown as ``***``. Those are also fields of the record, so ``--log-format json`` gives them as keys.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

SECRET_WORDS = ("token", "password", "secret")
REDACTED = "***"


def shown_path(request: web.BaseRequest) -> str:
    """The path and query as requested, with secret parameters' values replaced."""
    if not request.query_string:
        return request.path
    parts = []
    for key, value in request.query.items():
        hidden = any(word in key.lower() for word in SECRET_WORDS)
        parts.append(f"{key}={REDACTED if hidden else value}")
    return f"{request.path}?{'&'.join(parts)}"


class GatewayAccessLogger(AbstractAccessLogger):
    """aiohttp's access logger for the gateway (``web.AppRunner(access_log_class=...)``)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        request_id = response.headers.get("x-openstack-request-id", "-")
        fields = {
            "remote": request.remote,
            "method": request.method,
            "path": shown_path(request),
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 1),
            "user_agent": request.headers.get("User-Agent", "-"),
            "request_id": request_id,
        }
        self.logger.info(
            '%s "%s %s" %s %s %.1fms "%s"',
            fields["remote"],
            fields["method"],
            fields["path"],
            fields["status"],
            fields["bytes"],
            fields["duration_ms"],
            fields["user_agent"],
            extra=fields,
        )
