"""A process's metrics (prometheus-client's registry of the process) and how they leave it.

Every aiostack process keeps its metrics in prometheus-client's default registry: the bus's
(``bus.metrics``: actors' messages, in-flight and backlog, bus calls), its service's (the
gateway's requests, the conductor's instances by state, the scheduler's hosts up and down) and
prometheus-client's own process metrics (CPU, memory, open files). Gauges read from a store
are brought up to date just before each collection by the *refreshers* their actor registered
(``on_collect``), so a scrape sees the store as it is, not as it was some seconds ago.

The gateway serves them all on ``GET /metrics``: its own, and those of every other process,
gathered over the bus (``answer_collections`` in each process answers a collection request
with its exposition, ``merged`` puts the answers together with a ``process`` and a ``pid``
label on each sample). Nothing listens on a port of its own: a thousand nodes are no thousand
ports to scrape.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypedDict

import prometheus_client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from bus import AiostackError, Bus
from bus.api import Topic
from bus.envelope import request_id_of

log = logging.getLogger(__name__)

prometheus_client.disable_created_metrics()  # a `_created` sample per counter doubles the output for nothing

REFRESH_TIMEOUT = 0.5
"""Seconds the refreshers may take before a collection goes on without them (stale gauges)."""

Refresher = Callable[[], Awaitable[None]]
_refreshers: dict[int, Refresher] = {}

REFRESH_FAILURES = Counter(
    "aiostack_metrics_refresh_failures",
    "Collections that went on with a stale gauge: its refresher failed or took too long",
)


class CollectRequest(TypedDict):
    """A collection request (no fields yet)."""


class Exposition(TypedDict):
    """One process's answer to a collection request."""

    process: str
    pid: int
    exposition: str


def on_collect(refresh: Refresher) -> Callable[[], None]:
    """Run ``refresh`` before each collection of this process's metrics; return what unregisters it."""
    key = id(refresh)
    _refreshers[key] = refresh

    def unregister() -> None:
        _refreshers.pop(key, None)

    return unregister


async def refresh_all() -> None:
    """Run every refresher, at once; one that fails or takes over ``REFRESH_TIMEOUT`` is left behind."""
    refreshers = list(_refreshers.values())
    if not refreshers:
        return
    tasks = [asyncio.ensure_future(refresh()) for refresh in refreshers]
    done, pending = await asyncio.wait(tasks, timeout=REFRESH_TIMEOUT)
    for task in pending:
        task.cancel()
        REFRESH_FAILURES.inc()
    for task in done:
        if task.exception() is not None:
            log.warning("a metrics refresher failed: %r", task.exception())
            REFRESH_FAILURES.inc()


async def exposition() -> str:
    """This process's metrics in Prometheus's text format, gauges refreshed first."""
    await refresh_all()
    return generate_latest(REGISTRY).decode()


async def answer_collections(bus: Bus, topic: Topic[CollectRequest], process: str) -> Subscription:
    """Answer every collection request on ``topic`` with this process's exposition (every process
    answers: no queue group)."""

    async def answer(msg: Msg) -> None:
        request_id = request_id_of(msg.data) or ""
        try:
            request_id, _ = topic.parse(msg.data, bus.max_bytes)
            text = await exposition()
            await bus.reply(msg, request_id, Exposition(process=process, pid=os.getpid(), exposition=text))
        except AiostackError as exc:
            await bus.reply(msg, request_id, error=exc.to_wire())

    return await bus.subscribe(bus.subject(topic.pattern), answer)


def merged(expositions: Iterable[Exposition]) -> bytes:
    """Several processes' expositions as one, each sample labelled with its ``process`` and ``pid``
    (one HELP and TYPE per metric, as Prometheus wants); an answer that is not one is left out."""
    families: dict[str, Metric] = {}
    for answer in expositions:
        try:
            extra = {"process": str(answer["process"]), "pid": str(answer["pid"])}
            parsed = list(text_string_to_metric_families(answer["exposition"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("a process's metrics left out: %s: %s", type(exc).__name__, exc)
            continue
        for family in parsed:
            into = families.get(family.name)
            if into is None:
                into = families[family.name] = Metric(family.name, family.documentation, family.type)
            elif into.type != family.type:
                log.warning("metric %s is a %s and a %s: one left out", family.name, into.type, family.type)
                continue
            for sample in family.samples:
                into.samples.append(sample._replace(labels={**sample.labels, **extra}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)


class _Families(Collector):
    """Metric families already made, as a collector (what ``generate_latest`` writes out)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def exposition_of(process: str, text: str) -> Exposition:
    """This process's own exposition as if it had answered a collection request."""
    return Exposition(process=process, pid=os.getpid(), exposition=text)
