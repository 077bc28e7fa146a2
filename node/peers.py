"""The services a node calls, as typed clients of their node-facing facets, each as this node's host.

``FACETS`` is all a node process calls (with the scheduler's ``HEARTBEAT`` topic and its own
``domain`` events), ``TOPICS`` all it hears: its NATS permissions follow from them. Every facet
is served per calling host (``conductor.host.<host>``, ``image.host.<host>``...): the clients are
made with the node's host, the only one its NATS user may send as, and the callee acts only on
the instances recorded on that host. The ``patient_*`` clients ask again while the callee is away,
restarting or busy (``TRANSIENT_RETRY_FOR``, each attempt ``ATTEMPT_TIMEOUT``): only for the
idempotent calls of the build and power paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from api.conductor import ConductorForNodes
from api.identity import ServiceTokens
from api.image import ImageForNodes
from api.net import ROUTERS_CHANGED, SECURITY_CHANGED, NetForNodes
from api.volume import VolumeAttacher
from bus import Bus
from bus.api import ServiceAPI

TRANSIENT_RETRY_FOR = 15.0
"""How long an idempotent call is asked again while its actor is away or restarting."""
ATTEMPT_TIMEOUT = 5.0

FACETS = (ConductorForNodes, ImageForNodes, NetForNodes, VolumeAttacher, ServiceTokens)
"""What a node calls (and the service token it sends with the calls it makes for a user:
``runtime.auth.keep_service_token``)."""
TOPICS = (SECURITY_CHANGED, ROUTERS_CHANGED)
"""What a node hears, each as its own hosts only (``net.secgroups.<host>``: its security groups
changed; ``net.routers.<host>``: the routers it serves changed)."""

F = TypeVar("F", bound=ServiceAPI)


def patient(facet: type[F], bus: Bus, host: str) -> F:
    """A client, as ``host``, that asks again while the callee is away (idempotent methods only)."""
    return facet.client(bus, timeout=ATTEMPT_TIMEOUT, patience=TRANSIENT_RETRY_FOR, host=host)


@dataclass(frozen=True, slots=True)
class Peers:
    conductor: ConductorForNodes
    patient_conductor: ConductorForNodes
    image: ImageForNodes
    patient_image: ImageForNodes
    net: NetForNodes
    patient_net: NetForNodes
    volume: VolumeAttacher
    patient_volume: VolumeAttacher
    service_tokens: ServiceTokens

    @classmethod
    def on(cls, bus: Bus, host: str) -> Peers:
        """The clients of a node, each sending as ``host``."""
        return cls(
            conductor=ConductorForNodes.client(bus, host=host),
            patient_conductor=patient(ConductorForNodes, bus, host),
            image=ImageForNodes.client(bus, host=host),
            patient_image=patient(ImageForNodes, bus, host),
            net=NetForNodes.client(bus, host=host),
            patient_net=patient(NetForNodes, bus, host),
            volume=VolumeAttacher.client(bus, host=host),
            patient_volume=patient(VolumeAttacher, bus, host),
            service_tokens=ServiceTokens.client(bus),
        )
