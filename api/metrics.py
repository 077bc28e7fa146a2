"""Metrics gathered over the bus: the gateway asks every process at once, each answers its own.

``COLLECT`` (``<prefix>.metrics.collect``): a request every aiostack process but the gateway
subscribes to (no queue group: each one answers, ``runtime.metrics.answer_collections``) with its
metrics in Prometheus's text format (``runtime.metrics.Exposition``); the gateway takes the
answers that come within a moment (``Topic.gather``) and serves them merged on ``/metrics``.
"""

from __future__ import annotations

from bus.api import Topic
from runtime.metrics import CollectRequest

COLLECT = Topic("metrics.collect", CollectRequest)
