"""The services a node calls, as typed clients of their node-facing facets.

``FACETS`` is all a node process calls (with the scheduler's ``HEARTBEAT`` topic and its own
``domain`` events): its NATS permissions follow from them. The ``patient_*`` clients ask again
while the callee is away, restarting or busy (``TRANSIENT_RETRY_FOR``, each attempt
``ATTEMPT_TIMEOUT``): only for the idempotent calls of the build and power paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from api.conductor import ConductorForNodes
from api.image import ImageReader
from api.net import NetForNodes
from api.volume import VolumeAttacher
from bus import Bus
from bus.api import ServiceAPI

TRANSIENT_RETRY_FOR = 15.0
"""How long an idempotent call is asked again while its actor is away or restarting."""
ATTEMPT_TIMEOUT = 5.0

FACETS = (ConductorForNodes, ImageReader, NetForNodes, VolumeAttacher)
"""What a node calls."""

F = TypeVar("F", bound=ServiceAPI)


def patient(facet: type[F], bus: Bus) -> F:
    """A client that asks again while the callee is away (idempotent methods only)."""
    return facet.client(bus, timeout=ATTEMPT_TIMEOUT, patience=TRANSIENT_RETRY_FOR)


@dataclass(frozen=True, slots=True)
class Peers:
    conductor: ConductorForNodes
    patient_conductor: ConductorForNodes
    image: ImageReader
    patient_image: ImageReader
    net: NetForNodes
    patient_net: NetForNodes
    volume: VolumeAttacher
    patient_volume: VolumeAttacher

    @classmethod
    def on(cls, bus: Bus) -> Peers:
        return cls(
            conductor=ConductorForNodes.client(bus),
            patient_conductor=patient(ConductorForNodes, bus),
            image=ImageReader.client(bus),
            patient_image=patient(ImageReader, bus),
            net=NetForNodes.client(bus),
            patient_net=patient(NetForNodes, bus),
            volume=VolumeAttacher.client(bus),
            patient_volume=patient(VolumeAttacher, bus),
        )
