"""What the bus layer measures, in prometheus-client's registry of the process.

* ``aiostack_actor_messages_total{actor, method, outcome}``: messages an actor took, by its kind
  (``conductor``, ``node``: never a host's address), the method and how it ended (``ok`` or the
  error's type: ``NotFound``, ``Overloaded``, ...);
* ``aiostack_actor_handle_seconds{actor, method}``: from a worker taking a message to its answer;
* ``aiostack_actor_inflight`` and ``aiostack_actor_backlog{actor}`` (and their limits,
  ``aiostack_actor_max_inflight``, ``aiostack_actor_max_backlog``): read from the running actors
  at collection time (``ACTOR_LOAD``), summed over the actors of a kind in the process (a node
  process's hosts);
* ``aiostack_bus_call_seconds{target, method, outcome}``: a bus call from its first send to its
  answer (or error), by the facet's address template (``node.{host}``: never a host's name).

Labels hold names from the code (kinds, methods, error types), never ids or hosts' names, so they
stay few (and the public ``/metrics`` names no host, as Nova shows hosts to admins only).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: from a millisecond (a read on the bus) to a minute (a build's longest steps)."""
OK = "ok"
UNKNOWN_METHOD = "unknown"
"""The method label of a message for a method the actor does not serve (its name is the sender's)."""

ACTOR_MESSAGES = Counter(
    "aiostack_actor_messages",
    "Messages an actor took, by actor kind, method and outcome (ok, or the error's type)",
    ["actor", "method", "outcome"],
)
ACTOR_HANDLE_SECONDS = Histogram(
    "aiostack_actor_handle_seconds",
    "Seconds from a worker taking a message to its answer, by actor kind and method",
    ["actor", "method"],
    buckets=LATENCY_BUCKETS,
)
BUS_CALL_SECONDS = Histogram(
    "aiostack_bus_call_seconds",
    "Seconds a bus call took from its first send to its answer, by target (the address template), "
    "method and outcome (ok, or the error's type)",
    ["target", "method", "outcome"],
    buckets=LATENCY_BUCKETS,
)


# The labelled series, kept once made: prometheus-client's ``labels()`` costs a lock and a key per
# call, and these are on the path of every message and every call (their labels are few).
actor_messages = functools.cache(ACTOR_MESSAGES.labels)
"""``actor_messages(actor, method, outcome)``: that series of ``ACTOR_MESSAGES``."""
actor_handle_seconds = functools.cache(ACTOR_HANDLE_SECONDS.labels)
"""``actor_handle_seconds(actor, method)``: that series of ``ACTOR_HANDLE_SECONDS``."""
bus_call_seconds = functools.cache(BUS_CALL_SECONDS.labels)
"""``bus_call_seconds(target, method, outcome)``: that series of ``BUS_CALL_SECONDS``."""


class Loaded(Protocol):
    """What ``ActorLoad`` reads of an actor."""

    @property
    def kind(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def inflight(self) -> int: ...
    @property
    def backlog(self) -> int: ...
    @property
    def max_inflight(self) -> int: ...
    @property
    def max_backlog(self) -> int: ...


class ActorLoad(Collector):
    """The in-flight and backlog gauges of the running actors of this process, read when collected
    and summed by kind."""

    def __init__(self) -> None:
        self.actors: weakref.WeakSet[Loaded] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        labels = ["actor"]
        families = {
            "inflight": GaugeMetricFamily(
                "aiostack_actor_inflight", "Messages an actor is handling now", labels=labels
            ),
            "backlog": GaugeMetricFamily(
                "aiostack_actor_backlog", "Messages waiting for a worker of an actor", labels=labels
            ),
            "max_inflight": GaugeMetricFamily(
                "aiostack_actor_max_inflight", "Messages an actor handles at once at most", labels=labels
            ),
            "max_backlog": GaugeMetricFamily(
                "aiostack_actor_max_backlog",
                "Messages that may wait for an actor before callers get Overloaded",
                labels=labels,
            ),
        }
        for attribute, family in families.items():
            by_kind: dict[str, float] = {}
            for actor in list(self.actors):
                by_kind[actor.kind] = by_kind.get(actor.kind, 0) + getattr(actor, attribute)
            for kind, value in by_kind.items():
                family.add_metric([kind], value)
        yield from families.values()


ACTOR_LOAD = ActorLoad()
REGISTRY.register(ACTOR_LOAD)
