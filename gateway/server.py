"""The gateway's HTTP server: aiohttp's, but a request it cannot parse is refused without an echo.

aiohttp answers a request whose head it cannot parse (a header with a control character, a
line too long...) with the parser's message, which quotes the offending line, and logs it with
a traceback: a malformed header next to ``X-Auth-Token`` put the whole token in the answer and
in the log. ``GatewayProtocol`` answers such a request 400 in the gateway's JSON error format
naming only what kind of fault it was, and logs that kind and the peer's address, nothing the
client sent. ``GatewaySite`` is aiohttp's TCP site with that protocol on each connection; the
app, its middlewares and its lifecycle are aiohttp's as ever (an ``AppRunner``).

``deploy.run.serve_gateway`` serves the gateway this way; tests that start the app in-process
(``aiohttp.test_utils.TestServer``) get aiohttp's own protocol.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from yarl import URL

from gateway.http import error_body, json_response

__all__ = ["GatewayProtocol", "GatewaySite"]

log = logging.getLogger(__name__)

UNREADABLE = (
    (LineTooLong, "a request line or header field is too long"),
    (InvalidHeader, "a header field is malformed"),
    (InvalidURLError, "the request target is malformed"),
    (BadStatusLine, "the request line is malformed"),
    (HttpProcessingError, "it is not well-formed HTTP/1.1"),
)
"""What the client is told of a request aiohttp could not parse, by the parser's exception."""


def unreadable(exc: HttpProcessingError) -> str:
    """What kind of fault made a request unreadable, in words that quote nothing it sent."""
    return next(words for kind, words in UNREADABLE if isinstance(exc, kind))


class GatewayProtocol(web.RequestHandler):
    """aiohttp's handler of one connection; a request it cannot parse is answered without an echo."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A parse error is answered ``status`` (400) naming its kind, and the connection closed;
        anything else as aiohttp does (a handler's exception: the app's middlewares answer those)."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        words = unreadable(exc)
        log.info("refused an unreadable request from %s: %s (%s)", request.remote, words, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; the connection is broken")
        response = json_response(error_body("root", status, f"Bad request: {words}."), status=status)
        response.force_close()
        return response


class GatewaySite(web.BaseSite):
    """A TCP site (as aiohttp's ``TCPSite``) whose connections are ``GatewayProtocol``s.

    ``handler_args`` are what each connection's handler is made with, as an app's
    ``handler_args`` are (``gateway.app.handler_args``), and the runner's (``access_log``).
    """

    __slots__ = ("_handler_args", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        handler_args: dict[str, Any],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: serve HTTPS with it (None: plain HTTP)."""
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._handler_args = handler_args

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose for port 0, once started)."""
        sockets = getattr(self._server, "sockets", None)  # asyncio's or uvloop's server
        if sockets:
            port: int = sockets[0].getsockname()[1]
            return port
        return self._port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return str(URL.build(scheme=scheme, host=self._host, port=self.port))

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def connection() -> GatewayProtocol:
            return GatewayProtocol(server, loop=loop, **self._handler_args)

        self._server = await loop.create_server(
            connection,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
        )
