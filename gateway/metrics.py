"""``GET /metrics``: every process's metrics in Prometheus's text format, and the gateway's own.

The gateway measures its requests (``metrics_middleware``, outermost): a count by method, route
*template* (``/compute/v2.1/servers/{server_id}``: a path's ids never become label values;
``unmatched`` for a path no route serves) and status class, a latency histogram by method and
route, the requests in flight, and (``count_error``, called by the error middleware) the errors
it answered by route and type (``NotFound``, ``CallTimeout``, ``HTTPMethodNotAllowed``...). The
event hub measures how late events reach it (``EVENT_LAG``: from the event stream storing an
event to the hub receiving it) and how many are still to come (``EVENT_PENDING``).

``/metrics`` asks every other process over the bus (``api.metrics.COLLECT``, answers taken for
``GATHER_WITHIN`` seconds or until ``GATHER_QUIET`` seconds pass without one) and serves their
answers and its own merged, each sample labelled with its ``process`` and ``pid``
(``runtime.metrics.merged``); ``aiostack_metrics_processes`` says how many answered: a process
that did not answer in time is absent from that scrape only.

The route is public, as ``/`` and ``/openapi.json`` are: Prometheus scrapes without a Keystone
token, and what it shows is about the cloud's machinery, never about a tenant (no project, user or
resource id, no token in any label: every label value is a name from the code, a route template,
a state or an address template; no host's name: a sample's ``process`` is its process's kind).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram

from api.metrics import COLLECT
from bus import Bus
from bus.metrics import LATENCY_BUCKETS
from gateway.http import BUS, Handler
from gateway.routing import Reply, Routes, route_of
from runtime.metrics import CollectRequest, exposition, exposition_of, merged

PATH = "/metrics"
PROCESS = "gateway"
GATHER_WITHIN = 2.0
"""Seconds the gateway waits for other processes' answers at most."""
GATHER_QUIET = 0.75
"""Seconds without a new answer after which the gateway stops waiting (every process has answered)."""
UNMATCHED = "unmatched"
"""The route label of a request no route serves (404 or 405 from the router)."""
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

HTTP_REQUESTS = Counter(
    "aiostack_http_requests",
    "Requests the gateway answered, by method, route template and status class (2xx, 4xx...)",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "aiostack_http_request_seconds",
    "Seconds from a request's arrival to its answer, by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_ERRORS = Counter(
    "aiostack_http_errors",
    "Errors the gateway answered, by route template and error type",
    ["route", "error"],
)
HTTP_IN_FLIGHT = Gauge("aiostack_http_requests_in_flight", "Requests the gateway is answering now")
EVENT_LAG = Histogram(
    "aiostack_event_lag_seconds",
    "Seconds from the event stream storing an event to the gateway's event hub receiving it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
EVENT_PENDING = Gauge(
    "aiostack_event_pending",
    "Events stored in the event stream that the gateway's event hub has not received yet",
)
PROCESSES = Gauge(
    "aiostack_metrics_processes",
    "Processes whose metrics the last scrape of /metrics holds (the gateway too)",
)


def route_label(handler: Handler) -> str:
    """The route template a handler serves, ``unmatched`` for none."""
    route = route_of(handler)
    return route.path if route is not None else UNMATCHED


def count_error(handler: Handler, error: type[BaseException]) -> None:
    """Count an error answered for a request to ``handler``'s route."""
    HTTP_ERRORS.labels(route_label(handler), error.__name__).inc()


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by its route template (the outermost middleware)."""
    method = request.method if request.method in METHODS else "other"
    route = route_label(handler)
    status = 500
    began = time.perf_counter()
    HTTP_IN_FLIGHT.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_IN_FLIGHT.dec()
        HTTP_REQUESTS.labels(method, route, f"{status // 100}xx").inc()
        HTTP_REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - began)


routes = Routes()


@routes.get(
    PATH,
    "Metrics of every process, for Prometheus",
    public=True,
    replies=[Reply(200, bytes, "Prometheus's text exposition format.", media_type=CONTENT_TYPE_LATEST)],
)
async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: the gateway's own metrics and those every other process answered with."""
    body = await request.app[COLLECTIONS].latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class Collections:
    """One collection at a time: a scrape that comes while one is under way gets its result, so
    a flood of requests to the public ``/metrics`` costs the processes one collection at a time."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._under_way: asyncio.Task[bytes] | None = None

    async def latest(self) -> bytes:
        if self._under_way is None or self._under_way.done():
            self._under_way = asyncio.create_task(self._collect())
        return await asyncio.shield(self._under_way)

    async def _collect(self) -> bytes:
        answers = await COLLECT.gather(self.bus, CollectRequest(), within=GATHER_WITHIN, quiet=GATHER_QUIET)
        PROCESSES.set(len(answers) + 1)
        return merged([exposition_of(PROCESS, await exposition()), *answers])


COLLECTIONS = web.AppKey("metrics_collections", Collections)


def add_routes(app: web.Application) -> None:
    app[COLLECTIONS] = Collections(app[BUS])
    routes.add_to(app)
