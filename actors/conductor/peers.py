"""The services the conductor calls: its NATS permissions follow from ``FACETS`` (deploy/credentials.py)."""

from __future__ import annotations

from api.identity import ServiceTokens
from api.image import ImageReader, Images
from api.net import Net
from api.node import Node
from api.scheduler import Scheduler
from api.volume import VolumeRecords

FACETS = (Scheduler, ImageReader, Images, Net, VolumeRecords, Node, ServiceTokens)
"""Claims, image checks (and the images createImage makes), ports, the attach protocol (and the
deletes of volumes an instance takes with it), the casts to compute hosts, and the service token
sent with the calls and casts made for a user (``runtime.auth.keep_service_token``)."""
